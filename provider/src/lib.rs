//! The Beowulf provider: inventory, BMC drivers, boot plane, provisioning engine and CAPI controllers.
//!
//! Data flows one way: API types → controllers → the provisioning engine → I/O (`bmc`, `boot`).

pub mod api;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod controllers;
pub mod inventory;
pub mod provisioning;
pub mod release;
pub mod telemetry;
