//! Two replicas with `--leader-elect` against one control plane, twelve tokens rotating every
//! 3 s: only the Lease holder writes; it is SIGKILLed the moment it logs a mint (a rotation in
//! flight); the standby takes over within the lease duration, finishes what was half done,
//! and no version is minted twice, skipped or written with two tokens across the handover.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::invariants::{VersionLedger, call_off_and_settle};
use support::*;
use tokenwarden::api::WorkspaceToken;

const LEASE_SECONDS: u64 = 4;
const TOKENS: usize = 12;

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
    let ledger = VersionLedger::watch(&client, &ns);
    for i in 0..TOKENS {
        create(&api, &format!("t{i}"), json!({ "workspaceId": format!("ws-{i}"), "rotation": { "every": "3s", "gracePeriod": "1s" } })).await;
    }
    for i in 0..TOKENS {
        wait_version(&api, &format!("t{i}"), 2, Duration::from_secs(60)).await;
    }
    assert!(second.audit_lines().is_empty(), "the standby wrote nothing");
    assert_eq!(leader_gauge(&first).as_deref(), Some("1"));
    assert_eq!(leader_gauge(&second).as_deref(), Some("0"));

    // Kill the leader mid-rotation, right as it logs a mint: the standby takes the Lease once
    // it expires.
    let mints = |o: &Operator| {
        o.audit_lines()
            .iter()
            .filter(|l| l["event"] == "minted")
            .count()
    };
    let before = mints(&first);
    eventually(Duration::from_secs(30), "the leader mints", || async {
        (mints(&first) > before).then_some(())
    })
    .await;
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

    // Rotation goes on under the new leader. Status may be a version behind (the leader was
    // killed between a cutover and its status write), and the new leader's first pass may go
    // past the next version at once (the adopted one is already due): any later version.
    for i in 0..TOKENS {
        let current = api
            .get(&format!("t{i}"))
            .await
            .unwrap()
            .status
            .unwrap()
            .current_version
            .unwrap();
        wait_version_at_least(&api, &format!("t{i}"), current + 1, Duration::from_secs(60)).await;
    }
    assert_eq!(leader_gauge(&second).as_deref(), Some("1"));

    let (settled, _) = call_off_and_settle(&client, &ns, TOKENS, Duration::from_secs(60)).await;
    ledger.check_every(&settled);

    // No version was minted twice across both replicas (the ledger showed none skipped).
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
    dump(&client, &ns, Some(&second)).await;
}
