//! A concurrent writer on the same WorkspaceTokens: a client that updates each one every
//! 20 ms (GET, change a label, PUT with the resourceVersion it read, as kubectl edit or a
//! GitOps controller would), through creation, rotation and deletion. Its updates race the
//! operator's own writes to the same objects (the writer's PUTs lose some of those races).
//! The operator's writes guard only what they depend on (the finalizer list, by a JSON Patch
//! `test`), or fall back when a whole-object precondition loses (status is applied on the
//! resourceVersion the pass left; on a 409 one read shows the object did not go back, and
//! status is applied as rendered), so a writer of labels never makes them fail: on a slow
//! machine a precondition without that fallback lost six races in a row and the token went
//! Degraded. Every token converges, no condition or Warning ever reports a
//! conflict, no version is minted twice, and once the writer stops the operator writes
//! nothing. Run it with the operator and the API server on one core (`taskset -c 0`) to see
//! it hold where round trips are slower than the writer's period.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::invariants::{assert_consistent, assert_quiet, is_settled, wait_all};
use support::*;
use tokenwarden::api::WorkspaceToken;

const TOKENS: usize = 12;
const WAIT: Duration = Duration::from_secs(120);

/// What the writers saw: their own updates, the races they lost (a PUT refused with 409
/// because someone else wrote the object since their GET), and any condition that reported
/// a conflict.
#[derive(Default)]
struct Writers {
    stop: AtomicBool,
    updates: AtomicU64,
    races_lost: AtomicU64,
    conflict_conditions: AtomicU64,
}

async fn write_until_stopped(api: Api<WorkspaceToken>, name: String, seen: Arc<Writers>) {
    let mut seq = 0u64;
    while !seen.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(Some(mut w)) = api.get_opt(&name).await else {
            continue;
        };
        let says_conflict = w.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "Conflict" || c.message.contains("409"))
        });
        if says_conflict {
            seen.conflict_conditions.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
        w.metadata
            .labels
            .get_or_insert_default()
            .insert("example.com/writer-seq".into(), seq.to_string());
        // The writer's own 409s (it lost a race) are simply retried with a fresh read.
        match api.replace(&name, &PostParams::default(), &w).await {
            Ok(_) => seen.updates.fetch_add(1, Ordering::Relaxed),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                seen.races_lost.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => 0,
        };
    }
}

fn conflicts_met(operator: &Operator) -> u64 {
    let (_, metrics) = operator.get("/metrics").expect("metrics");
    metrics
        .lines()
        .find(|l| l.starts_with("tokenwarden_reconcile_errors_total{error=\"Conflict\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_concurrent_writer_of_labels_never_makes_the_operators_writes_fail() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "conflicts").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(cp, &["--namespace", &ns]);
    let seen = Arc::new(Writers::default());
    let writers: Vec<_> = (0..TOKENS)
        .map(|i| {
            tokio::spawn(write_until_stopped(
                api.clone(),
                format!("t{i}"),
                seen.clone(),
            ))
        })
        .collect();

    for i in 0..TOKENS {
        // The half deleted below keeps its Secrets: its finalizer is added and removed under
        // fire (a local token under Revoke has none to race over).
        let policy = if i < TOKENS / 2 { "Retain" } else { "Revoke" };
        let spec = json!({ "workspaceId": format!("ws-{i}"), "deletionPolicy": policy,
            "rotation": { "gracePeriod": "1s" } });
        create(&api, &format!("t{i}"), spec).await;
    }
    wait_all(&api, TOKENS, WAIT, "every token Ready at v1", |w| {
        is_settled(w) && w.status.as_ref().and_then(|s| s.current_version) == Some(1)
    })
    .await;

    for i in 0..TOKENS {
        request_rotation(&api, &format!("t{i}"), "under-fire").await;
    }
    wait_all(
        &api,
        TOKENS,
        WAIT,
        "every token rotated to v2, v1 revoked",
        |w| is_settled(w) && w.status.as_ref().and_then(|s| s.current_version) == Some(2),
    )
    .await;

    let deleted = TOKENS / 2;
    for i in 0..deleted {
        api.delete(&format!("t{i}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_all(
        &api,
        TOKENS - deleted,
        WAIT,
        "the deleted tokens gone",
        |_| true,
    )
    .await;

    seen.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let conflicts = conflicts_met(&operator);
    let races_lost = seen.races_lost.load(Ordering::Relaxed);
    eprintln!(
        "conflicts: the writers made {} updates and lost {races_lost} races to the operator's \
         writes; the operator met {conflicts} conflicts",
        seen.updates.load(Ordering::Relaxed)
    );
    assert!(
        races_lost > 0,
        "the writers' updates raced the operator's own writes (else this test injected no fault)"
    );
    assert_eq!(
        conflicts, 0,
        "a writer of labels never makes a write of the operator fail"
    );
    assert_eq!(
        seen.conflict_conditions.load(Ordering::Relaxed),
        0,
        "no condition ever reported the conflict"
    );
    let reasons = event_reasons(&client, &ns).await;
    assert!(
        !reasons.iter().any(|r| r == "Conflict"),
        "no Warning event for a conflict: {reasons:?}"
    );

    let mut minted = BTreeSet::new();
    for line in operator.audit_lines() {
        if line["event"] == "minted" {
            let key = (line["name"].to_string(), line["token_version"].to_string());
            assert!(minted.insert(key.clone()), "{key:?} minted twice");
        }
    }
    assert_eq!(
        minted.len(),
        TOKENS * 2,
        "each token minted v1 and v2, once each"
    );
    assert_consistent(&client, &ns).await;
    assert_quiet(&client, Duration::from_secs(10)).await;
    dump(&client, &ns, Some(&operator)).await;
}
