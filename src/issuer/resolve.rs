//! Which issuer a WorkspaceToken may mint at, and which one a recorded version was minted at.
//!
//! A WorkspaceToken only names an issuer (`spec.issuerRef`); the issuer object says where its
//! platform is and which Secret holds the admin credential. Resolution is pure: it reads the
//! issuer objects and the namespace's labels from caches, never from a WorkspaceToken or a
//! Secret a tenant could write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt};

pub use crate::api::IssuerIdentity;
use crate::api::{
    ClusterTokenIssuer, HttpIssuerSpec, IssuerKind, IssuerRef, TokenIssuer, WorkspaceId,
};
use crate::contract::READY;
use crate::issuer::client::spec_problem;

/// An issuer a WorkspaceToken may use, as it is now.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedIssuer {
    pub identity: IssuerIdentity,
    pub http: HttpIssuerSpec,
    /// Where its admin Secret is read: a TokenIssuer's own namespace, or for a
    /// ClusterTokenIssuer the operator's `--cluster-resource-namespace`.
    pub admin_namespace: String,
    /// `inventory.revokeUnmanagedAfter`: None reports unmanaged tokens only.
    pub revoke_unmanaged_after: Option<String>,
}

/// Why a WorkspaceToken's issuer may not be used now: nothing is minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerProblem {
    /// `IssuerNotFound`, `IssuerNotReady` or `IssuerNotAllowed`.
    pub reason: &'static str,
    pub message: String,
}

/// What the resolution of one WorkspaceToken read: the issuer object it names (if it
/// exists) and, for a ClusterTokenIssuer, the labels of the token's namespace.
pub struct Candidate<'a> {
    pub namespace: &'a str,
    pub workspace_id: &'a str,
    pub reference: &'a IssuerRef,
    pub found: Option<Found<'a>>,
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub cluster_resource_namespace: &'a str,
    /// Whether this operator keeps the ClusterTokenIssuers' status (it watches every
    /// namespace). An operator of one namespace does not: operators of several namespaces,
    /// each with its own cluster resource namespace, would overwrite each other's verdict.
    /// It checks what needs no call instead, and the admin Secret when it mints.
    pub owns_cluster_status: bool,
}

pub enum Found<'a> {
    Namespaced(&'a TokenIssuer),
    Cluster(&'a ClusterTokenIssuer),
}

/// The issuer `candidate` names, if the token may use it now.
pub fn resolve(candidate: &Candidate<'_>) -> Result<ResolvedIssuer, IssuerProblem> {
    let c = candidate;
    let named = format!("{} {:?}", c.reference.kind.as_str(), c.reference.name);
    let Some(found) = c.found.as_ref() else {
        let place = match c.reference.kind {
            IssuerKind::TokenIssuer => format!(" in namespace {}", c.namespace),
            IssuerKind::ClusterTokenIssuer => String::new(),
        };
        return Err(problem(
            "IssuerNotFound",
            format!("spec.issuerRef names {named}{place}, which does not exist; nothing is minted"),
        ));
    };
    let (metadata, status, http, workspace_ids, admin_namespace, inventory) = match found {
        Found::Namespaced(issuer) => {
            let ids = issuer.spec.workspace_ids.as_deref();
            let ns = issuer.metadata.namespace.clone().unwrap_or_default();
            (
                &issuer.metadata,
                issuer.status.as_ref(),
                &issuer.spec.http,
                ids,
                ns,
                issuer.spec.inventory.as_ref(),
            )
        }
        Found::Cluster(issuer) => {
            not_allowed_by_namespace(c, issuer, &named)?;
            let ids = issuer.spec.workspace_ids.as_deref();
            let ns = c.cluster_resource_namespace.to_string();
            (
                &issuer.metadata,
                issuer.status.as_ref(),
                &issuer.spec.http,
                ids,
                ns,
                issuer.spec.inventory.as_ref(),
            )
        }
    };
    if !allows_workspace(workspace_ids, c.workspace_id) {
        return Err(problem(
            "IssuerNotAllowed",
            format!(
                "{named} does not list workspace {:?} in spec.workspaceIds; nothing is minted",
                c.workspace_id
            ),
        ));
    }
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    // A verdict of Ready for an earlier spec stands until the next check (every token of an
    // edited issuer would flap to not Ready otherwise); what needs no call is checked now. A
    // verdict of the current spec covers that already (no caBundle parsed at every pass).
    let why = match found {
        Found::Cluster(_) if !c.owns_cluster_status => unusable(http),
        _ => match verdict(metadata, conditions) {
            Verdict::Ready => None,
            Verdict::ReadyBefore => unusable(http),
            Verdict::NotReady(why) => Some(why),
        },
    };
    if let Some(why) = why {
        return Err(problem(
            "IssuerNotReady",
            format!("{named} is not Ready: {why}; nothing is minted"),
        ));
    }
    Ok(ResolvedIssuer {
        identity: IssuerIdentity {
            kind: c.reference.kind,
            name: c.reference.name.clone(),
            uid: metadata.uid.clone().unwrap_or_default(),
        },
        http: http.clone(),
        admin_namespace,
        revoke_unmanaged_after: inventory.and_then(|i| i.revoke_unmanaged_after.clone()),
    })
}

/// A ClusterTokenIssuer serves the namespaces its selector picks, and with
/// `workspaceIdNamespaceLabel` only the workspace that label of the namespace names.
fn not_allowed_by_namespace(
    c: &Candidate<'_>,
    issuer: &ClusterTokenIssuer,
    named: &str,
) -> Result<(), IssuerProblem> {
    let empty = BTreeMap::new();
    let labels = c.namespace_labels.unwrap_or(&empty);
    if let Some(selector) = &issuer.spec.namespace_selector
        && !selects(selector, labels)
    {
        return Err(problem(
            "IssuerNotAllowed",
            format!(
                "{named} does not select namespace {} (spec.namespaceSelector); nothing is minted",
                c.namespace
            ),
        ));
    }
    if let Some(label) = &issuer.spec.workspace_id_namespace_label
        && labels.get(label).map(String::as_str) != Some(c.workspace_id)
    {
        let has = labels
            .get(label)
            .map_or("has no such label".to_string(), |v| format!("says {v:?}"));
        return Err(problem(
            "IssuerNotAllowed",
            format!(
                "{named} mints for namespace {} only the workspace its label {label:?} names, \
                 and the label {has}, not {:?}; nothing is minted",
                c.namespace, c.workspace_id
            ),
        ));
    }
    Ok(())
}

/// Whether `selector` picks a namespace with `labels`; a selector that cannot be read picks
/// nothing (the API server accepted it, so this is a selector kube-rs cannot express).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// What an issuer object's status says of it.
enum Verdict {
    /// Ready, checked at its current generation.
    Ready,
    /// Ready when last checked, at an earlier generation.
    ReadyBefore,
    NotReady(String),
}

fn verdict(metadata: &ObjectMeta, conditions: &[Condition]) -> Verdict {
    let Some(ready) = conditions.iter().find(|c| c.type_ == READY) else {
        return Verdict::NotReady("the operator has not checked it yet".into());
    };
    let current =
        ready.observed_generation.is_some() && ready.observed_generation == metadata.generation;
    match (ready.status == "True", current) {
        (true, true) => Verdict::Ready,
        (true, false) => Verdict::ReadyBefore,
        (false, true) => Verdict::NotReady(format!("{} ({})", ready.message, ready.reason)),
        // A spec edited since a failed check: wait for the next verdict.
        (false, false) => {
            Verdict::NotReady("the operator has not checked its latest spec yet".into())
        }
    }
}

/// What makes an issuer's spec unusable without asking anyone: its URL or its caBundle.
fn unusable(http: &HttpIssuerSpec) -> Option<String> {
    spec_problem(http).map(|(_, e)| e.to_string())
}

fn problem(reason: &'static str, message: String) -> IssuerProblem {
    IssuerProblem { reason, message }
}

/// Whether `ids` (absent: any) allows `workspace_id`.
pub fn allows_workspace(ids: Option<&[WorkspaceId]>, workspace_id: &str) -> bool {
    ids.is_none_or(|ids| ids.iter().any(|id| id.0 == workspace_id))
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
