//! Upgrades never rotate. The previous release (hack/previous: a pinned commit of this
//! repository, built from its history, with its own CRDs) runs a namespace of tokens: local
//! and issued, one Retiring inside its grace period. Then, as an upgrade does it, that
//! operator stops, this tree's CRDs are applied over the old ones, and this build starts: no
//! token rotates or is revoked, no Secret is written, the platform sees no call that mints or
//! revokes, the only writes are to status, and every token is Ready.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::invariants::{assert_quiet, wait_all};
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden_testenv::ControlPlane;

const WAIT: Duration = Duration::from_secs(60);

/// The previous release's directory: `tokenwarden` and `crds/`.
fn previous_release() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/previous/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run hack/previous/build.sh");
    assert!(out.status.success(), "hack/previous/build.sh failed");
    let dir = String::from_utf8(out.stdout).expect("a path");
    PathBuf::from(dir.lines().last().expect("the release dir").trim())
}

/// `kubectl apply --server-side` of every CRD in `dir`, as an upgrade applies them.
fn apply_crds(cp: &ControlPlane, dir: &std::path::Path) {
    let out = (cp.kubectl())
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(dir)
        .output()
        .expect("run kubectl apply");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl apply {}: {said}",
        dir.display()
    );
    // Each file is named for its CRD: workspacetokens.tokenwarden.dev.yaml.
    let names = (std::fs::read_dir(dir).expect("the CRD directory"))
        .filter_map(|entry| Some(entry.ok()?.path().file_stem()?.to_str()?.to_string()))
        .map(|name| format!("crd/{name}"));
    let established = (cp.kubectl())
        .args(["wait", "--for=condition=Established", "--timeout=30s"])
        .args(names)
        .output()
        .expect("run kubectl wait");
    assert!(established.status.success(), "CRDs established");
}

/// SIGTERM, as a rolling update stops a pod, and its end.
async fn stop(mut operator: Operator) {
    let pid = operator.pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.expect("run kill").success(), "kill -TERM {pid}");
    eventually(WAIT, "the previous operator exits", || {
        let exited = operator.exit_status().is_some();
        async move { exited.then_some(()) }
    })
    .await;
}

/// Every token's whole status (versions, their states and times, next and last rotation,
/// hashes), its conditions by type, status and reason (not when they were last written).
async fn statuses(api: &Api<WorkspaceToken>) -> BTreeMap<String, serde_json::Value> {
    let list = api.list(&ListParams::default()).await.expect("list tokens");
    (list.items.into_iter())
        .map(|w| {
            let mut status = serde_json::to_value(w.status.unwrap_or_default()).unwrap();
            if let Some(conditions) = status["conditions"].as_array_mut() {
                for condition in conditions {
                    condition
                        .as_object_mut()
                        .unwrap()
                        .remove("lastTransitionTime");
                }
            }
            (w.metadata.name.unwrap_or_default(), status)
        })
        .collect()
}

/// Passes the operator finished, as its /metrics counts them.
fn passes(operator: &Operator) -> f64 {
    let page = operator
        .get("/metrics")
        .map(|(_, page)| page)
        .unwrap_or_default();
    (page.lines())
        .filter(|l| l.starts_with("tokenwarden_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every Secret of the namespace by name, at its resourceVersion.
async fn secrets_at(secrets: &Api<Secret>) -> BTreeMap<String, String> {
    let list = secrets
        .list(&ListParams::default())
        .await
        .expect("list Secrets");
    (list.items.into_iter())
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

fn ready_at_its_generation(w: &WorkspaceToken) -> bool {
    let Some(s) = w.status.as_ref() else {
        return false;
    };
    let ready = (s.conditions.iter()).any(|c| c.type_ == "Ready" && c.status == "True");
    ready && s.observed_generation == w.metadata.generation
}

#[tokio::test]
async fn an_upgrade_from_the_previous_release_rotates_nothing_and_writes_only_status() {
    let previous = previous_release();
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    apply_crds(cp, &previous.join("crds"));
    let ns = tokenwarden_testenv::namespace(&client, "upgrade").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let platform = TestPlatform::start().await;
    for workspace in ["ws-issued", "ws-retiring"] {
        platform.create_workspace(workspace).await;
    }
    platform.admin_secret(&client, &ns, &platform.admin).await;

    let args = ["--namespace", ns.as_str()];
    let old = Operator::start_binary(
        &previous.join("tokenwarden"),
        cp.admin_kubeconfig(),
        &args,
        &[],
    );
    let every = json!({ "rotation": { "every": "720h", "gracePeriod": "1h" } });
    create(
        &api,
        "local",
        json!({ "workspaceId": "ws-local", "rotation": { "every": "720h" } }),
    )
    .await;
    create(
        &api,
        "templated",
        json!({
            "workspaceId": "ws-templated", "token": { "prefix": "wst_", "encoding": "hex" },
            "secretTemplate": { "labels": { "team": "a" } }
        }),
    )
    .await;
    create(&api, "issued", platform.spec("ws-issued", every.clone())).await;
    create(&api, "retiring", platform.spec("ws-retiring", every)).await;
    for name in ["local", "templated", "issued", "retiring"] {
        wait_version(&api, name, 1, WAIT).await;
    }
    request_rotation(&api, "retiring", "before-the-upgrade").await;
    wait_version(&api, "retiring", 2, WAIT).await;
    wait_all(
        &api,
        4,
        WAIT,
        "every token Ready under the previous release",
        ready_at_its_generation,
    )
    .await;
    assert_quiet(&client, Duration::from_secs(5)).await;
    let tokens_before = statuses(&api).await;
    let states: Vec<(u64, &str)> = (tokens_before["retiring"]["versions"].as_array().unwrap())
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(2, "Active"), (1, "Retiring")],
        "v1 in its grace period across the upgrade"
    );
    let secrets_before = secrets_at(&secrets).await;
    let live = |workspace: &'static str| {
        let platform = &platform;
        async move {
            let mut prefixes: Vec<String> = platform
                .live(workspace)
                .await
                .into_iter()
                .map(|t| t.prefix)
                .collect();
            prefixes.sort();
            prefixes
        }
    };
    let platform_before = (live("ws-issued").await, live("ws-retiring").await);
    let old_logs = old.stderr.clone();
    stop(old).await;

    apply_crds(
        cp,
        &PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/crds")),
    );
    let resources = ["secrets", "workspacetokens", "tokenissuers"];
    let metrics = tokenwarden_testenv::apiserver::metrics(&client).await;
    let before = tokenwarden_testenv::apiserver::mutating_requests_by_kind(&metrics, &resources);
    let new = Operator::start(cp, &args);
    eventually(WAIT, "the new operator is ready", || async {
        (new.get("/readyz").map(|(code, _)| code) == Some(200)).then_some(())
    })
    .await;
    // Each token went through a pass of this build (not only Ready from before).
    eventually(WAIT, "a pass of this build over every token", || async {
        (passes(&new) >= 4.0).then_some(())
    })
    .await;
    wait_all(
        &api,
        4,
        WAIT,
        "every token Ready under this build",
        ready_at_its_generation,
    )
    .await;
    assert_quiet(&client, Duration::from_secs(10)).await;

    let metrics = tokenwarden_testenv::apiserver::metrics(&client).await;
    let after = tokenwarden_testenv::apiserver::mutating_requests_by_kind(&metrics, &resources);
    let wrote: BTreeMap<&String, u64> = (after.iter())
        .map(|(kind, n)| (kind, n - before.get(kind).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!("the upgrade wrote: {wrote:?}");
    assert!(
        wrote.keys().all(|kind| kind.ends_with("/status")),
        "the upgrade wrote more than status: {wrote:?} (previous release's log: {})",
        old_logs.display()
    );
    assert_eq!(
        statuses(&api).await,
        tokens_before,
        "no token rotated, was revoked or rescheduled"
    );
    assert_eq!(
        secrets_at(&secrets).await,
        secrets_before,
        "no Secret written"
    );
    let platform_after = (live("ws-issued").await, live("ws-retiring").await);
    assert_eq!(
        platform_after, platform_before,
        "nothing minted or revoked at the platform"
    );
    let page = new.get("/metrics").expect("metrics").1;
    let counted = |metric: &str| -> f64 {
        (page.lines())
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted("tokenwarden_rotations_total"), 0.0, "{page}");
    assert_eq!(counted("tokenwarden_revocations_total"), 0.0, "{page}");
    dump(&client, &ns, Some(&new)).await;
}
