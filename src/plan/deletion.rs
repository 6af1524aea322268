//! Whether deleting a WorkspaceToken needs a pass of ours first, which the finalizer holds it
//! for: one home for the rule the planner adds the finalizer by and the audit of a deletion
//! reads.

use crate::api::{DeletionPolicy, VersionState, WorkspaceTokenSpec, WorkspaceTokenStatus};

/// True when tokens must be revoked at a platform (the spec names an issuer, a mint there may
/// be in flight, or a live version was minted at one) or `Retain` must release the Secrets
/// first. False for a local token under `Revoke`: its tokens live only in its Secrets, which
/// the garbage collector deletes by their ownerReferences.
pub fn needs_a_pass(spec: &WorkspaceTokenSpec, status: Option<&WorkspaceTokenStatus>) -> bool {
    let platform_versions = status.is_some_and(|s| {
        s.mint_intent.is_some()
            || (s.versions.iter()).any(|v| {
                v.state != VersionState::Revoked
                    && (v.issuer.is_some() || v.issuer_token_id.is_some())
            })
    });
    spec.deletion_policy == DeletionPolicy::Retain
        || spec.issuer_ref.is_some()
        || spec.removed_issuer.is_some()
        || platform_versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `base` with the top-level fields of `extra`.
    fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let extra = extra.as_object().cloned().unwrap_or_default();
        base.as_object_mut().expect("an object").extend(extra);
        base
    }

    fn needs(spec: serde_json::Value, status: serde_json::Value) -> bool {
        let spec = with(json!({ "workspaceId": "ws" }), spec);
        let spec: WorkspaceTokenSpec = serde_json::from_value(spec).expect("spec");
        let status: Option<WorkspaceTokenStatus> =
            (!status.is_null()).then(|| serde_json::from_value(status).expect("status"));
        needs_a_pass(&spec, status.as_ref())
    }

    fn version(state: &str, extra: serde_json::Value) -> serde_json::Value {
        let v = with(
            json!({ "version": 1, "secretName": "t-v1", "state": state }),
            extra,
        );
        json!({ "versions": [v] })
    }

    #[test]
    fn only_a_local_token_under_revoke_goes_without_a_pass_of_ours() {
        let minted_at = json!({ "issuer": { "kind": "TokenIssuer", "name": "p", "uid": "u" } });
        let table = [
            ("local, Revoke", json!({}), json!(null), false),
            (
                "local, live local version",
                json!({}),
                version("Active", json!({})),
                false,
            ),
            (
                "Retain: the Secrets are released",
                json!({ "deletionPolicy": "Retain" }),
                json!(null),
                true,
            ),
            (
                "names an issuer",
                json!({ "issuerRef": { "name": "p" } }),
                json!(null),
                true,
            ),
            (
                "a live version minted at a platform",
                json!({}),
                version("Retiring", minted_at.clone()),
                true,
            ),
            (
                "one with a platform id",
                json!({}),
                version("Active", json!({ "issuerTokenId": "t1" })),
                true,
            ),
            (
                "a platform version already revoked",
                json!({}),
                version("Revoked", minted_at),
                false,
            ),
            (
                "a mint that may be in flight",
                json!({}),
                json!({ "mintIntent": "v2@2026-11-24T01:02:03Z" }),
                true,
            ),
        ];
        for (case, spec, status, want) in table {
            assert_eq!(needs(spec, status), want, "{case}");
        }
    }
}
