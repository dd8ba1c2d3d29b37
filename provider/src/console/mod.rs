//! Hosts' serial consoles, kept: capture over the BMC ([`capture`]) into per-host logs ([`log`]) that are
//! cleaned and scrubbed of secrets ([`scrub`]); the lines that say why a boot failed ([`quote`]). Free of Kubernetes; `beowulf standalone` wires it to the
//! inventory's BMCs and the boot plane's phases, and the HTTP server reads the logs.

pub mod capture;
pub mod log;
pub mod quote;
pub mod scrub;

pub use capture::{Capture, Policy};
pub use log::{ConsoleLogs, HostLog};
