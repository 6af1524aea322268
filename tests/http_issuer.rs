//! The HTTP issuer against the reference platform over real HTTP and a real API server:
//! mint, verify, rotation, revocation by prefix, deletion, every failure mode failing safe,
//! the crash window between the platform's answer and the Secret, and revokeAfterUse.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::{TokenIssuer, VersionState, WorkspaceToken};
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(45);

struct Setup {
    client: kube::Client,
    ns: String,
    api: Api<WorkspaceToken>,
    secrets: Api<Secret>,
    platform: TestPlatform,
}

async fn setup(prefix: &str, workspace: &str) -> Setup {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, prefix).await;
    let platform = TestPlatform::start().await;
    platform.create_workspace(workspace).await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    Setup {
        api: Api::namespaced(client.clone(), &ns),
        secrets: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        platform,
    }
}

impl Setup {
    async fn degraded_reason(&self, name: &str, reason: &str) -> String {
        let (status, _, message) =
            eventually(WAIT, &format!("{name} Degraded {reason}"), || async {
                condition(&self.api, name, "Degraded")
                    .await
                    .filter(|(status, r, _)| status == "True" && r == reason)
            })
            .await;
        assert_eq!(status, "True");
        message
    }

    async fn token_sha(&self, secret: &str) -> Option<String> {
        let s = self.secrets.get_opt(secret).await.unwrap()?;
        data(&s, "token").map(|t| sha256_hex(t.as_bytes()))
    }

    async fn rotate(&self, name: &str, value: &str) {
        request_rotation(&self.api, name, value).await;
    }

    /// `t` on the platform with `extra` spec fields, minted at v1, then rotated to v2.
    async fn rotated_once(&self, workspace: &str, extra: serde_json::Value) {
        create(&self.api, "t", self.platform.spec(workspace, extra)).await;
        wait_version(&self.api, "t", 1, WAIT).await;
        self.rotate("t", "r1").await;
        wait_version(&self.api, "t", 2, WAIT).await;
    }

    /// Waits until the Secret `name` is gone (`what` names the wait in a timeout).
    async fn wait_secret_gone(&self, name: &str, what: &str) {
        eventually(WAIT, what, || async {
            self.secrets
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }

    /// Deletes `t` and waits until its finalizer is gone with it.
    async fn delete_and_wait_gone(&self) {
        self.api
            .delete("t", &DeleteParams::default())
            .await
            .unwrap();
        eventually(WAIT, "WorkspaceToken gone", || async {
            self.api.get_opt("t").await.ok()?.is_none().then_some(())
        })
        .await;
    }

    async fn finish(&self) {
        dump(&self.client, &self.ns, Some(shared_operator().await)).await;
    }
}

#[tokio::test]
async fn mint_verify_rotate_and_revoke_by_prefix_at_the_platform() {
    let s = setup("http-cycle", "ws-cycle").await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-cycle", json!({ "rotation": { "gracePeriod": "3s" } })),
    )
    .await;
    let w = wait_version(&s.api, "t", 1, WAIT).await;
    let status = w.status.clone().unwrap();
    let live = s.platform.live("ws-cycle").await;
    assert_eq!(live.len(), 1);
    assert_eq!(Some(&live[0].prefix), status.token_prefix.as_ref());
    assert_eq!(
        Some(&live[0].token_sha256),
        status.token_sha256.as_ref(),
        "the Secret holds the platform's token"
    );
    let v1 = s.secrets.get("t-v1").await.unwrap();
    assert!(v1.annotations().contains_key("tokenwarden.dev/verified-at"));
    assert_eq!(
        v1.annotations().get("tokenwarden.dev/issuer-token-id"),
        Some(&live[0].id)
    );
    assert_eq!(
        status.versions[0].issuer_token_id.as_ref(),
        Some(&live[0].id)
    );
    assert!(
        w.status.as_ref().is_some_and(|s| s.mint_intent.is_none()),
        "the intent is cleared"
    );

    // Every call carries the rotation's trace id.
    let trace_id = status.last_trace_id.unwrap();
    let requests = s.platform.platform.requests();
    let minted = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/tokens"))
        .unwrap();
    let verified = requests.iter().find(|r| r.method == "GET").unwrap();
    for r in [minted, verified] {
        let tp = r
            .traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("no traceparent on {r:?}"));
        assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
    }

    // Rotation: v2 from the platform; after the grace period v1 is revoked there by prefix.
    s.rotate("t", "r1").await;
    wait_version(&s.api, "t", 2, WAIT).await;
    eventually(WAIT, "only v2 live at the platform", || async {
        let live = s.platform.live("ws-cycle").await;
        let v2 = s.token_sha("t-v2").await?;
        (live.len() == 1
            && live[0].token_sha256 == v2
            && s.secrets.get_opt("t-v1").await.ok()?.is_none())
        .then_some(())
    })
    .await;
    assert!(
        s.platform
            .platform
            .requests()
            .iter()
            .any(|r| r.method == "DELETE")
    );
    s.finish().await;
}

#[tokio::test]
async fn deletion_revokes_every_live_version_at_the_platform_before_the_finalizer_goes() {
    let s = setup("http-delete", "ws-delete").await;
    s.rotated_once("ws-delete", json!({ "rotation": { "gracePeriod": "1h" } }))
        .await;
    assert_eq!(
        s.platform.live("ws-delete").await.len(),
        2,
        "v1 retiring, v2 active"
    );
    s.delete_and_wait_gone().await;
    assert!(
        s.platform.live("ws-delete").await.is_empty(),
        "every version revoked at the platform"
    );
    s.finish().await;
}

/// The old version's `S-vN` is gone when the WorkspaceToken is deleted, so its revocation
/// must authenticate with the current token: versions are revoked oldest first, while the
/// current one is still there.
#[tokio::test]
async fn deletion_revokes_an_old_version_whose_secret_is_already_gone() {
    let s = setup("http-delete-lost", "ws-delete-lost").await;
    s.rotated_once(
        "ws-delete-lost",
        json!({ "rotation": { "gracePeriod": "1h" } }),
    )
    .await;
    assert_eq!(s.platform.live("ws-delete-lost").await.len(), 2);
    s.secrets
        .delete("t-v1", &DeleteParams::default())
        .await
        .expect("delete S-v1");
    s.delete_and_wait_gone().await;
    assert!(
        s.platform.live("ws-delete-lost").await.is_empty(),
        "v1 revoked with the current token, then v2"
    );
    let reasons = event_reasons(&s.client, &s.ns).await;
    assert!(
        !reasons.iter().any(|r| r == "RevokeImpossible"),
        "{reasons:?}"
    );
    s.finish().await;
}

/// Every Secret gone (while suspended), then the WorkspaceToken deleted: versions with no token left
/// to authenticate their revocation cannot be revoked, and that is never passed off as done.
/// Whatever stays live at the platform is named, by prefix, in a `RevokeImpossible` Warning.
#[tokio::test]
async fn a_version_that_cannot_be_revoked_is_reported_by_prefix_never_passed_as_revoked() {
    let s = setup("http-unrevocable", "ws-unrevocable").await;
    s.rotated_once(
        "ws-unrevocable",
        json!({ "rotation": { "gracePeriod": "1h" } }),
    )
    .await;
    // Suspended, nothing repairs the Secrets before the deletion pass sees them gone.
    let suspend = json!({ "spec": { "suspend": true } });
    s.api
        .patch("t", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    eventually(WAIT, "suspended", || async {
        condition(&s.api, "t", "Ready")
            .await
            .filter(|(_, _, message)| message.contains("suspend"))
    })
    .await;
    for name in ["t-v1", "t-v2", "t"] {
        s.secrets
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    s.delete_and_wait_gone().await;
    let live = s.platform.live("ws-unrevocable").await;
    assert!(
        !live.is_empty(),
        "some version was left with nothing to revoke it with"
    );
    let warnings = eventually(WAIT, "a RevokeImpossible event per live token", || async {
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(s.client.clone(), &s.ns)
            .list(&Default::default())
            .await
            .ok()?;
        let notes: Vec<String> = events
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("RevokeImpossible"))
            .filter_map(|e| e.message)
            .collect();
        live.iter()
            .all(|t| {
                notes
                    .iter()
                    .any(|n| n.contains(&format!("prefix {}", t.prefix)))
            })
            .then_some(notes)
    })
    .await;
    assert!(
        warnings
            .iter()
            .all(|n| n.contains("revoke it there by hand"))
    );
    let audit = shared_operator().await.audit_lines();
    assert!(
        audit.iter().any(|l| l["event"] == "revoked"
            && l["status"] == "failure"
            && l["namespace"] == s.ns.as_str()),
        "the audit trail records the failed revocation"
    );
    s.finish().await;
}

/// `spec.issuerRef` moves from the platform to the local issuer: the rotation that follows mints
/// v2 locally, and v1 is still revoked at the platform that minted it (recorded on `S-v1`),
/// not left live there.
#[tokio::test]
async fn a_version_outlives_a_change_of_issuer_and_is_revoked_where_it_was_minted() {
    let s = setup("http-moved", "ws-moved").await;
    let spec = json!({ "rotation": { "gracePeriod": "0s" } });
    create(&s.api, "t", s.platform.spec("ws-moved", spec)).await;
    wait_version(&s.api, "t", 1, WAIT).await;
    assert_eq!(s.platform.live("ws-moved").await.len(), 1);
    let recorded = s.secrets.get("t-v1").await.unwrap();
    let issuer: Api<TokenIssuer> = Api::namespaced(s.client.clone(), &s.ns);
    let uid = issuer.get("platform").await.unwrap().uid();
    assert_eq!(
        ["issuer-kind", "issuer-name", "issuer-uid"].map(|k| data(&recorded, k)),
        [Some("TokenIssuer".into()), Some("platform".into()), uid],
        "S-v1 records the issuer object that minted it"
    );
    assert_eq!(data(&recorded, "issuer-url"), None, "never a URL");

    let to_local = json!({ "spec": { "issuerRef": null } });
    s.api
        .patch("t", &PatchParams::default(), &Patch::Merge(&to_local))
        .await
        .unwrap();
    wait_version(&s.api, "t", 2, WAIT).await;
    eventually(WAIT, "v1 revoked at the platform", || async {
        s.platform.live("ws-moved").await.is_empty().then_some(())
    })
    .await;
    let v2 = s.secrets.get("t-v2").await.unwrap();
    assert_eq!(data(&v2, "issuer-url"), None, "v2 was minted locally");
    s.finish().await;
}

#[tokio::test]
async fn an_unreachable_platform_keeps_the_current_token_and_recovers_by_itself() {
    let mut s = setup("http-down", "ws-down").await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-down", json!({ "rotation": { "gracePeriod": "0s" } })),
    )
    .await;
    wait_version(&s.api, "t", 1, WAIT).await;
    let served = s.token_sha("t").await;

    s.platform.stop();
    s.rotate("t", "r1").await;
    let message = s.degraded_reason("t", "IssuerUnreachable").await;
    assert!(message.contains("mint"), "{message}");
    assert_eq!(
        s.token_sha("t").await,
        served,
        "the current token stays in place"
    );
    let (ready, _, _) = condition(&s.api, "t", "Ready").await.unwrap();
    assert_eq!(ready, "True", "the served token still works");

    s.platform.restart().await;
    wait_version(&s.api, "t", 2, Duration::from_secs(90)).await;
    eventually(WAIT, "Degraded cleared", || async {
        condition(&s.api, "t", "Degraded")
            .await
            .filter(|(status, _, _)| status == "False")
    })
    .await;
    eventually(WAIT, "exactly the served token live", || async {
        let live = s.platform.live("ws-down").await;
        let v2 = s.token_sha("t-v2").await?;
        (live.len() == 1 && live[0].token_sha256 == v2).then_some(())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn errors_timeouts_and_malformed_answers_fail_safe_with_the_reason() {
    let s = setup("http-faults", "ws-faults").await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-faults", json!({ "rotation": { "gracePeriod": "0s" } })),
    )
    .await;
    wait_version(&s.api, "t", 1, WAIT).await;
    let mut served = s.token_sha("t").await;
    for (round, (fault, reason)) in [
        ("error500", "IssuerError"),
        ("hang", "IssuerTimeout"),
        ("malformed", "IssuerMalformedAnswer"),
    ]
    .into_iter()
    .enumerate()
    {
        s.platform.fault(fault, None).await;
        s.rotate("t", fault).await;
        s.degraded_reason("t", reason).await;
        assert_eq!(
            s.token_sha("t").await,
            served,
            "{fault}: the current token stays in place"
        );
        let next = 2 + round as u32;
        let minted = s.secrets.get_opt(&format!("t-v{next}")).await.unwrap();
        assert!(minted.is_none(), "{fault}: nothing written");
        s.platform.fault("none", None).await;
        wait_version(&s.api, "t", next, Duration::from_secs(90)).await;
        served = s.token_sha("t").await;
        assert!(served.is_some());
        assert_eq!(
            s.api.get("t").await.unwrap().status.unwrap().token_sha256,
            served
        );
    }
    // Whatever the faults left behind, the platform ends with exactly the served token live.
    eventually(WAIT, "exactly one live token", || async {
        let live = s.platform.live("ws-faults").await;
        let served = s.token_sha("t").await?;
        (live.len() == 1 && live[0].token_sha256 == served).then_some(())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn an_answer_for_another_workspace_writes_nothing_and_leaves_no_live_token() {
    let s = setup("http-wrongws", "ws-wrong").await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-wrong", json!({ "rotation": { "gracePeriod": "0s" } })),
    )
    .await;
    wait_version(&s.api, "t", 1, WAIT).await;
    s.platform.fault("wrong_workspace", Some(1)).await;
    s.rotate("t", "r1").await;
    let message = s.degraded_reason("t", "IssuerWrongWorkspace").await;
    assert!(
        message.contains("ws-wrong-other") && message.contains("nothing was written"),
        "{message}"
    );
    // The retry mints v2 properly, and the token minted for the refused answer is revoked.
    wait_version(&s.api, "t", 2, Duration::from_secs(90)).await;
    eventually(WAIT, "only the served token live", || async {
        let live = s.platform.live("ws-wrong").await;
        let served = s.token_sha("t").await?;
        (live.len() == 1 && live[0].token_sha256 == served).then_some(())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn a_missing_or_refused_admin_token_is_reported_not_retried_hot() {
    let s = setup("http-admin", "ws-admin").await;
    // One issuer per admin Secret; each token names its own.
    let spec = |secret: &str| {
        let issuer = json!({ "http": { "adminTokenSecretRef": { "name": secret } } });
        let token = s
            .platform
            .spec("ws-admin", json!({ "issuerRef": { "name": secret } }));
        (issuer, token)
    };
    let (issuer, token) = spec("no-such-secret");
    s.platform
        .issuer(&s.client, &s.ns, "no-such-secret", issuer)
        .await;
    create(&s.api, "missing", token).await;
    let (ready, reason, message) = eventually(WAIT, "IssuerNotReady", || async {
        condition(&s.api, "missing", "Ready")
            .await
            .filter(|(_, r, _)| r == "IssuerNotReady")
    })
    .await;
    assert_eq!(ready, "False");
    assert!(message.contains("no-such-secret"), "{reason}: {message}");
    assert!(message.contains("AdminSecretMissing"), "{message}");

    // A revoked (wrong) admin token: refused by the platform.
    let wrong: Secret = serde_json::from_value(json!({
        "metadata": { "name": "revoked-admin" }, "stringData": { "token": "revoked-admin-token-0123456789" }
    }))
    .unwrap();
    s.secrets.create(&Default::default(), &wrong).await.unwrap();
    let (issuer, token) = spec("revoked-admin");
    s.platform
        .issuer(&s.client, &s.ns, "revoked-admin", issuer)
        .await;
    create(&s.api, "refused", token).await;
    s.degraded_reason("refused", "IssuerAdminTokenRejected")
        .await;
    assert!(s.platform.live("ws-admin").await.is_empty());
    assert!(
        event_reasons(&s.client, &s.ns)
            .await
            .contains(&"IssuerNotReady".to_string())
    );
    s.finish().await;
}

#[tokio::test]
async fn a_token_minted_before_a_crash_that_no_secret_holds_is_revoked_on_recovery() {
    let s = setup("http-crash", "ws-crash").await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-crash", json!({ "rotation": { "gracePeriod": "0s" } })),
    )
    .await;
    wait_version(&s.api, "t", 1, WAIT).await;

    // The platform mints v2 but never answers; the operator times out (3 s) after the platform
    // created the token. Its recorded intent makes the next pass revoke that unheld token.
    s.platform.fault("hang_after_mint", Some(1)).await;
    s.rotate("t", "r1").await;
    s.degraded_reason("t", "IssuerTimeout").await;
    wait_version(&s.api, "t", 2, Duration::from_secs(90)).await;
    eventually(WAIT, "the cut-short token revoked", || async {
        let live = s.platform.live("ws-crash").await;
        let served = s.token_sha("t").await?;
        (live.len() == 1 && live[0].token_sha256 == served).then_some(())
    })
    .await;
    assert!(
        event_reasons(&s.client, &s.ns)
            .await
            .contains(&"OrphanRevoked".to_string())
    );
    s.finish().await;
}

#[tokio::test]
async fn revoke_after_use_revokes_the_old_version_once_a_consumer_used_the_new_one() {
    let s = setup("http-used", "ws-used").await;
    s.rotated_once(
        "ws-used",
        json!({ "rotation": { "gracePeriod": "1h", "revokeAfterUse": true } }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.secrets.get_opt("t-v1").await.unwrap().is_some(),
        "unused: v1 stays through its grace"
    );

    // A consumer (not the operator) uses the new token.
    let v2 = data(&s.secrets.get("t").await.unwrap(), "token").unwrap();
    let used = reqwest::Client::new()
        .get(format!("{}/workspaces/ws-used/tokens", s.platform.url()))
        .bearer_auth(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    eventually(
        Duration::from_secs(60),
        "v1 revoked after use, before its 1h grace",
        || async {
            let gone = s.secrets.get_opt("t-v1").await.ok()?.is_none();
            let live = s.platform.live("ws-used").await;
            (gone && live.len() == 1).then_some(())
        },
    )
    .await;
    s.finish().await;
}

#[tokio::test]
async fn revoke_after_use_still_revokes_when_the_grace_period_ends_unused() {
    let s = setup("http-unused", "ws-unused").await;
    s.rotated_once(
        "ws-unused",
        json!({ "rotation": { "gracePeriod": "4s", "revokeAfterUse": true } }),
    )
    .await;
    eventually(WAIT, "v1 revoked at the end of its grace", || async {
        let gone = s.secrets.get_opt("t-v1").await.ok()?.is_none();
        (gone && s.platform.live("ws-unused").await.len() == 1).then_some(())
    })
    .await;
    s.finish().await;
}

/// The platform id a revocation deletes comes from a listing matched by the version's prefix,
/// never from the `issuer-token-id` annotation, which anyone who may edit Secrets can change:
/// pointing v1's annotation at v2's id must not get the current token revoked. The tenant of
/// the namespace (edit-like rights) does both the patch and the revoke request.
#[tokio::test]
async fn patching_the_token_id_annotation_changes_nothing_that_gets_revoked() {
    let s = setup("http-tokenid", "ws-tokenid").await;
    support::tenant::grant_tenant(&s.client, &s.ns).await;
    let tenant = control_plane().await.unprivileged_client().await;
    let (tenant_tokens, tenant_secrets): (Api<WorkspaceToken>, Api<Secret>) = (
        Api::namespaced(tenant.clone(), &s.ns),
        Api::namespaced(tenant, &s.ns),
    );
    s.rotated_once("ws-tokenid", json!({ "rotation": { "gracePeriod": "1h" } }))
        .await;
    let v2_prefix = s.api.get("t").await.unwrap().status.unwrap().token_prefix;
    let live = s.platform.live("ws-tokenid").await;
    let v2 = live
        .iter()
        .find(|t| Some(&t.prefix) == v2_prefix.as_ref())
        .expect("v2 live at the platform");
    let point_at_v2 = json!({ "metadata": { "annotations": {
        "tokenwarden.dev/issuer-token-id": v2.id,
    } } });
    tenant_secrets
        .patch("t-v1", &PatchParams::default(), &Patch::Merge(&point_at_v2))
        .await
        .unwrap();
    let revoke_v1 =
        json!({ "metadata": { "annotations": { "tokenwarden.dev/revoke-version": "1" } } });
    tenant_tokens
        .patch("t", &PatchParams::default(), &Patch::Merge(&revoke_v1))
        .await
        .unwrap();
    s.wait_secret_gone("t-v1", "v1 revoked on request").await;
    let live = s.platform.live("ws-tokenid").await;
    let prefixes: Vec<&str> = live.iter().map(|t| t.prefix.as_str()).collect();
    assert_eq!(
        prefixes,
        [v2.prefix.as_str()],
        "v2 (current) is live, v1 is revoked"
    );
    s.finish().await;
}

/// A platform token of 16 characters or fewer would be mostly its 8-character prefix, which
/// status, events and logs show: it is refused, nothing is written, and the next mint (the
/// platform well again) is served.
#[tokio::test]
async fn a_platform_token_shorter_than_16_characters_is_refused() {
    let s = setup("http-short", "ws-short").await;
    s.platform.fault("short_token", Some(1)).await;
    create(&s.api, "t", s.platform.spec("ws-short", json!({}))).await;
    let message = s.degraded_reason("t", "IssuerMalformedAnswer").await;
    assert!(message.contains("shorter than 16"), "{message}");
    let w = wait_version(&s.api, "t", 1, WAIT).await;
    let served = s.token_sha("t").await;
    assert_eq!(served, w.status.unwrap().token_sha256);
    eventually(WAIT, "only the served token live", || async {
        let live = s.platform.live("ws-short").await;
        (live.len() == 1 && Some(&live[0].token_sha256) == served.as_ref()).then_some(())
    })
    .await;
    s.finish().await;
}

/// A new token the platform refuses at verification never becomes current: it is recorded
/// Revoked, said in a Warning, and the next version is minted (no endless retry of a token
/// that will never work).
#[tokio::test]
async fn a_new_token_the_platform_refuses_is_revoked_and_the_next_version_minted() {
    let s = setup("http-refused", "ws-refused").await;
    create(&s.api, "t", s.platform.spec("ws-refused", json!({}))).await;
    wait_version(&s.api, "t", 1, WAIT).await;
    s.platform.fault("refuse_list", Some(1)).await;
    s.rotate("t", "r1").await;
    let w = wait_version(&s.api, "t", 3, WAIT).await;
    let status = w.status.unwrap();
    let v2 = status
        .versions
        .iter()
        .find(|v| v.version == 2)
        .expect("v2 in status");
    assert_eq!(v2.state, tokenwarden::api::VersionState::Revoked);
    let reasons = event_reasons(&s.client, &s.ns).await;
    assert!(
        reasons.iter().any(|r| r == "IssuerRefusedNewToken"),
        "{reasons:?}"
    );
    eventually(WAIT, "v2's record gone, v1 and v3 live", || async {
        let gone = s.secrets.get_opt("t-v2").await.ok()?.is_none();
        let live = s.platform.live("ws-refused").await.len();
        (gone && live == 2).then_some(())
    })
    .await;
    s.finish().await;
}

/// A Secret put in the place of a deleted `S-v1` (unlabelled, so the chart's policy does not
/// apply, with an ownerReference to the WorkspaceToken and the current token inside) is never
/// read as v1's: v1 is revoked by the prefix status recorded, and the current token stays.
#[tokio::test]
async fn a_secret_put_in_the_place_of_a_versioned_one_never_stands_in_for_it() {
    let s = setup("http-standin", "ws-standin").await;
    s.rotated_once("ws-standin", json!({ "rotation": { "gracePeriod": "1h" } }))
        .await;
    let w = s.api.get("t").await.unwrap();
    let current = s.secrets.get("t").await.unwrap();
    let current_token = data(&current, "token").expect("S holds the current token");
    s.secrets
        .delete("t-v1", &DeleteParams::default())
        .await
        .unwrap();
    let stand_in: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "t-v1",
            "ownerReferences": [{
                "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                "name": "t", "uid": w.metadata.uid, "controller": true,
            }],
        },
        "stringData": { "token": current_token },
    }))
    .unwrap();
    s.secrets
        .create(&kube::api::PostParams::default(), &stand_in)
        .await
        .unwrap();
    eventually(WAIT, "v1 revoked, its record lost", || async {
        let w = s.api.get("t").await.ok()?;
        let versions = w.status?.versions;
        let v1 = versions.into_iter().find(|v| v.version == 1)?;
        (v1.state == tokenwarden::api::VersionState::Revoked).then_some(())
    })
    .await;
    let live = s.platform.live("ws-standin").await;
    let served = w.status.unwrap().token_sha256;
    assert_eq!(live.len(), 1, "v1 revoked at the platform");
    assert_eq!(
        Some(&live[0].token_sha256),
        served.as_ref(),
        "the current token stays live"
    );
    s.finish().await;
}

/// A platform behind a private CA: an issuer without `caBundle` refuses the connection (the
/// system roots do not know the CA; nothing is sent), and with the CA in `caBundle` the same
/// token is minted and verified over TLS.
#[tokio::test]
async fn a_platform_behind_a_private_ca_is_trusted_only_through_the_issuers_ca_bundle() {
    use base64::Engine;
    let s = setup("http-tls", "ws-tls").await;
    let front = tokenwarden_testenv::tls_front::TlsFront::start(s.platform.addr).await;
    let https = json!({ "http": { "url": front.url, "allowInsecureHttp": false } });
    s.platform
        .issuer(&s.client, &s.ns, "private-ca", https)
        .await;
    let spec = json!({ "issuerRef": { "name": "private-ca" } });
    create(&s.api, "t", s.platform.spec("ws-tls", spec)).await;
    let message = s.degraded_reason("t", "IssuerUnreachable").await;
    assert!(s.platform.live("ws-tls").await.is_empty(), "{message}");

    let bundle = base64::engine::general_purpose::STANDARD.encode(&front.ca_pem);
    let trusted = json!({ "http": { "url": front.url, "caBundle": bundle } });
    s.platform
        .issuer(&s.client, &s.ns, "private-ca", trusted)
        .await;
    let w = wait_version(&s.api, "t", 1, WAIT).await;
    let live = s.platform.live("ws-tls").await;
    assert_eq!(live.len(), 1);
    assert_eq!(
        Some(&live[0].token_sha256),
        w.status.unwrap().token_sha256.as_ref()
    );
    s.finish().await;
}

/// Over plaintext http:// anyone on the path can answer 401: a version's own token refused
/// there is not taken as already revoked. It is RevokeImpossible, said in a Warning, and the
/// token stays live at the platform for a person to check.
#[tokio::test]
async fn a_401_over_plaintext_is_not_taken_for_a_revocation() {
    let s = setup("http-forged-401", "ws-forged-401").await;
    create(&s.api, "t", s.platform.spec("ws-forged-401", json!({}))).await;
    wait_version(&s.api, "t", 1, WAIT).await;
    s.platform.fault("refuse_list", Some(1)).await;
    s.delete_and_wait_gone().await;
    let note = eventually(WAIT, "RevokeImpossible", || async {
        event_messages(&s.client, &s.ns, "RevokeImpossible")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(note.contains("plaintext"), "{note}");
    assert_eq!(s.platform.live("ws-forged-401").await.len(), 1);
    s.finish().await;
}

/// `holdUntil.idleFor`: the previous token stays while a consumer keeps using it and goes
/// `idleFor` after its last use. The operator asks the platform with the current token only:
/// while the version is held, the platform's `last_used_at` of the old token is always the
/// consumer's (were it the operator's, the hold would never end before maxGracePeriod).
#[tokio::test]
async fn idle_for_holds_a_previous_token_in_use_and_releases_it_idle_for_after_its_last_use() {
    let s = setup("http-idle", "ws-idle").await;
    create(
        &s.api,
        "t",
        s.platform.spec(
            "ws-idle",
            json!({ "rotation": { "gracePeriod": "3s", "maxGracePeriod": "10m",
                                  "holdUntil": { "idleFor": "8s" } } }),
        ),
    )
    .await;
    wait_version(&s.api, "t", 1, WAIT).await;
    let v1 = data(&s.secrets.get("t-v1").await.unwrap(), "token").unwrap();
    let v1_sha = sha256_hex(v1.as_bytes());

    // A consumer that never moves calls with v1 every 2 s, from before the cutover on. It is
    // stopped between calls, never during one: a call cut off in flight may still reach the
    // platform (a loaded machine served one 9 s late), a use after the last one noted here.
    let last_use = std::sync::Arc::new(std::sync::Mutex::new(chrono::Utc::now()));
    let list = format!("{}/workspaces/ws-idle/tokens", s.platform.url());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let consumer = {
        let last_use = last_use.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !*stopped.borrow() {
                let used = client.get(&list).bearer_auth(&v1).send().await.unwrap();
                assert_eq!(used.status(), 200, "v1 is valid while a consumer uses it");
                *last_use.lock().unwrap() = chrono::Utc::now();
                let pause = tokio::time::sleep(Duration::from_secs(2));
                tokio::select! { _ = pause => {}, _ = stopped.changed() => {} }
            }
        })
    };
    s.rotate("t", "r1").await;
    wait_version(&s.api, "t", 2, WAIT).await;
    let held = eventually(WAIT, "v1 held by its use past its grace period", || async {
        let v1 = version_status(&s.api.get("t").await.ok()?, 1)?;
        v1.retire_held_by
            .iter()
            .any(|h| h.starts_with("used "))
            .then_some(v1)
    })
    .await;
    assert_eq!(held.state, VersionState::Retiring, "{held:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        s.secrets.get_opt("t-v1").await.unwrap().is_some(),
        "still held while in use, longer than idleFor after the cutover"
    );
    stop.send(true).expect("the consumer is running");
    consumer.await.expect("the consumer's calls succeeded");
    let last_use = *last_use.lock().unwrap();

    // Idle now: released about 8 s after the last use; until then the operator never used it.
    let revoked_at = eventually(Duration::from_secs(60), "v1 revoked once idle", || async {
        let row = (s.platform.platform.rows().await)
            .into_iter()
            .find(|r| r.token_sha256 == v1_sha)
            .expect("v1's row");
        if row.revoked_at.is_none() {
            let used = row.last_used_at.expect("used by the consumer");
            assert!(
                used <= last_use,
                "only the consumer used v1 while it was held (last use {used}, consumer's {last_use})"
            );
        }
        row.revoked_at
    })
    .await;
    let idle = revoked_at - last_use;
    assert!(
        idle >= chrono::TimeDelta::seconds(7) && idle <= chrono::TimeDelta::seconds(25),
        "revoked {idle} after the last use; idleFor is 8s"
    );
    s.wait_secret_gone("t-v1", "t-v1 deleted").await;
    s.finish().await;
}
