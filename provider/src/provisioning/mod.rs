//! The provisioning engine: a pure state machine, shared by the CAPI controllers and standalone mode.
//!
//! Given what a host should be doing ([`Goal`]), what was decided before ([`Progress`], persisted by the
//! caller) and what is observed now ([`Observation`]: BMC power, boot phases, the clock), [`decide`] returns
//! the next [`Progress`] and the [`Action`]s to run. No Kubernetes types and no I/O here: the caller runs the
//! actions through the [`io`] traits and feeds the results back as the next observation.

pub mod engine;
pub mod io;
pub mod remediation;
pub mod state;

pub use engine::{Decision, EngineConfig, decide};
pub use state::{
    Action, BootObservation, Goal, HostState, Observation, PowerObservation, Progress, Request,
};
