//! Which issuer a WorkspaceToken may mint at: each refusal reason, and what a Ready issuer
//! that allows it resolves to.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::api::{ClusterTokenIssuer, IssuerRef, TokenIssuer};

fn ready(generation: i64) -> serde_json::Value {
    json!({ "conditions": [{
        "type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
        "observedGeneration": generation, "lastTransitionTime": "2026-12-01T00:00:00Z"
    }] })
}

fn token_issuer(spec_extra: serde_json::Value, status: serde_json::Value) -> TokenIssuer {
    let mut spec = json!({ "http": {
        "url": "https://platform.example",
        "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
    } });
    merge(&mut spec, spec_extra);
    serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenIssuer",
        "metadata": { "name": "platform", "namespace": "team-a", "uid": "uid-1", "generation": 2 },
        "spec": spec, "status": status
    }))
    .unwrap()
}

fn cluster_issuer(spec_extra: serde_json::Value) -> ClusterTokenIssuer {
    let mut spec = json!({ "http": {
        "url": "https://platform.example",
        "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
    } });
    merge(&mut spec, spec_extra);
    serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "ClusterTokenIssuer",
        "metadata": { "name": "shared", "uid": "uid-c", "generation": 2 },
        "spec": spec, "status": ready(2)
    }))
    .unwrap()
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn reference(kind: IssuerKind, name: &str) -> IssuerRef {
    IssuerRef {
        kind,
        name: name.into(),
    }
}

fn resolve_in(
    workspace_id: &str,
    reference: &IssuerRef,
    found: Option<Found<'_>>,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<ResolvedIssuer, IssuerProblem> {
    resolve(&Candidate {
        namespace: "team-a",
        workspace_id,
        reference,
        found,
        namespace_labels: labels,
        cluster_resource_namespace: "tokenwarden-system",
        owns_cluster_status: true,
    })
}

#[test]
fn a_ready_token_issuer_of_the_namespace_resolves_to_its_url_and_its_own_namespace() {
    let issuer = token_issuer(json!({}), ready(2));
    let r = reference(IssuerKind::TokenIssuer, "platform");
    let resolved = resolve_in("ws-1", &r, Some(Found::Namespaced(&issuer)), None).unwrap();
    assert_eq!(resolved.http.url, "https://platform.example");
    assert_eq!(resolved.admin_namespace, "team-a");
    assert_eq!(
        resolved.identity,
        IssuerIdentity {
            kind: IssuerKind::TokenIssuer,
            name: "platform".into(),
            uid: "uid-1".into()
        }
    );
}

#[test]
fn a_missing_issuer_is_not_found() {
    let r = reference(IssuerKind::TokenIssuer, "nope");
    let problem = resolve_in("ws-1", &r, None, None).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotFound");
    assert!(
        problem.message.contains("\"nope\" in namespace team-a"),
        "{}",
        problem.message
    );
}

#[test]
fn an_issuer_not_ready_for_its_current_generation_is_not_ready() {
    let r = reference(IssuerKind::TokenIssuer, "platform");
    let unchecked = token_issuer(json!({}), json!({}));
    let mut stale = ready(1);
    stale["conditions"][0]["status"] = json!("False");
    let stale = token_issuer(json!({}), stale);
    let mut refused = ready(2);
    refused["conditions"][0]["status"] = json!("False");
    refused["conditions"][0]["message"] = json!("Secret team-a/platform-admin not found");
    let refused = token_issuer(json!({}), refused);
    for issuer in [&unchecked, &stale, &refused] {
        let problem = resolve_in("ws-1", &r, Some(Found::Namespaced(issuer)), None).unwrap_err();
        assert_eq!(problem.reason, "IssuerNotReady");
    }
    let problem = resolve_in("ws-1", &r, Some(Found::Namespaced(&refused)), None).unwrap_err();
    assert!(
        problem.message.contains("platform-admin not found"),
        "{}",
        problem.message
    );
}

#[test]
fn a_workspace_outside_the_issuers_list_is_not_allowed() {
    let issuer = token_issuer(json!({ "workspaceIds": ["ws-1"] }), ready(2));
    let r = reference(IssuerKind::TokenIssuer, "platform");
    assert!(resolve_in("ws-1", &r, Some(Found::Namespaced(&issuer)), None).is_ok());
    let problem = resolve_in("ws-2", &r, Some(Found::Namespaced(&issuer)), None).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotAllowed");
}

#[test]
fn a_cluster_issuer_reads_its_admin_secret_from_the_cluster_resource_namespace() {
    let issuer = cluster_issuer(json!({}));
    let r = reference(IssuerKind::ClusterTokenIssuer, "shared");
    let resolved = resolve_in("ws-1", &r, Some(Found::Cluster(&issuer)), None).unwrap();
    assert_eq!(resolved.admin_namespace, "tokenwarden-system");
}

#[test]
fn a_cluster_issuer_serves_only_the_namespaces_its_selector_picks() {
    let issuer = cluster_issuer(json!({
        "namespaceSelector": { "matchLabels": { "tokenwarden.dev/platform": "enabled" } }
    }));
    let r = reference(IssuerKind::ClusterTokenIssuer, "shared");
    let enabled = BTreeMap::from([(
        "tokenwarden.dev/platform".to_string(),
        "enabled".to_string(),
    )]);
    let other = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert!(resolve_in("ws-1", &r, Some(Found::Cluster(&issuer)), Some(&enabled)).is_ok());
    for labels in [Some(&other), None] {
        let problem = resolve_in("ws-1", &r, Some(Found::Cluster(&issuer)), labels).unwrap_err();
        assert_eq!(problem.reason, "IssuerNotAllowed");
        assert!(
            problem.message.contains("namespaceSelector"),
            "{}",
            problem.message
        );
    }
}

#[test]
fn a_cluster_issuer_with_a_workspace_label_mints_only_the_namespaces_workspace() {
    let issuer =
        cluster_issuer(json!({ "workspaceIdNamespaceLabel": "tokenwarden.dev/workspace-id" }));
    let r = reference(IssuerKind::ClusterTokenIssuer, "shared");
    let labels = BTreeMap::from([(
        "tokenwarden.dev/workspace-id".to_string(),
        "ws-a".to_string(),
    )]);
    assert!(resolve_in("ws-a", &r, Some(Found::Cluster(&issuer)), Some(&labels)).is_ok());
    let problem = resolve_in("ws-b", &r, Some(Found::Cluster(&issuer)), Some(&labels)).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotAllowed");
    let unlabelled = resolve_in("ws-a", &r, Some(Found::Cluster(&issuer)), None).unwrap_err();
    assert_eq!(unlabelled.reason, "IssuerNotAllowed");
}

#[test]
fn a_cluster_issuer_with_a_workspace_list_refuses_other_workspaces() {
    let issuer = cluster_issuer(json!({ "workspaceIds": ["ws-a"] }));
    let r = reference(IssuerKind::ClusterTokenIssuer, "shared");
    assert!(resolve_in("ws-a", &r, Some(Found::Cluster(&issuer)), None).is_ok());
    let problem = resolve_in("ws-b", &r, Some(Found::Cluster(&issuer)), None).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotAllowed");
}

#[test]
fn an_operator_of_one_namespace_judges_a_cluster_issuer_by_its_spec_not_its_status() {
    let r = reference(IssuerKind::ClusterTokenIssuer, "shared");
    let unchecked: ClusterTokenIssuer = {
        let mut issuer = cluster_issuer(json!({}));
        issuer.status = None;
        issuer
    };
    let plaintext = cluster_issuer(json!({ "http": { "url": "http://platform.example" } }));
    let of_one_namespace = |issuer| Candidate {
        namespace: "team-a",
        workspace_id: "ws-1",
        reference: &r,
        found: Some(Found::Cluster(issuer)),
        namespace_labels: None,
        cluster_resource_namespace: "tokenwarden-system",
        owns_cluster_status: false,
    };
    assert!(
        resolve(&of_one_namespace(&unchecked)).is_ok(),
        "no status needed"
    );
    let problem = resolve(&of_one_namespace(&plaintext)).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotReady");
    assert!(
        problem.message.contains("allowInsecureHttp"),
        "{}",
        problem.message
    );
}

#[test]
fn a_ready_verdict_for_an_earlier_spec_stands_unless_the_new_spec_is_plainly_unusable() {
    let r = reference(IssuerKind::TokenIssuer, "platform");
    let edited = token_issuer(json!({ "http": { "timeoutSeconds": 9 } }), ready(1));
    assert!(
        resolve_in("ws-1", &r, Some(Found::Namespaced(&edited)), None).is_ok(),
        "tokens do not flap to not Ready at every edit of their issuer"
    );
    let plaintext = token_issuer(
        json!({ "http": { "url": "http://platform.example" } }),
        ready(1),
    );
    let problem = resolve_in("ws-1", &r, Some(Found::Namespaced(&plaintext)), None).unwrap_err();
    assert_eq!(problem.reason, "IssuerNotReady");
}
