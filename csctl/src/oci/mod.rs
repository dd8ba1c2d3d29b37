//! OCI: the distribution client, the local image layout, and publishing/pulling cluster-stack releases.
pub mod artifact;
pub mod client;
pub mod credentials;
pub mod digest;
pub mod digest_cache;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod push;
pub mod reference;
pub mod store;

pub use client::{ClientOptions, RegistryClient};
pub use digest::Digest;
pub use error::OciError;
pub use reference::{Location, Reference};
pub use store::Store;
