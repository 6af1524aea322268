//! Two replicas with `--leader-elect` against one control plane: only the Lease holder
//! writes; when it is killed the standby takes over within the lease duration, and no token
//! is minted twice across the handover.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::*;
use tokenwarden::api::WorkspaceToken;

const LEASE_SECONDS: u64 = 4;

fn holder_of(operator: &Operator) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    format!("{}_{}", host.trim(), operator.pid())
}

fn leader_gauge(operator: &Operator) -> Option<String> {
    let (_, metrics) = operator.get("/metrics")?;
    metrics
        .lines()
        .find(|l| l.starts_with("tokenwarden_leader "))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_without_double_rotation() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "ha").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        &ns,
        "--lease-duration-seconds",
        "4",
    ];
    let mut first = Operator::start(cp, &args);
    eventually(
        Duration::from_secs(30),
        "the first replica leads",
        || async { (lease_holder(&leases).await? == holder_of(&first)).then_some(()) },
    )
    .await;
    let second = Operator::start(cp, &args);
    eventually(Duration::from_secs(30), "the standby is ready", || async {
        second.get("/readyz").filter(|(code, _)| *code == 200)
    })
    .await;

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    for i in 0..5 {
        create(&api, &format!("t{i}"), json!({ "workspaceId": format!("ws-{i}"), "rotation": { "every": "3s", "gracePeriod": "1s" } })).await;
    }
    for i in 0..5 {
        wait_version(&api, &format!("t{i}"), 2, Duration::from_secs(60)).await;
    }
    assert!(second.audit_lines().is_empty(), "the standby wrote nothing");
    assert_eq!(leader_gauge(&first).as_deref(), Some("1"));
    assert_eq!(leader_gauge(&second).as_deref(), Some("0"));

    // Kill the leader mid-rotation: the standby takes the Lease once it expires.
    let killed = Instant::now();
    first.kill();
    eventually(Duration::from_secs(30), "the standby leads", || async {
        (lease_holder(&leases).await? == holder_of(&second)).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    let bound = Duration::from_secs(LEASE_SECONDS)
        + Duration::from_secs(LEASE_SECONDS) / 3
        + Duration::from_secs(1);
    assert!(
        takeover <= bound,
        "takeover took {takeover:?} (lease {LEASE_SECONDS}s)"
    );
    eprintln!(
        "ha: takeover {:.1}s after the leader was killed (lease {LEASE_SECONDS}s)",
        takeover.as_secs_f64()
    );

    // Rotation goes on under the new leader.
    let mut after = Vec::new();
    for i in 0..5 {
        let current = api
            .get(&format!("t{i}"))
            .await
            .unwrap()
            .status
            .unwrap()
            .current_version
            .unwrap();
        after
            .push(wait_version(&api, &format!("t{i}"), current + 1, Duration::from_secs(60)).await);
    }
    assert_eq!(leader_gauge(&second).as_deref(), Some("1"));

    // No version was minted twice across both replicas, and versions never skip.
    let mut minted = BTreeSet::new();
    for line in first.audit_lines().into_iter().chain(second.audit_lines()) {
        if line["event"] == "minted" {
            let key = (
                line["name"].as_str().unwrap().to_string(),
                line["token_version"].as_str().unwrap().to_string(),
            );
            assert!(minted.insert(key.clone()), "{key:?} minted twice");
        }
    }
    for w in &after {
        let name = w.metadata.name.clone().unwrap();
        let mut versions: Vec<u32> = minted
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v[1..].parse().unwrap())
            .collect();
        versions.sort();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(
            versions, expected,
            "{name}: versions minted in order, none skipped"
        );
    }
    dump(&client, &ns, Some(&second)).await;
}
