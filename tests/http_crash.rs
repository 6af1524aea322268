//! A real crash in the HTTP issuer's window: the operator is SIGKILLed after the platform
//! minted a token and before the versioned Secret holds it. Its own binary, so the only
//! operator reconciling is the one this test starts and kills.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(45);

#[tokio::test]
async fn a_crash_between_the_platform_answer_and_the_secret_leaves_no_live_token_nobody_holds() {
    // A real crash: a dedicated operator is SIGKILLed while the platform holds its mint call.
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "http-kill").await;
    let platform = TestPlatform::start().await;
    platform.create_workspace("ws-kill").await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let mut operator = Operator::start(cp, &[]);
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

    let restarted = Operator::start(cp, &[]);
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
