//! The control plane fails under the operator: kube-apiserver or etcd is killed and restarted
//! mid-convergence, and a watch resumed after etcd compaction gets 410 Gone. Every time the
//! operator converges (the invariants of `support::invariants` hold for every token) and then
//! writes nothing more.
//!
//! The cluster also goes back in time: etcd restored from a backup taken before some
//! rotations, under a running operator.
//!
//! Each test starts a control plane of its own (they get restarted), one test at a time.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::invariants::{assert_consistent, assert_quiet, is_settled, wait_all};
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden_testenv::ControlPlane;

const CONVERGE: Duration = Duration::from_secs(180);
const QUIET: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn own_control_plane() -> ControlPlane {
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .expect("control plane start")
        .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
    install_crd(&cp.admin_client().await).await;
    cp
}

fn token_spec(i: usize) -> serde_json::Value {
    json!({ "workspaceId": format!("ws-{i}"), "rotation": { "gracePeriod": "1s" } })
}

/// How many times the operator logged a failed watch, for each watch (its target and kind):
/// each retries with backoff, not in a loop.
fn watch_failures(operator: &Operator) -> std::collections::BTreeMap<String, usize> {
    let mut failures = std::collections::BTreeMap::new();
    let log = std::fs::read_to_string(&operator.stderr).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("watch failed")) {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let watch = format!(
            "{} {} {}",
            entry["target"], fields["message"], fields["kind"]
        );
        *failures.entry(watch).or_default() += 1;
    }
    failures
}

fn signal(operator: &Operator, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &operator.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {}", operator.pid());
}

/// Creates `count` tokens, kills `process` once `count / 4` are Ready, brings it back after
/// `down`, and checks convergence, the invariants and the quiet afterwards.
async fn converges_across_a_restart_of(process: &str, count: usize, down: Duration) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cp = own_control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, &format!("restart-{process}")).await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(&cp, &["--namespace", &ns]);

    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..count {
                // Creates that meet the outage are retried: they are the user's, not the fault's.
                // AlreadyExists: the create landed but the outage cut its answer.
                loop {
                    match api
                        .create(&Default::default(), &wst(&format!("t{i}"), token_spec(i)))
                        .await
                    {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        })
    };
    eventually(CONVERGE, "a quarter of the tokens Ready", || async {
        let list = api.list(&Default::default()).await.ok()?;
        (list.items.iter().filter(|w| is_settled(w)).count() >= count / 4).then_some(())
    })
    .await;

    let failures_before = watch_failures(&operator);
    cp.kill_process(process);
    tokio::time::sleep(down).await;
    cp.start_process(process)
        .await
        .unwrap_or_else(|e| panic!("{process} back: {e}"));
    let failures_after = watch_failures(&operator);
    let during = |watch: &String| failures_after[watch] - failures_before.get(watch).unwrap_or(&0);
    let most = failures_after.keys().map(during).max().unwrap_or(0);
    let log = std::fs::read_to_string(&operator.stderr).unwrap_or_default();
    assert!(
        !log.contains("behind what the watches saw"),
        "a restart of {process} is no restore: no watch may list again for it"
    );
    eprintln!("{process} down for {down:?}: {failures_after:?} failed watches logged");
    // client-go's backoff (0.8 s doubling, 30 s cap): at most 4 tries of one watch in 5 s, a
    // handful, not a spin.
    assert!(
        most <= 5,
        "{most} failures of one watch during a {down:?} outage: retried without backoff"
    );

    tokio::time::timeout(CONVERGE, creator)
        .await
        .expect("every create done within the convergence bound")
        .expect("creator");
    wait_all(&api, count, CONVERGE, "every token Ready at v1", |w| {
        is_settled(w) && w.status.as_ref().and_then(|s| s.current_version) == Some(1)
    })
    .await;
    assert_consistent(&client, &ns).await;
    assert_quiet(&client, QUIET).await;
    dump(&client, &ns, Some(&operator)).await;
    cp.stop();
}

#[tokio::test]
async fn an_api_server_restart_mid_convergence_converges_and_then_stays_quiet() {
    converges_across_a_restart_of("kube-apiserver", 40, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_etcd_restart_mid_convergence_converges_and_then_stays_quiet() {
    converges_across_a_restart_of("etcd", 40, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_watch_resumed_after_compaction_gets_410_relists_and_misses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cp = own_control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "gone").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(&cp, &["--namespace", &ns]);
    for i in 0..8 {
        create(&api, &format!("t{i}"), token_spec(i)).await;
    }
    wait_all(&api, 8, CONVERGE, "the first tokens Ready", is_settled).await;
    let drifted_hash = assert_consistent(&client, &ns).await["t5"].clone();

    // Frozen, the operator holds its watches at old resourceVersions. The API server restarts
    // (so those connections are gone), the cluster changes, and etcd compacts its history.
    signal(&operator, "-STOP");
    cp.kill_process("kube-apiserver");
    cp.start_process("kube-apiserver")
        .await
        .expect("kube-apiserver back");
    for i in 8..12 {
        create(&api, &format!("t{i}"), token_spec(i)).await;
    }
    for i in 0..4 {
        request_rotation(&api, &format!("t{i}"), "after-gone").await;
    }
    secrets
        .delete("t5", &DeleteParams::default())
        .await
        .expect("delete S of t5");
    api.delete("t6", &DeleteParams::default())
        .await
        .expect("delete t6");
    let compacted_at = cp.compact_etcd().expect("compact etcd");
    eprintln!("etcd compacted at revision {compacted_at}");
    signal(&operator, "-CONT");

    let settled = wait_all(
        &api,
        11,
        CONVERGE,
        "every change seen after the relist",
        |w| {
            let name = w.metadata.name.as_deref().unwrap_or("");
            let rotated = ["t0", "t1", "t2", "t3"].contains(&name);
            let want = if rotated { 2 } else { 1 };
            is_settled(w) && w.status.as_ref().and_then(|s| s.current_version) == Some(want)
        },
    )
    .await;
    assert!(
        settled
            .iter()
            .all(|w| w.metadata.name.as_deref() != Some("t6")),
        "t6 deleted"
    );
    // t6 minted locally: nothing to revoke, so no finalizer; its Secrets go with it through
    // their ownerReference, which kube-controller-manager's garbage collector follows once
    // its own watches are back (else its two deletes land in the quiet window below).
    eventually(CONVERGE, "t6's Secrets collected", || async {
        let left = secrets
            .list(&ListParams::default().labels("tokenwarden.dev/token=t6"))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    let served = assert_consistent(&client, &ns).await;
    assert_eq!(
        served["t5"], drifted_hash,
        "t5's S restored with the same token, not a new one"
    );
    let gone = std::fs::read_to_string(&operator.stderr).unwrap_or_default();
    assert!(
        gone.lines()
            .any(|l| l.contains("watch failed") && l.contains("too old resource version")),
        "a watch got 410 Gone (else this test injected no fault); see {}",
        operator.stderr.display()
    );
    assert_quiet(&client, QUIET).await;
    dump(&client, &ns, Some(&operator)).await;
    cp.stop();
}

/// Backup at v1; rotations to v2 then v3 (each previous one revoked at the platform); a
/// consumer holds v3's token; restore. The cluster serves v1 again, which the platform no
/// longer accepts: the inventory finds it revoked and a new version replaces it, numbered
/// after every version the operator saw (v4, never a second v2); v3's token, live and held
/// by no Secret any more, is reported unmanaged, so whoever restores knows a consumer may
/// still use it.
///
/// The Secret watch lists the restored cluster 3 s late (failpoint): meanwhile the
/// WorkspaceToken cache shows the backup's status beside the Secret index's future S-v3, and
/// no pass may plan on that (one that did wrote [3, 1] into the restored status).
#[tokio::test]
async fn a_cluster_restored_from_an_older_etcd_backup_serves_a_live_token_again_and_reuses_no_version()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cp = own_control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "restore").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let platform = support::platform::TestPlatform::start().await;
    platform.create_workspace("ws-restore").await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    let late = [(
        tokenwarden::failpoint::ENV,
        tokenwarden::failpoint::SECRET_RELIST_LATE,
    )];
    let args = ["--namespace", &ns, "--inventory-interval", "2s"];
    let operator = Operator::start_with_env(&cp, cp.admin_kubeconfig(), &args, &late);
    let spec = json!({ "rotation": { "every": "720h", "gracePeriod": "1s" } });
    create(&api, "t", platform.spec("ws-restore", spec)).await;
    let prefix_at = |w: &WorkspaceToken| w.status.as_ref().and_then(|s| s.token_prefix.clone());
    let v1 = prefix_at(&wait_version(&api, "t", 1, CONVERGE).await).unwrap();

    let backup = tempfile::tempdir().expect("backup dir");
    let backup = backup.path().join("etcd");
    cp.snapshot_etcd(&backup).await.expect("etcd backup");

    let live = |prefix: String| {
        let platform = &platform;
        async move {
            let rows = platform.live("ws-restore").await;
            rows.iter().any(|r| r.prefix == prefix)
        }
    };
    request_rotation(&api, "t", "r1").await;
    let v2 = prefix_at(&wait_version(&api, "t", 2, CONVERGE).await).unwrap();
    eventually(CONVERGE, "v1 revoked at the platform", || async {
        (!live(v1.clone()).await).then_some(())
    })
    .await;
    request_rotation(&api, "t", "r2").await;
    let v3 = prefix_at(&wait_version(&api, "t", 3, CONVERGE).await).unwrap();
    eventually(CONVERGE, "v2 revoked at the platform", || async {
        (!live(v2.clone()).await).then_some(())
    })
    .await;
    // A consumer read v3 from S (a pod's mounted file, an env var).
    let s = secrets.get("t").await.unwrap();
    assert_eq!(prefix_of(&data(&s, "token").unwrap()), v3);

    cp.restore_etcd(&backup).await.expect("etcd restore");
    // The backup's status knows v1 only. The operator may already have replaced v1 by the
    // time this reads (v4; the first run of this check after a faster operator saw v4), but it
    // never brings back a record of v2 or v3.
    let restored = api.get("t").await.unwrap();
    let recorded: Vec<u32> = (restored.status.iter())
        .flat_map(|s| &s.versions)
        .map(|v| v.version)
        .collect();
    assert!(
        recorded.contains(&1) && !recorded.contains(&2) && !recorded.contains(&3),
        "the cluster is back at the backup: {recorded:?}"
    );

    let replaced = wait_version(&api, "t", 4, CONVERGE).await;
    let v4 = prefix_at(&replaced).unwrap();
    assert!(live(v4.clone()).await, "the new served token is live");
    let served = data(&secrets.get("t").await.unwrap(), "token").unwrap();
    assert_eq!(prefix_of(&served), v4);
    for reused in ["t-v2", "t-v3"] {
        assert!(
            secrets.get_opt(reused).await.unwrap().is_none(),
            "{reused}: no version number means a second token"
        );
    }
    let status = replaced.status.unwrap();
    let v1_state = status
        .versions
        .iter()
        .find(|v| v.version == 1)
        .map(|v| v.state);
    assert_eq!(v1_state, Some(tokenwarden::api::VersionState::Revoked));
    let unmanaged = eventually(CONVERGE, "v3 reported unmanaged", || async {
        let w = api.get("t").await.ok()?;
        let listed: Vec<String> = (w.status?.unmanaged_tokens.into_iter())
            .map(|u| u.prefix)
            .collect();
        listed.contains(&v3).then_some(listed)
    })
    .await;
    assert_eq!(
        unmanaged,
        [v3.as_str()],
        "only v3: v4 is ours, v1 and v2 are gone"
    );
    assert!(
        live(v3.clone()).await,
        "reported, not revoked: a consumer may still use it"
    );
    let warned = event_messages(&client, &ns, "ServedTokenRevoked").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    let unmanaged_warned = event_messages(&client, &ns, "UnmanagedTokens").await;
    assert!(
        unmanaged_warned.iter().any(|m| m.contains(&v3)),
        "{unmanaged_warned:?}"
    );
    let log = std::fs::read_to_string(&operator.stderr).unwrap_or_default();
    assert!(
        log.contains("listing everything again"),
        "the watches listed the restored cluster again; see {}",
        operator.stderr.display()
    );
    let audit = operator.audit_lines();
    assert!(audit.iter().any(|l| l["event"] == "revoked"
        && l["status"] == "external"
        && l["token_version"] == "v1"));
    dump(&client, &ns, Some(&operator)).await;
    cp.stop();
}

fn prefix_of(token: &str) -> String {
    token.chars().take(8).collect()
}
