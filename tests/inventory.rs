//! The issuer inventory against the reference platform over real HTTP and a real API server:
//! tokens minted outside tokenwarden are reported on every WorkspaceToken of their workspace
//! and nowhere else, revoked after `revokeUnmanagedAfter` only and never from a listing that
//! failed or was partial; a served token revoked behind tokenwarden's back is replaced without
//! waiting for its schedule, at a bounded request rate.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use support::platform::{ISSUER, TestPlatform};
use support::*;
use tokenwarden::api::WorkspaceToken;

const WAIT: Duration = Duration::from_secs(60);
/// The inventory interval of this binary's operator.
const INTERVAL_SECONDS: u64 = 2;

/// This binary's operator lists every group every 2 s.
async fn operator() -> &'static Operator {
    let cp = control_plane().await;
    static OPERATOR: std::sync::OnceLock<Operator> = std::sync::OnceLock::new();
    OPERATOR.get_or_init(|| {
        let interval = format!("{INTERVAL_SECONDS}s");
        Operator::start(
            cp,
            &["--concurrency", "8", "--inventory-interval", &interval],
        )
    })
}

struct Setup {
    client: kube::Client,
    ns: String,
    api: Api<WorkspaceToken>,
    platform: TestPlatform,
}

async fn setup(prefix: &str, workspaces: &[&str], inventory: serde_json::Value) -> Setup {
    let cp = control_plane().await;
    operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, prefix).await;
    let platform = TestPlatform::start().await;
    for workspace in workspaces {
        platform.create_workspace(workspace).await;
    }
    platform
        .admin_secret_only(&client, &ns, &platform.admin.clone())
        .await;
    platform
        .issuer(&client, &ns, ISSUER, json!({ "inventory": inventory }))
        .await;
    Setup {
        api: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        platform,
    }
}

impl Setup {
    async fn token(&self, name: &str, workspace: &str) {
        create(&self.api, name, self.platform.spec(workspace, json!({}))).await;
        wait_version(&self.api, name, 1, WAIT).await;
    }

    /// The prefixes `name`'s status reports unmanaged.
    async fn unmanaged(&self, name: &str) -> Vec<String> {
        let wst = self.api.get(name).await.expect("get WorkspaceToken");
        (wst.status.into_iter())
            .flat_map(|s| s.unmanaged_tokens)
            .map(|u| u.prefix)
            .collect()
    }

    async fn wait_unmanaged(&self, name: &str, prefixes: &[&str]) {
        let what = format!("{name} reports {prefixes:?} unmanaged");
        eventually(WAIT, &what, || async {
            (self.unmanaged(name).await == prefixes).then_some(())
        })
        .await;
    }

    async fn live_prefixes(&self, workspace: &str) -> Vec<String> {
        let live = self.platform.live(workspace).await;
        live.into_iter().map(|r| r.prefix).collect()
    }

    async fn finish(&self) {
        dump(&self.client, &self.ns, Some(operator().await)).await;
    }
}

fn prefix_of(token: &str) -> String {
    token.chars().take(8).collect()
}

#[tokio::test]
async fn a_token_minted_outside_is_unmanaged_on_every_token_of_its_workspace_and_nowhere_else() {
    let s = setup("inv-report", &["ws-shared", "ws-other"], json!({})).await;
    s.token("a1", "ws-shared").await;
    s.token("a2", "ws-shared").await;
    s.token("b1", "ws-other").await;
    let outside = s.platform.mint_directly("ws-shared").await;
    let outside = prefix_of(&outside);
    s.wait_unmanaged("a1", &[&outside]).await;
    s.wait_unmanaged("a2", &[&outside]).await;
    // Several listings later: the two tokens sharing the workspace never report each
    // other's versions, and the other workspace reports nothing.
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL_SECONDS)).await;
    assert_eq!(s.unmanaged("a1").await, [outside.as_str()]);
    assert_eq!(s.unmanaged("a2").await, [outside.as_str()]);
    assert!(s.unmanaged("b1").await.is_empty());
    let warned = event_messages(&s.client, &s.ns, "UnmanagedTokens").await;
    assert_eq!(
        warned.len(),
        2,
        "one Warning on each token of the workspace: {warned:?}"
    );
    assert!(warned.iter().all(|m| m.contains(&outside)), "{warned:?}");
    // The gauge is refreshed from the caches every 10 s.
    eventually(Duration::from_secs(30), "the gauge counts it", || async {
        let metrics = operator().await.get("/metrics")?.1;
        let counted = |l: &&str| {
            l.starts_with("tokenwarden_unmanaged_tokens ") && l.split(' ').nth(1) != Some("0")
        };
        metrics.lines().any(|l| counted(&l)).then_some(())
    })
    .await;
    assert_eq!(
        s.live_prefixes("ws-shared").await.len(),
        3,
        "reported, never revoked"
    );
    s.finish().await;
}

#[tokio::test]
async fn an_unmanaged_token_is_revoked_after_revoke_unmanaged_after_only() {
    let after = 10;
    let s = setup(
        "inv-revoke",
        &["ws-revoke"],
        json!({ "revokeUnmanagedAfter": format!("{after}s") }),
    )
    .await;
    s.token("t", "ws-revoke").await;
    let leaked = prefix_of(&s.platform.mint_directly("ws-revoke").await);
    s.wait_unmanaged("t", &[&leaked]).await;
    let seen = tokio::time::Instant::now();
    let revoked = eventually(WAIT, "the unmanaged token revoked", || async {
        let live = s.live_prefixes("ws-revoke").await;
        (!live.contains(&leaked)).then_some(tokio::time::Instant::now())
    })
    .await;
    assert!(
        revoked - seen >= Duration::from_secs(after - 2 * INTERVAL_SECONDS),
        "revoked {:?} after it was first reported: too early",
        revoked - seen
    );
    let wst = wait_version(&s.api, "t", 1, WAIT).await;
    let current = wst.status.unwrap().token_prefix.unwrap();
    assert_eq!(
        s.live_prefixes("ws-revoke").await,
        [current],
        "the managed token stays"
    );
    s.wait_unmanaged("t", &[]).await;
    let events = event_messages(&s.client, &s.ns, "UnmanagedTokenRevoked").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains(&leaked), "{events:?}");
    let audit = operator().await.audit_lines();
    let line = audit
        .iter()
        .find(|l| l["event"] == "revoked" && l["token_prefix"] == leaked.as_str())
        .unwrap_or_else(|| panic!("an audit line for {leaked}"));
    assert_eq!(line["workspace_id"], "ws-revoke");
    assert_eq!(line["status"], "success");
    s.finish().await;
}

#[tokio::test]
async fn a_failing_or_partial_listing_revokes_nothing() {
    let s = setup(
        "inv-partial",
        &["ws-partial"],
        json!({ "revokeUnmanagedAfter": "1s" }),
    )
    .await;
    s.token("t", "ws-partial").await;
    // Every listing from now on fails, then answers with a token left out.
    for fault in ["error500", "partial_list"] {
        let leaked = prefix_of(&s.platform.mint_directly("ws-partial").await);
        s.platform.fault(fault, Some(1000)).await;
        tokio::time::sleep(Duration::from_secs(5 * INTERVAL_SECONDS)).await;
        assert!(
            s.live_prefixes("ws-partial").await.contains(&leaked),
            "{fault}: nothing is revoked from a listing that cannot tell"
        );
        let wst = s.api.get("t").await.unwrap();
        assert_eq!(
            wst.status.unwrap().current_version,
            Some(1),
            "{fault}: nor is the served token taken for revoked"
        );
        // Listings answer again: now it goes.
        s.platform.fault("none", None).await;
        eventually(WAIT, "revoked once the listing is whole", || async {
            (!s.live_prefixes("ws-partial").await.contains(&leaked)).then_some(())
        })
        .await;
    }
    s.finish().await;
}

#[tokio::test]
async fn a_served_token_revoked_at_the_platform_is_replaced_without_waiting_for_its_schedule() {
    let s = setup("inv-served", &["ws-served"], json!({})).await;
    create(
        &s.api,
        "t",
        s.platform
            .spec("ws-served", json!({ "rotation": { "every": "720h" } })),
    )
    .await;
    let wst = wait_version(&s.api, "t", 1, WAIT).await;
    let served = wst.status.unwrap().token_prefix.unwrap();
    // Another tool (here: someone with a token of the workspace) revokes the served token.
    let other = s.platform.mint_directly("ws-served").await;
    let row = (s.platform.live("ws-served").await.into_iter())
        .find(|r| r.prefix == served)
        .expect("the served token is live");
    let requests_before = s.platform.platform.requests().len();
    let started = tokio::time::Instant::now();
    s.platform
        .revoke_directly("ws-served", &row.id, &other)
        .await;
    let wst = wait_version(&s.api, "t", 2, WAIT).await;
    let replaced_in = started.elapsed();
    let status = wst.status.unwrap();
    assert_ne!(status.token_prefix.as_deref(), Some(served.as_str()));
    assert!(
        s.live_prefixes("ws-served")
            .await
            .contains(status.token_prefix.as_ref().unwrap()),
        "the new token is live"
    );
    let warned = event_messages(&s.client, &s.ns, "ServedTokenRevoked").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("version 1"), "{warned:?}");
    let audit = operator().await.audit_lines();
    assert!(
        audit.iter().any(|l| l["event"] == "revoked"
            && l["status"] == "external"
            && l["token_version"] == "v1"
            && l["token_prefix"] == served.as_str()),
        "the audit trail says v1 was revoked outside"
    );
    let v1 = version_status(&s.api.get("t").await.unwrap(), 1).expect("v1 in status");
    assert_eq!(v1.state, tokenwarden::api::VersionState::Revoked);
    // Bounded: at most one listing per interval (plus the verification's) while it was
    // found and replaced, and one per interval after.
    let listings = |from: usize| {
        let requests = s.platform.platform.requests();
        (requests[from..].iter())
            .filter(|r| r.method == "GET" && r.path.ends_with("/tokens"))
            .count()
    };
    let during = listings(requests_before);
    let bound = (replaced_in.as_secs() / INTERVAL_SECONDS + 2) as usize;
    assert!(
        during <= bound,
        "{during} listings in {replaced_in:?}, more than {bound}"
    );
    let mark = s.platform.platform.requests().len();
    tokio::time::sleep(Duration::from_secs(5 * INTERVAL_SECONDS)).await;
    let steady = listings(mark);
    assert!(
        (3..=6).contains(&steady),
        "{steady} listings in {}s at one per {INTERVAL_SECONDS}s",
        5 * INTERVAL_SECONDS
    );
    s.finish().await;
}

#[tokio::test]
async fn a_tenant_cannot_shield_an_unmanaged_token_with_a_forged_secret() {
    // The tenant may write WorkspaceTokens and Secrets in its namespace, and has no issuer
    // for the victim's workspace at its platform. A Secret claiming the leaked token's
    // prefix, owned by a WorkspaceToken naming the victim's workspace, holds nothing of it.
    let s = setup("inv-shield", &["ws-victim"], json!({})).await;
    s.token("victim", "ws-victim").await;
    let leaked = s.platform.mint_directly("ws-victim").await;
    let prefix = prefix_of(&leaked);
    s.wait_unmanaged("victim", &[&prefix]).await;
    let cp = control_plane().await;
    let tenant_ns = tokenwarden_testenv::namespace(&s.client, "inv-tenant").await;
    support::tenant::grant_tenant(&s.client, &tenant_ns).await;
    let tenant = cp.unprivileged_client().await;
    let tenant_tokens: Api<WorkspaceToken> = Api::namespaced(tenant.clone(), &tenant_ns);
    let forged_owner = create(
        &tenant_tokens,
        "shield",
        json!({ "workspaceId": "ws-victim", "issuerRef": { "name": "nowhere" } }),
    )
    .await;
    let forged: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "shield-v1",
            "labels": {
                "app.kubernetes.io/managed-by": "tokenwarden",
                "tokenwarden.dev/token": "shield",
                "tokenwarden.dev/version": "1",
            },
            "ownerReferences": [{
                "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                "name": "shield", "uid": forged_owner.metadata.uid.clone().unwrap(),
                "controller": true,
            }],
        },
        "stringData": { "token": format!("{prefix}-forged-by-the-tenant") },
    }))
    .unwrap();
    let created = Api::<Secret>::namespaced(tenant, &tenant_ns)
        .create(&Default::default(), &forged)
        .await;
    // The chart's admission policy may refuse it; without one, the inventory still does not
    // count it.
    if created.is_ok() {
        tokio::time::sleep(Duration::from_secs(3 * INTERVAL_SECONDS)).await;
    }
    assert_eq!(s.unmanaged("victim").await, [prefix.as_str()]);
    dump(&s.client, &tenant_ns, None).await;
    s.finish().await;
}

#[tokio::test]
async fn a_refusal_that_was_not_a_revocation_costs_a_rotation_never_an_untracked_token() {
    // One listing answered 401 (forged on a plaintext path, or a platform's hiccup) while the
    // served token is in fact live: it is replaced, and then revoked for real, not forgotten.
    let s = setup("inv-forged", &["ws-forged"], json!({})).await;
    s.token("t", "ws-forged").await;
    let v1 = (s.api.get("t").await.unwrap().status.unwrap().token_prefix).unwrap();
    s.platform.fault("refuse_list", Some(1)).await;
    let wst = wait_version(&s.api, "t", 2, WAIT).await;
    let v2 = wst.status.unwrap().token_prefix.unwrap();
    eventually(WAIT, "v1 revoked at the platform", || async {
        let live = s.live_prefixes("ws-forged").await;
        (live == [v2.clone()]).then_some(())
    })
    .await;
    let audit = operator().await.audit_lines();
    assert!(
        audit.iter().any(|l| l["event"] == "revoked"
            && l["status"] == "success"
            && l["token_prefix"] == v1.as_str()),
        "the audit trail says v1 was revoked by tokenwarden, not elsewhere"
    );
    s.finish().await;
}
