//! The provider's custom resources (group `infrastructure.cluster.x-k8s.io`, version `v1alpha1`).
//!
//! Eight kinds, all namespaced: [`BeowulfHost`] (one physical server), [`BeowulfImage`] (what a host boots),
//! [`BeowulfCluster`] / [`BeowulfClusterTemplate`] (the CAPI InfraCluster), [`BeowulfMachine`] /
//! [`BeowulfMachineTemplate`] (the CAPI InfraMachine) and [`BeowulfRemediation`] /
//! [`BeowulfRemediationTemplate`] (CAPI's external remediation). [`crds::all`] renders their CRDs with the contract
//! label, printer columns and CEL rules.

pub mod cluster;
pub mod common;
pub mod conditions;
pub mod crds;
pub mod host;
pub mod image;
pub mod machine;
pub mod remediation;

pub use cluster::{
    BeowulfCluster, BeowulfClusterSpec, BeowulfClusterStatus, BeowulfClusterTemplate,
};
pub use common::*;
pub use host::{BeowulfHost, BeowulfHostSpec, BeowulfHostStatus};
pub use image::{BeowulfImage, BeowulfImageSpec};
pub use machine::{
    BeowulfMachine, BeowulfMachineSpec, BeowulfMachineStatus, BeowulfMachineTemplate,
};
pub use remediation::{
    BeowulfRemediation, BeowulfRemediationSpec, BeowulfRemediationStatus,
    BeowulfRemediationTemplate,
};

/// The API group of every Beowulf kind (the one core CAPI's ClusterRole already covers).
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Beowulf object.
pub const API_VERSION: &str = "infrastructure.cluster.x-k8s.io/v1alpha1";
/// The CAPI contract this provider implements; the CRD label is `cluster.x-k8s.io/<CONTRACT>: <VERSION>`.
pub const CONTRACT: &str = "v1beta2";
