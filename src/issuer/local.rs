//! The local issuer: 16..=64 bytes from the OS CSPRNG, encoded as the spec asks.

use crate::api::TokenSpec;
use crate::token::Token;
use crate::{Error, Result};

pub fn mint(spec: &TokenSpec) -> Result<Token> {
    Token::mint(spec).map_err(|e| Error::Mint(e.to_string()))
}
