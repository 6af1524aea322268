//! Where tokens come from and where they are revoked: one interface, one issuer per kind.

pub mod http;
pub mod local;

use crate::Result;
use crate::api::WorkspaceTokenSpec;
use crate::token::Token;

/// A token fresh from an issuer.
pub struct Minted {
    pub token: Token,
    /// The issuer's id for the token, when it has one (used to revoke it).
    pub issuer_token_id: Option<String>,
}

/// The issuer a WorkspaceToken's spec names.
pub enum Issuer {
    /// Tokens from the OS CSPRNG; a token is revoked by deleting the Secrets that hold it.
    Local,
}

impl Issuer {
    pub fn for_spec(_spec: &WorkspaceTokenSpec) -> Issuer {
        Issuer::Local
    }

    pub async fn mint(&self, spec: &WorkspaceTokenSpec) -> Result<Minted> {
        match self {
            Issuer::Local => local::mint(spec),
        }
    }

    /// Invalidates a version's token at the issuer. Called before its Secret is deleted.
    pub async fn revoke(&self, _issuer_token_id: Option<&str>) -> Result<()> {
        match self {
            Issuer::Local => Ok(()),
        }
    }
}
