//! One module per subcommand.
pub mod create;
pub mod diff;
pub mod inspect;
pub mod list;
pub mod publish;
pub mod pull;
pub mod remote;
pub mod validate;
