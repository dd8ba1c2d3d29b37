//! Harness for the end-to-end suite: network namespaces, QEMU machines, BMC simulators, an OCI registry.
