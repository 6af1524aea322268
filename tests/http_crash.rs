//! The HTTP issuer with an operator of the test's own: a real crash in the window between
//! the platform's answer and the versioned Secret (the operator is SIGKILLed there), and the
//! metrics of revocations that could not be made. Each test's operator watches only its
//! test's namespace, so it is the only one reconciling there and its metrics are its own.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(45);

/// A namespace of its own with the platform's admin Secret, and a platform with `workspace`.
async fn setup(
    prefix: &str,
    workspace: &str,
) -> (
    &'static tokenwarden_testenv::ControlPlane,
    kube::Client,
    String,
    TestPlatform,
) {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, prefix).await;
    let platform = TestPlatform::start().await;
    platform.create_workspace(workspace).await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    (cp, client, ns, platform)
}

#[tokio::test]
async fn a_crash_between_the_platform_answer_and_the_secret_leaves_no_live_token_nobody_holds() {
    // A real crash: a dedicated operator is SIGKILLed while the platform holds its mint call.
    let (cp, client, ns, platform) = setup("http-kill", "ws-kill").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let only_here = ["--namespace", ns.as_str()];
    let mut operator = Operator::start(cp, &only_here);
    let mut spec = platform.spec("ws-kill", json!({ "rotation": { "gracePeriod": "0s" } }));
    spec["issuer"]["http"]["timeoutSeconds"] = json!(60);
    create(&api, "t", spec).await;
    wait_version(&api, "t", 1, WAIT).await;

    platform.fault("hang_after_mint", Some(1)).await;
    request_rotation(&api, "t", "r1").await;
    eventually(WAIT, "the platform minted v2", || async {
        (platform.live("ws-kill").await.len() == 2).then_some(())
    })
    .await;
    operator.kill();
    let w = api.get("t").await.unwrap();
    assert!(
        w.annotations().contains_key("tokenwarden.dev/mint-intent"),
        "intent recorded before the call"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("t-v2")
            .await
            .unwrap()
            .is_none()
    );

    let restarted = Operator::start(cp, &only_here);
    wait_version(&api, "t", 2, Duration::from_secs(90)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "only the served token live", || async {
        let live = platform.live("ws-kill").await;
        let served =
            data(&secrets.get("t").await.ok()?, "token").map(|t| sha256_hex(t.as_bytes()))?;
        (live.len() == 1 && live[0].token_sha256 == served).then_some(())
    })
    .await;
    dump(&client, &ns, Some(&restarted)).await;
}

/// `tokenwarden_revocations_total` counts tokens revoked, not revocations that turned out
/// impossible (each of those is a `RevokeImpossible` Warning and a failed audit line).
#[tokio::test]
async fn a_revocation_that_turned_out_impossible_is_not_counted_as_one() {
    let (cp, client, ns, platform) = setup("http-uncounted", "ws-uncounted").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(cp, &["--namespace", ns.as_str()]);
    let spec = json!({ "rotation": { "gracePeriod": "1h" } });
    create(&api, "t", platform.spec("ws-uncounted", spec)).await;
    wait_version(&api, "t", 1, WAIT).await;
    request_rotation(&api, "t", "r1").await;
    wait_version(&api, "t", 2, WAIT).await;
    // Suspended, nothing restores the Secrets before the deletion pass finds them gone:
    // neither version has a token left to authenticate its revocation with.
    let suspend = json!({ "spec": { "suspend": true } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    eventually(WAIT, "suspended", || async {
        condition(&api, "t", "Ready")
            .await
            .filter(|(_, _, message)| message.contains("suspend"))
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in ["t-v1", "t-v2", "t"] {
        secrets
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    api.delete("t", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "WorkspaceToken gone", || async {
        api.get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    let impossible = eventually(WAIT, "RevokeImpossible for both versions", || async {
        let reasons = event_reasons(&client, &ns).await;
        let n = reasons.iter().filter(|r| *r == "RevokeImpossible").count();
        (n == 2).then_some(n)
    })
    .await;
    let (_, metrics) = operator.get("/metrics").expect("metrics");
    let revocations = metrics
        .lines()
        .find(|l| l.starts_with("tokenwarden_revocations_total "))
        .expect("tokenwarden_revocations_total");
    assert_eq!(
        revocations, "tokenwarden_revocations_total 0",
        "{impossible} impossible revocations, none counted as done"
    );
    dump(&client, &ns, Some(&operator)).await;
}
