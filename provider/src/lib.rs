//! The Beowulf provider: inventory, BMC drivers, boot plane, provisioning engine and CAPI controllers.
//!
//! Data flows one way: API types → controllers → the provisioning engine → I/O (`bmc`, `boot`), through the
//! kube-free adapters in `runtime` (the engine's power and boot-profile traits over the BMC drivers and the
//! boot plane). `docs/architecture.md`, "Data flow", has the picture.

pub mod api;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod console;
pub mod controllers;
pub mod hardware;
pub mod inventory;
pub mod memory;
pub mod open_files;
pub mod provisioning;
pub mod release;
pub mod runtime;
pub mod storage;
pub mod telemetry;
