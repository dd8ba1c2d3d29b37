//! Hosts' serial consoles, kept: capture over the BMC ([`capture`]) into per-host logs ([`log`]) that are
//! cleaned and scrubbed of secrets ([`scrub`]). Free of Kubernetes; `beowulf standalone` wires it to the
//! inventory's BMCs and the boot plane's phases, and the HTTP server reads the logs.

pub mod capture;
pub mod log;
pub mod scrub;

pub use capture::{Capture, Policy};
pub use log::{ConsoleLogs, HostLog};
