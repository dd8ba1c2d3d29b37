//! csctl: turns a cluster-stack directory into a reproducible, versioned release; validates stacks offline.
pub mod archive;
pub mod build;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod crds;
pub mod error;
pub mod hash;
pub mod helmignore;
pub mod kube_schemas;
pub mod oci;
pub mod output;
pub mod release;
pub mod render;
pub mod stack;
pub mod static_pods;
pub mod substitute;
