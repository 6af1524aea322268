//! Observe: what the planner sees of one WorkspaceToken, from the object and its cached
//! Secrets. No client.

use kube::ResourceExt;

use std::collections::BTreeMap;

use crate::api::{RestartKind, WorkspaceToken};
use crate::consumers::Consumer;
use crate::contract::FINALIZER;
use crate::issuer::resolve::{IssuerProblem, ResolvedIssuer};
use crate::plan::{MintIntent, Observed, UsageReading};
use crate::rollout::Rollout;
use crate::secrets::SecretsView;

/// What the operator's watches saw around a WorkspaceToken.
pub struct Watched {
    /// Its restart targets' rollouts (those seen so far).
    pub rollouts: BTreeMap<(RestartKind, String), Rollout>,
    /// The workloads of its namespace that read `S`; None until every kind was listed once.
    pub consumers: Option<Vec<Consumer>>,
    /// Its group's inventory (issuer tokens whose issuer may be used now).
    pub inventory: Option<crate::plan::InventoryInput>,
    /// The highest version of it this operator has seen since it started.
    pub versions_seen: Option<u32>,
}

/// The planner's input for `wst`, whose cached Secrets are sorted into `view`, whose issuer
/// resolved to `issuer` (None: it mints locally), with what the watches saw around it, and the
/// platform's answer about a retiring version's use when this pass asked (`usage`).
pub fn observed<'a>(
    wst: &'a WorkspaceToken,
    view: &SecretsView,
    issuer: Option<&Result<ResolvedIssuer, IssuerProblem>>,
    watched: Watched,
    usage: Option<UsageReading>,
) -> Observed<'a> {
    static NO_ANNOTATIONS: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    Observed {
        name: wst.metadata.name.as_deref().unwrap_or_default(),
        uid: wst.metadata.uid.as_deref().unwrap_or_default(),
        generation: wst.metadata.generation,
        spec: &wst.spec,
        annotations: wst.metadata.annotations.as_ref().unwrap_or(&NO_ANNOTATIONS),
        status: wst.status.as_ref(),
        deleting: wst.metadata.deletion_timestamp.is_some(),
        has_finalizer: wst.finalizers().iter().any(|f| f == FINALIZER),
        versioned: view.versioned.clone(),
        mounted: view.mounted.clone(),
        foreign: view.foreign.clone(),
        mint_intent: (wst.status.as_ref())
            .and_then(|s| s.mint_intent.as_deref())
            .and_then(MintIntent::parse),
        issuer_problem: issuer.and_then(|i| i.as_ref().err()).cloned(),
        rollouts: watched.rollouts,
        usage,
        consumers: watched.consumers,
        inventory: watched.inventory,
        versions_seen: watched.versions_seen,
    }
}
