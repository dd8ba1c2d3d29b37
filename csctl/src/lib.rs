//! csctl: turns a cluster-stack directory into a reproducible, versioned release; validates stacks offline.
pub mod cli;
pub mod commands;
pub mod error;
pub mod output;
pub mod release;
