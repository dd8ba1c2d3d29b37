//! A real management cluster for the end-to-end suite: etcd and kube-apiserver (with the garbage collector
//! and namespace controller of kube-controller-manager), Cluster API's core, kubeadm bootstrap and kubeadm
//! control-plane managers installed by `clusterctl init`, the cluster-stack-operator, and `beowulf manager`
//! processes on node namespaces — every program built from its upstream Go module by
//! `e2e/go-peers/build.sh` (`.ci/install` runs it).
//!
//! - [`peers`]: where the built programs are;
//! - [`pki`]: the test CA and keys;
//! - [`control_plane`]: etcd, kube-apiserver, kube-controller-manager; kubeconfigs, audit log;
//! - [`capi`]: `clusterctl init`, Cluster API's managers as host processes, their webhooks;
//! - [`cso`]: Sovereign Cloud Stack's cluster-stack-operator, reading releases from an HTTPS registry;
//! - [`mgmt`]: all of it with its networks (boot and management), and the `beowulf manager` nodes;
//! - [`fixtures`]: the objects the tests create (hosts that are QEMU machines behind BMCs, images);
//! - [`holds`]: the one-host-one-machine invariant, watched while a test runs.

pub mod capi;
pub mod control_plane;
pub mod cso;
pub mod fixtures;
pub mod holds;
pub mod mgmt;
pub mod peers;
pub mod pki;

pub use control_plane::{ControlPlane, eventually};
pub use mgmt::{BeowulfBin, ManagerNode, MgmtCluster};
pub use peers::GoPeers;
