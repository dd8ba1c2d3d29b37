//! The adapters that wire the provisioning engine to the real I/O, free of Kubernetes: the engine's
//! [`PowerControl`](crate::provisioning::io::PowerControl) over the BMC drivers ([`power`]) and its
//! [`BootProfiles`](crate::provisioning::io::BootProfiles) over the boot plane ([`profiles`], the manager's
//! loader of the boot plane's directory). `beowulf manager` composes them with the controllers; the tests and
//! benchmarks use them too.

pub mod consoles;
pub mod power;
pub mod profiles;
