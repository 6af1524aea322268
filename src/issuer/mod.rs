//! Where tokens come from and where they are revoked.
//!
//! - `local`: the OS CSPRNG; a local token is revoked by deleting the Secrets that hold it.
//! - `http`: a platform's token API (seed 001): mint, verify, list, revoke over HTTP.
//! - `resolve` and `caches`: which TokenIssuer or ClusterTokenIssuer a WorkspaceToken may
//!   use, and which one minted a recorded version.

pub mod caches;
pub mod client;
pub mod http;
pub mod local;
pub mod resolve;
