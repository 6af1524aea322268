//! Steady state and restarts write nothing: once every WorkspaceToken is converged, the API
//! server sees no mutating request from the operator, idle or after a crash and restart: not
//! for local tokens, nor for tokens of a TokenIssuer or a ClusterTokenIssuer (a restarted
//! operator waits for its issuer caches before it resolves anything).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::platform::{TestPlatform, merge};
use support::*;
use tokenwarden::api::{ClusterTokenIssuer, WorkspaceToken};

const TOKENS: usize = 20;

#[tokio::test]
async fn steady_state_and_operator_restart_write_nothing() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "steady").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let args = ["--cluster-resource-namespace", ns.as_str()];
    let mut operator = Operator::start(cp, &args);
    let platform = platform_with_issuers(&client, &ns).await;
    for i in 0..TOKENS {
        let spec = match i % 4 {
            0 => json!({ "workspaceId": format!("ws-{i}") }),
            1 => {
                json!({ "workspaceId": format!("ws-{i}"), "rotation": { "every": "1h", "jitter": "10m" } })
            }
            2 if i % 8 == 2 => platform.spec(&format!("ws-{i}"), json!({})),
            2 => {
                let cluster = json!({ "issuerRef": { "kind": "ClusterTokenIssuer", "name": ns } });
                platform.spec(&format!("ws-{i}"), cluster)
            }
            _ => {
                json!({ "workspaceId": format!("ws-{i}"), "environment": "prod", "token": { "encoding": "hex", "prefix": "tw_" } })
            }
        };
        create(&api, &format!("t{i}"), spec).await;
    }
    for i in 0..TOKENS {
        wait_version(&api, &format!("t{i}"), 1, Duration::from_secs(60)).await;
    }
    // One pass after the last status write lets every reconcile triggered by our own writes run.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let converged = mutating_requests(&client).await;
    // The counter sees real traffic: each token took a create, two Secrets and a status write.
    assert!(
        converged >= 4 * TOKENS as u64,
        "mutating requests counted: {converged}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = mutating_requests(&client).await;
    assert_eq!(idle - converged, 0, "mutating requests while idle");

    operator.kill();
    let restarted = Operator::start(cp, &args);
    eventually(
        Duration::from_secs(30),
        "restarted operator ready",
        || async { restarted.get("/readyz").filter(|(code, _)| *code == 200) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_restart = mutating_requests(&client).await;
    assert_eq!(
        after_restart - idle,
        0,
        "mutating requests caused by a restart"
    );
    for i in 0..TOKENS {
        let w = api.get(&format!("t{i}")).await.unwrap();
        assert_eq!(
            w.status.unwrap().current_version,
            Some(1),
            "t{i} was not rotated by the restart"
        );
    }
    dump(&client, &ns, Some(&restarted)).await;
}

/// The reference platform with every workspace `ws-<i>` the test uses, its TokenIssuer
/// `platform` in `ns`, and a ClusterTokenIssuer named `ns` selecting `ns` by a label.
async fn platform_with_issuers(client: &kube::Client, ns: &str) -> TestPlatform {
    let platform = TestPlatform::start().await;
    for i in 0..TOKENS {
        platform.create_workspace(&format!("ws-{i}")).await;
    }
    platform
        .admin_secret(client, ns, &platform.admin.clone())
        .await;
    let mut spec = platform.issuer_spec();
    merge(
        &mut spec,
        json!({ "namespaceSelector": { "matchLabels": { "restart-test": ns } } }),
    );
    let issuer: ClusterTokenIssuer = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "ClusterTokenIssuer",
        "metadata": { "name": ns }, "spec": spec
    }))
    .unwrap();
    Api::<ClusterTokenIssuer>::all(client.clone())
        .create(&PostParams::default(), &issuer)
        .await
        .unwrap();
    let label = json!({ "metadata": { "labels": { "restart-test": ns } } });
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    platform
}
