//! Steady state and restarts write nothing: once every WorkspaceToken is converged, the API
//! server sees no mutating request from the operator, idle or after a crash and restart.

mod support;

use std::time::Duration;

use kube::api::Api;
use serde_json::json;
use support::*;
use tokenwarden::api::WorkspaceToken;

const TOKENS: usize = 20;

#[tokio::test]
async fn steady_state_and_operator_restart_write_nothing() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "steady").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let mut operator = Operator::start(cp, &[]);
    for i in 0..TOKENS {
        let spec = match i % 4 {
            0 => json!({ "workspaceId": format!("ws-{i}") }),
            1 => {
                json!({ "workspaceId": format!("ws-{i}"), "rotation": { "every": "1h", "jitter": "10m" } })
            }
            2 => {
                json!({ "workspaceId": format!("ws-{i}"), "rotation": { "schedule": "0 3 * * 1", "timeZone": "Europe/Berlin" },
                         "secretTemplate": { "labels": { "team": "a" }, "annotations": { "note": "x" } } })
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
    let restarted = Operator::start(cp, &[]);
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
