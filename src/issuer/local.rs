//! The local issuer: 16..=64 bytes from the OS CSPRNG, encoded as the spec asks.

use super::Minted;
use crate::api::WorkspaceTokenSpec;
use crate::token::Token;
use crate::{Error, Result};

pub fn mint(spec: &WorkspaceTokenSpec) -> Result<Minted> {
    let token = Token::mint(&spec.token).map_err(|e| Error::Mint(e.to_string()))?;
    Ok(Minted {
        token,
        issuer_token_id: None,
    })
}
