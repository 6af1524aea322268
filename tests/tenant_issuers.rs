//! What a tenant with `edit`-like rights in one namespace (WorkspaceTokens and Secrets, no
//! TokenIssuers) can make the operator do with credentials: nothing that sends one where the
//! tenant chooses. Every test acts as that identity and ends with a capture server, standing
//! where a tenant would like tokens to go, that saw no request at all. The chart's admission
//! policies are not installed here: these are the operator's own rules.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::platform::{TestPlatform, merge};
use support::tenant::{CaptureServer, grant_tenant};
use support::*;
use tokenwarden::api::{ClusterTokenIssuer, TokenIssuer, WorkspaceToken};

const WAIT: Duration = Duration::from_secs(60);

/// A namespace with the tenant Role, the platform with `workspace`, and the tenant's API.
struct Tenancy {
    admin: kube::Client,
    ns: String,
    tenant: Api<WorkspaceToken>,
    tenant_secrets: Api<Secret>,
    platform: TestPlatform,
    capture: CaptureServer,
}

async fn tenancy(prefix: &str, workspaces: &[&str]) -> Tenancy {
    let cp = control_plane().await;
    let admin = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&admin, prefix).await;
    grant_tenant(&admin, &ns).await;
    let platform = TestPlatform::start().await;
    for workspace in workspaces {
        platform.create_workspace(workspace).await;
    }
    let tenant_client = cp.unprivileged_client().await;
    Tenancy {
        tenant: Api::namespaced(tenant_client.clone(), &ns),
        tenant_secrets: Api::namespaced(tenant_client, &ns),
        admin,
        ns,
        platform,
        capture: CaptureServer::start(),
    }
}

impl Tenancy {
    /// The first Warning with `reason` whose message contains `about`, once there is one.
    async fn warning(&self, reason: &str, about: &str) -> String {
        eventually(WAIT, &format!("{reason} about {about}"), || async {
            event_messages(&self.admin, &self.ns, reason)
                .await
                .into_iter()
                .find(|n| n.contains(about))
        })
        .await
    }

    async fn finish(&self, operator: Option<&Operator>) {
        dump(&self.admin, &self.ns, operator).await;
        self.capture.assert_untouched();
    }
}

/// The inline issuer is gone: no field of a WorkspaceToken holds a URL or a Secret to send,
/// and a tenant may not create an issuer of its own.
#[tokio::test]
async fn a_tenant_cannot_name_a_url_or_an_admin_secret_for_the_operator_to_call() {
    let t = tenancy("tenant-inline", &["ws-a"]).await;
    let inline = wst(
        "steal",
        json!({ "workspaceId": "ws-a", "issuer": { "http": {
            "url": t.capture.url, "allowInsecureHttp": true,
            "adminTokenSecretRef": { "name": "any-secret", "key": "token" }
        } } }),
    );
    match t.tenant.create(&PostParams::default(), &inline).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("spec.issuer"), "{}", s.message);
            assert!(
                s.message.contains("issuerRef"),
                "says where it went: {}",
                s.message
            );
        }
        other => panic!("an inline issuer was accepted: {other:?}"),
    }
    let mut spec = t.platform.issuer_spec();
    merge(&mut spec, json!({ "http": { "url": t.capture.url } }));
    let issuer: TokenIssuer = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenIssuer",
        "metadata": { "name": "mine" }, "spec": spec
    }))
    .unwrap();
    let tenant_issuers: Api<TokenIssuer> = Api::namespaced(t.tenant.clone().into_client(), &t.ns);
    match tenant_issuers.create(&PostParams::default(), &issuer).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("a tenant created a TokenIssuer: {other:?}"),
    }
    t.finish(None).await;
}

/// A Secret forged as a record of the tenant's own token (tokenwarden's labels, an
/// ownerReference to it, no token, the capture server as `issuer-url`, or the identity of the
/// real issuer) is named in a Warning and deleted; nothing is sent anywhere, and the current
/// token is not revoked in its place.
#[tokio::test]
async fn a_forged_record_without_the_admission_policy_sends_nothing_and_is_named() {
    let t = tenancy("tenant-forged", &["ws-f"]).await;
    let operator = Operator::start(control_plane().await, &["--namespace", t.ns.as_str()]);
    t.platform
        .admin_secret(&t.admin, &t.ns, &t.platform.admin.clone())
        .await;
    create(&t.tenant, "t", t.platform.spec("ws-f", json!({}))).await;
    wait_version(&t.tenant, "t", 1, WAIT).await;
    let owner = t.tenant.get("t").await.unwrap();
    let issuer = Api::<TokenIssuer>::namespaced(t.admin.clone(), &t.ns)
        .get("platform")
        .await
        .unwrap();
    let forged = |version: u32, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("t-v{version}"),
                "labels": {
                    "app.kubernetes.io/managed-by": "tokenwarden",
                    "tokenwarden.dev/token": "t",
                    "tokenwarden.dev/version": version.to_string(),
                },
                "ownerReferences": [{
                    "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                    "name": "t", "uid": owner.uid().unwrap(), "controller": true
                }]
            },
            "stringData": data,
            "immutable": true
        }))
        .unwrap()
    };
    let records = [
        forged(
            5,
            json!({ "token-version": "v5", "issuer-url": t.capture.url }),
        ),
        forged(
            6,
            json!({ "token-version": "v6", "issuer-kind": "TokenIssuer",
                    "issuer-name": "platform", "issuer-uid": issuer.uid().unwrap() }),
        ),
    ];
    for record in &records {
        t.tenant_secrets
            .create(&PostParams::default(), record)
            .await
            .expect("the tenant may create Secrets (no admission policy here)");
    }
    for name in ["t-v5", "t-v6"] {
        let note = t.warning("UntrustedRecord", name).await;
        assert!(note.contains("nothing is sent"), "{note}");
        wait_secret_gone(&t.tenant_secrets, name, &format!("{name} deleted"), WAIT).await;
    }
    let live = t.platform.live("ws-f").await;
    assert_eq!(
        live.len(),
        1,
        "the served token was not revoked in the forgery's place"
    );
    let status = t.tenant.get("t").await.unwrap().status.unwrap();
    assert_eq!(status.current_version, Some(1));
    assert_eq!(Some(&live[0].token_sha256), status.token_sha256.as_ref());
    t.finish(Some(&operator)).await;
}

/// A ClusterTokenIssuer serves only the namespaces its selector picks and the workspaces it
/// lists (or its namespace label names), and reads its admin Secret only from the operator's
/// `--cluster-resource-namespace`, never from the tenant's namespace. (The operator here
/// watches one namespace: ClusterTokenIssuer status is not its to write.)
#[tokio::test]
async fn a_cluster_issuer_mints_only_for_the_namespaces_and_workspaces_it_allows() {
    let t = tenancy("tenant-cluster", &["ws-ok", "ws-other"]).await;
    let system = tokenwarden_testenv::namespace(&t.admin, "tenant-cluster-sys").await;
    let operator = Operator::start(
        control_plane().await,
        &[
            "--namespace",
            t.ns.as_str(),
            "--cluster-resource-namespace",
            system.as_str(),
        ],
    );
    let name = format!("shared-{}", t.ns);
    let mut spec = t.platform.issuer_spec();
    merge(
        &mut spec,
        json!({
            "workspaceIds": ["ws-ok", "ws-other"],
            "namespaceSelector": { "matchLabels": { "tokenwarden.dev/platform": "enabled" } },
            "workspaceIdNamespaceLabel": "tokenwarden.dev/workspace-id"
        }),
    );
    let cluster: Api<ClusterTokenIssuer> = Api::all(t.admin.clone());
    let issuer: ClusterTokenIssuer = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "ClusterTokenIssuer",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    cluster
        .create(&PostParams::default(), &issuer)
        .await
        .unwrap();
    // The admin token in the tenant's namespace only: never read from there.
    t.platform
        .admin_secret_only(&t.admin, &t.ns, &t.platform.admin.clone())
        .await;
    let reference = json!({ "issuerRef": { "kind": "ClusterTokenIssuer", "name": name } });
    create(&t.tenant, "ok", t.platform.spec("ws-ok", reference.clone())).await;
    create(
        &t.tenant,
        "other",
        t.platform.spec("ws-other", reference.clone()),
    )
    .await;
    let outside = reason_of(&t.tenant, "ok", "IssuerNotAllowed").await;
    assert!(outside.contains("namespaceSelector"), "{outside}");

    // Selected (the namespace's relabelling wakes the token), its workspace label names ws-ok
    // only; the admin Secret is looked for in the cluster resource namespace alone.
    let namespaces: Api<Namespace> = Api::all(t.admin.clone());
    let labels = json!({ "metadata": { "labels": {
        "tokenwarden.dev/platform": "enabled", "tokenwarden.dev/workspace-id": "ws-ok"
    } } });
    namespaces
        .patch(&t.ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    // An operator of one namespace checks a ClusterTokenIssuer's admin Secret when it mints.
    let missing = reason_of(&t.tenant, "ok", "AdminSecretMissing").await;
    assert!(
        missing.contains(&system),
        "names where it looked: {missing}"
    );
    assert!(t.platform.live("ws-ok").await.is_empty(), "nothing minted");

    t.platform
        .admin_secret_only(&t.admin, &system, &t.platform.admin.clone())
        .await;
    wait_version(&t.tenant, "ok", 1, WAIT).await;
    let label = reason_of(&t.tenant, "other", "IssuerNotAllowed").await;
    assert!(label.contains("tokenwarden.dev/workspace-id"), "{label}");
    assert!(
        t.platform.live("ws-other").await.is_empty(),
        "nothing minted for ws-other"
    );
    assert_eq!(t.platform.live("ws-ok").await.len(), 1);

    // A workspace the issuer does not list is refused even where the label would allow it.
    let relabel =
        json!({ "metadata": { "labels": { "tokenwarden.dev/workspace-id": "ws-listed-not" } } });
    namespaces
        .patch(&t.ns, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    create(
        &t.tenant,
        "unlisted",
        t.platform.spec("ws-listed-not", reference),
    )
    .await;
    let unlisted = reason_of(&t.tenant, "unlisted", "IssuerNotAllowed").await;
    assert!(unlisted.contains("workspaceIds"), "{unlisted}");
    cluster
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    t.finish(Some(&operator)).await;
}

/// A version is revoked only through the issuer object that minted it (kind, name and uid on
/// its record): once that object is gone, even a new one of the same name, pointing anywhere,
/// is not asked; the version is RevokeImpossible and said so.
#[tokio::test]
async fn a_version_whose_issuer_object_is_gone_is_sent_nowhere() {
    let t = tenancy("tenant-gone", &["ws-g"]).await;
    let operator = Operator::start(control_plane().await, &["--namespace", t.ns.as_str()]);
    t.platform
        .admin_secret(&t.admin, &t.ns, &t.platform.admin.clone())
        .await;
    t.platform
        .issuer(&t.admin, &t.ns, "second", json!({}))
        .await;
    let spec = json!({ "rotation": { "gracePeriod": "0s" } });
    create(&t.tenant, "t", t.platform.spec("ws-g", spec)).await;
    wait_version(&t.tenant, "t", 1, WAIT).await;

    // The issuer that minted v1 goes; one of the same name now points at the capture server.
    let issuers: Api<TokenIssuer> = Api::namespaced(t.admin.clone(), &t.ns);
    issuers
        .delete("platform", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "the issuer gone", || async {
        issuers
            .get_opt("platform")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let elsewhere = json!({ "http": { "url": t.capture.url } });
    t.platform
        .issuer(&t.admin, &t.ns, "platform", elsewhere)
        .await;

    // The tenant moves the token to the second issuer: v2 is minted there, v1 is not sent
    // to the new "platform".
    let moved = json!({ "spec": { "issuerRef": { "name": "second" } } });
    t.tenant
        .patch("t", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap();
    wait_version(&t.tenant, "t", 2, WAIT).await;
    let note = t.warning("RevokeImpossible", "version 1").await;
    assert!(note.contains("TokenIssuer/platform"), "{note}");
    assert!(note.contains("is gone"), "{note}");
    assert_eq!(
        t.platform.live("ws-g").await.len(),
        2,
        "v1 stays live at the platform for a person to revoke, as the Warning says"
    );
    t.finish(Some(&operator)).await;
}

/// The Ready condition's reason once it is `reason`; returns its message.
async fn reason_of(api: &Api<WorkspaceToken>, name: &str, reason: &str) -> String {
    let (status, _, message) = eventually(WAIT, &format!("{name} {reason}"), || async {
        condition(api, name, "Ready")
            .await
            .filter(|(_, r, _)| r == reason)
    })
    .await;
    assert_eq!(status, "False");
    message
}

/// Who minted a version is what status recorded, which a tenant cannot write: a tenant who
/// moves its token to another issuer and then deletes the old version's Secret does not get
/// that version "revoked" at the new issuer (where the current token would find nothing and
/// call it done). It stays live where it was minted, said in a RevokeImpossible Warning.
#[tokio::test]
async fn a_lost_record_after_a_change_of_issuer_is_never_revoked_at_the_new_one() {
    let t = tenancy("tenant-moved", &["ws-m"]).await;
    let operator = Operator::start(control_plane().await, &["--namespace", t.ns.as_str()]);
    t.platform
        .admin_secret(&t.admin, &t.ns, &t.platform.admin.clone())
        .await;
    let other = TestPlatform::start().await;
    other.create_workspace("ws-m").await;
    let mut elsewhere = other.issuer_spec();
    merge(
        &mut elsewhere,
        json!({ "http": { "adminTokenSecretRef": { "name": "other-admin" } } }),
    );
    t.platform.issuer(&t.admin, &t.ns, "other", elsewhere).await;
    let admin: Secret = serde_json::from_value(json!({
        "metadata": { "name": "other-admin" }, "stringData": { "token": other.admin }
    }))
    .unwrap();
    Api::<Secret>::namespaced(t.admin.clone(), &t.ns)
        .create(&PostParams::default(), &admin)
        .await
        .unwrap();
    let spec = json!({ "rotation": { "gracePeriod": "1h" } });
    create(&t.tenant, "t", t.platform.spec("ws-m", spec)).await;
    wait_version(&t.tenant, "t", 1, WAIT).await;

    let moved = json!({ "spec": { "issuerRef": { "name": "other" } } });
    t.tenant
        .patch("t", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap();
    wait_version(&t.tenant, "t", 2, WAIT).await;
    t.tenant_secrets
        .delete("t-v1", &DeleteParams::default())
        .await
        .unwrap();
    let note = t.warning("RevokeImpossible", "version 1").await;
    assert!(note.contains("no token is left"), "{note}");
    assert_eq!(
        t.platform.live("ws-m").await.len(),
        1,
        "v1 live where it was minted"
    );
    assert_eq!(
        other.live("ws-m").await.len(),
        1,
        "only v2 at the new issuer"
    );
    t.finish(Some(&operator)).await;
}

/// The intent of a mint (which decides what unheld platform tokens of its window a later pass
/// revokes) lives in status, which only the operator writes: a tenant writing the old
/// annotation around the creation of a token no WorkspaceToken holds (a workspace's
/// registration token, say) gets nothing revoked.
#[tokio::test]
async fn a_forged_mint_intent_revokes_nothing() {
    let t = tenancy("tenant-intent", &["ws-i"]).await;
    let operator = Operator::start(control_plane().await, &["--namespace", t.ns.as_str()]);
    t.platform
        .admin_secret(&t.admin, &t.ns, &t.platform.admin.clone())
        .await;
    let spec = json!({ "rotation": { "gracePeriod": "0s" } });
    create(&t.tenant, "t", t.platform.spec("ws-i", spec)).await;
    wait_version(&t.tenant, "t", 1, WAIT).await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(2);
    let registration = t.platform.mint_directly("ws-i").await;
    let forged = format!(
        "v2@{}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let intent = json!({ "metadata": { "annotations": {
        "tokenwarden.dev/mint-intent": forged, "tokenwarden.dev/rotate": "after-forgery"
    } } });
    t.tenant
        .patch("t", &PatchParams::default(), &Patch::Merge(&intent))
        .await
        .unwrap();
    wait_version(&t.tenant, "t", 2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let registration_sha = tokenwarden::token::sha256_hex(registration.as_bytes());
    let live = t.platform.live("ws-i").await;
    assert!(
        live.iter().any(|r| r.token_sha256 == registration_sha),
        "the unheld token the forged intent pointed at is still live"
    );
    assert_eq!(live.len(), 2, "v2 and the registration token");
    t.finish(Some(&operator)).await;
}
