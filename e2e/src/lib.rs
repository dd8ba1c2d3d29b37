//! Harness for the end-to-end suite: network namespaces, QEMU machines, BMC simulators, an OCI registry.

pub mod bmc_proxy;
pub mod ipmi_sim;
pub mod sushy;
