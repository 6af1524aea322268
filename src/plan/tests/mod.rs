//! The planner's rules from `shared/design/api.md`, as tables of situations and the steps they
//! plan. A small simulator plays the apply side (steps change the observed Secrets and an
//! imaginary issuer) and the status side (status rendered from the plan, as `status::render`
//! does), so crashes between any two steps and multi-pass convergence can be checked too.

use std::collections::BTreeSet;

use serde_json::json;

use super::metadata::metadata_current;
use super::*;
use crate::api::{DeletionPolicy, VersionStatus, versioned_secret_name};
use crate::contract::{
    DEGRADED, ENVIRONMENT_LABEL, MANAGED_BY_LABEL, READY, REVOKE_VERSION_ANNOTATION,
    ROTATE_ANNOTATION, TEMPLATE_KEYS_ANNOTATION, TOKEN_LABEL, TOKEN_SHA256_ANNOTATION,
    VERSION_LABEL,
};
use crate::journal::{Done, Journal, TokenFacts};
use crate::schedule::jitter_offset;

mod consumers;
mod crash;
mod deletion;
mod drift;
mod failures;
mod holds;
mod http_issuer;
mod idle;
mod inventory;
mod metadata;
mod rotation;
mod triggers;
mod windows;
mod world;

use world::*;
