//! Crash anywhere, lose nothing: the operator aborts at each named failpoint in the middle of
//! a rotation (HTTP issuer, gracePeriod 0 so the old version is revoked in the same pass),
//! and a fresh process finishes the job. After the restart:
//! - exactly one version is Active and it is v2: numbers neither skip nor repeat;
//! - `S` and `S-v2` hold the same token, the one status records;
//! - a version whose Secret existed before the crash was adopted, not minted again;
//! - the platform has exactly one live token for the workspace, the served one: nothing
//!   minted in the crashed pass is left live without a Secret.
//!
//! And a SIGKILL while a version is held by an unfinished rollout neither revokes it early
//! nor forgets the hold.
//!
//! Failpoints exist only in builds with the `failpoints` feature (the test build); each
//! test runs its own operator on its own namespace.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use support::invariants::assert_consistent;
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::failpoint;

const WAIT: Duration = Duration::from_secs(60);
const SIGABRT: i32 = 6;

async fn crash_at(point: &str) {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, &format!("crash-{point}")).await;
    let platform = TestPlatform::start().await;
    platform.create_workspace("ws-crash").await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let only_here = ["--namespace", ns.as_str()];
    let kubeconfig = cp.admin_kubeconfig();

    let mut first = Operator::start(cp, &only_here);
    let spec = platform.spec("ws-crash", json!({ "rotation": { "gracePeriod": "0s" } }));
    create(&api, "t", spec).await;
    wait_version(&api, "t", 1, WAIT).await;
    first.kill();

    // The armed operator rotates and aborts at `point`.
    let armed = [(failpoint::ENV, point)];
    let mut crashing = Operator::start_with_env(cp, kubeconfig, &only_here, &armed);
    request_rotation(&api, "t", "r1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = crashing.exit_status() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator did not abort at {point}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "aborted by the failpoint: {status:?}"
    );
    let v2_before_restart = secrets.get_opt("t-v2").await.expect("get t-v2");

    let recovering = Operator::start(cp, &only_here);
    wait_version(&api, "t", 2, Duration::from_secs(90)).await;
    let served = assert_consistent(&client, &ns).await["t"].clone();
    let versioned = secrets.get("t-v2").await.expect("S-v2");
    if let Some(before) = v2_before_restart {
        assert_eq!(
            before.uid(),
            versioned.uid(),
            "{point}: S-v2 adopted, not minted again"
        );
    }

    let mut audit = crashing.audit_lines();
    audit.extend(recovering.audit_lines());
    let v2_origin = audit.iter().find(|l| {
        l["token_version"] == "v2" && (l["event"] == "minted" || l["event"] == "adopted")
    });
    assert!(
        v2_origin.is_some(),
        "{point}: the audit trail says where v2's token came from (minted or adopted)"
    );

    eventually(
        WAIT,
        "only the served token live at the platform",
        || async {
            let live = platform.live("ws-crash").await;
            (live.len() == 1 && live[0].token_sha256 == served).then_some(())
        },
    )
    .await;
    assert!(
        secrets.get_opt("t-v1").await.expect("get t-v1").is_none(),
        "{point}: v1 revoked and its Secret gone"
    );
    dump(&client, &ns, Some(&recovering)).await;
}

#[tokio::test]
async fn a_crash_right_after_the_platform_minted_leaves_no_orphan() {
    crash_at(failpoint::AFTER_MINT).await;
}

#[tokio::test]
async fn a_crash_right_after_the_versioned_secret_adopts_it() {
    crash_at(failpoint::AFTER_VERSIONED_SECRET).await;
}

#[tokio::test]
async fn a_crash_right_after_the_cutover_finishes_the_rotation() {
    crash_at(failpoint::AFTER_CUTOVER).await;
}

#[tokio::test]
async fn a_crash_right_after_the_platform_revoked_the_old_version_finishes_the_cleanup() {
    crash_at(failpoint::AFTER_ISSUER_REVOKE).await;
}

#[tokio::test]
async fn a_crash_before_the_status_write_catches_status_up() {
    crash_at(failpoint::BEFORE_STATUS).await;
}

/// A SIGKILL while a version is held by an unfinished rollout: the restarted operator knows
/// nothing of the rollout until its watch lists it, and holds meanwhile; it neither revokes
/// early nor forgets the hold, and the rollout finishing releases it. (No node in this
/// binary: the Deployment's rollout is its status, written here.)
#[tokio::test]
async fn a_crash_while_a_version_is_held_neither_revokes_it_nor_forgets_the_hold() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams, PostParams};
    use tokenwarden::api::VersionState;

    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "crash-held").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let agent: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "agent" },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "agent" } },
            "template": { "metadata": { "labels": { "app": "agent" } },
                "spec": { "containers": [{ "name": "c", "image": "agent" }] } } },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &agent)
        .await
        .unwrap();
    // The rollout as a deployment controller would report it for the current generation.
    let report = |updated: i32| {
        let deployments = deployments.clone();
        async move {
            let generation = deployments.get("agent").await.unwrap().metadata.generation;
            let status = json!({ "status": { "observedGeneration": generation, "replicas": 2,
                "updatedReplicas": updated, "availableReplicas": 2, "readyReplicas": 2 } });
            deployments
                .patch_status("agent", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    };
    report(2).await;
    let only_here = ["--namespace", ns.as_str()];
    let mut first = Operator::start(cp, &only_here);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-held",
        "rotation": { "gracePeriod": "1s", "maxGracePeriod": "10m",
            "holdUntil": { "rolloutComplete": true } },
        "restartTargets": [{ "kind": "Deployment", "name": "agent" }] }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    report(2).await;

    request_rotation(&api, "t", "r1").await;
    wait_version(&api, "t", 2, WAIT).await;
    report(1).await; // one of two pods on the new template
    let held = eventually(WAIT, "v1 held by the rollout", || {
        let api = api.clone();
        async move {
            let v = version_status(&api.get("t").await.ok()?, 1)?;
            (v.retire_held_by == ["Deployment/agent 1/2 updated"]).then_some(v)
        }
    })
    .await;
    assert_eq!(held.state, VersionState::Retiring);

    first.kill();
    // While no operator runs, the rollout moves: only the restarted one can say so.
    report(0).await;
    let restarted = Operator::start(cp, &only_here);
    // Through the restarted operator's first passes (rollout not seen yet, then seen), v1 is
    // never revoked, and the hold is known again once its watch listed the Deployment.
    eventually(WAIT, "the hold known again after the restart", || {
        let api = api.clone();
        async move {
            let v = version_status(&api.get("t").await.ok()?, 1)?;
            assert_eq!(
                v.state,
                VersionState::Retiring,
                "not revoked across the crash"
            );
            (v.retire_held_by == ["Deployment/agent 0/2 updated"]).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = version_status(&api.get("t").await.unwrap(), 1).unwrap();
    assert_eq!(v.state, VersionState::Retiring, "still held");

    report(2).await;
    eventually(
        Duration::from_secs(15),
        "v1 revoked once the rollout finished",
        || {
            let api = api.clone();
            async move {
                (version_status(&api.get("t").await.ok()?, 1)?.state == VersionState::Revoked)
                    .then_some(())
            }
        },
    )
    .await;
    dump(&client, &ns, Some(&restarted)).await;
}
