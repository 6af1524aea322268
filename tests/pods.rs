//! Real pods on a real node read the Secret tokenwarden rotates: a mounted volume follows
//! every cutover, `previous-token` is there through the grace period, a restart target's
//! rollout replaces its pods, and a reader of `env` keeps the old token until restarted.

mod support;

use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::json;
use tokenwarden::api::{VersionState, WorkspaceToken};
use tokenwarden_testenv::node::SYNC_PERIOD;

use support::pods::{self, Reads, Seen, ready_when, seen_by, token_reader, version_of};
use support::{
    control_plane_with_node, create, dump, event_messages, eventually, eventually_every,
    request_rotation, version_status, wait_version,
};

const WAIT: Duration = Duration::from_secs(60);
/// The kubelet resyncs a pod every sync period plus up to half of it in jitter; the Secret's
/// watch and the `kubectl exec` round trip take the rest.
const VOLUME_FOLLOWS_WITHIN: Duration = Duration::from_secs(SYNC_PERIOD.as_secs() * 2 + 10);
const ROLLOUT: Duration = Duration::from_secs(120);
/// How often a test asks a pod (each ask is a process started in its container).
const EXEC_POLL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread")]
async fn a_mounted_secret_follows_every_cutover_and_holds_the_previous_token_through_the_grace_period()
 {
    let cp = control_plane_with_node().await;
    pods::operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "pods-volume").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let grace = Duration::from_secs(40);
    create(
        &api,
        "agent",
        json!({ "workspaceId": "ws-pods", "token": { "prefix": "wst_" },
        "rotation": { "gracePeriod": "40s" } }),
    )
    .await;
    wait_version(&api, "agent", 1, WAIT).await;
    let mut versions = vec![version_of(&client, &ns, "agent", 1).await];
    pods::apply(
        &client,
        &ns,
        &token_reader("reader", "agent", Reads::Volume, 1),
    )
    .await;
    pods::rollout_status(cp, &ns, "reader", ROLLOUT);
    let pod = pods::pods(&client, &ns, "reader").await.remove(0);
    let sees = |want: Seen| {
        let (cp, ns, pod) = (cp, ns.clone(), pod.clone());
        move || {
            let (cp, ns, pod, want) = (cp, ns.clone(), pod.clone(), want.clone());
            async move { (seen_by(cp, &ns, &pod, Reads::Volume)? == want).then_some(()) }
        }
    };
    let (v1, sha1) = versions[0].clone();
    eventually_every(
        EXEC_POLL,
        WAIT,
        "the pod sees v1",
        sees(Seen {
            version: v1,
            sha256: sha1,
            previous: None,
        }),
    )
    .await;

    for n in 2..=3u32 {
        request_rotation(&api, "agent", &format!("to-v{n}")).await;
        wait_version(&api, "agent", n, WAIT).await;
        let cutover = Instant::now();
        versions.push(version_of(&client, &ns, "agent", n).await);
        let (version, sha256) = versions[n as usize - 1].clone();
        let previous = Some(versions[n as usize - 2].clone());
        let what = format!(
            "the mounted volume at v{n} with v{} as previous-token",
            n - 1
        );
        eventually_every(
            EXEC_POLL,
            VOLUME_FOLLOWS_WITHIN,
            &what,
            sees(Seen {
                version,
                sha256,
                previous,
            }),
        )
        .await;
        eprintln!(
            "pods: the pod saw v{n} {:.1?} after the cutover",
            cutover.elapsed()
        );
    }

    // The grace period ends: previous-token leaves `S`, then the pod's volume.
    let (v3, sha3) = versions[2].clone();
    let gone = Seen {
        version: v3,
        sha256: sha3,
        previous: None,
    };
    eventually_every(
        EXEC_POLL,
        grace + VOLUME_FOLLOWS_WITHIN,
        "previous-token gone after the grace period",
        sees(gone),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_target_rollout_replaces_its_pods_while_an_env_reader_keeps_the_old_token() {
    let cp = control_plane_with_node().await;
    pods::operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "pods-env").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "agent",
        json!({ "workspaceId": "ws-pods-env",
        "restartTargets": [{ "kind": "Deployment", "name": "restarted" }] }),
    )
    .await;
    wait_version(&api, "agent", 1, WAIT).await;
    let v1 = version_of(&client, &ns, "agent", 1).await;
    for (name, replicas) in [("restarted", 2), ("unrestarted", 1)] {
        pods::apply(
            &client,
            &ns,
            &token_reader(name, "agent", Reads::Env, replicas),
        )
        .await;
    }
    for name in ["restarted", "unrestarted"] {
        pods::rollout_status(cp, &ns, name, ROLLOUT);
    }
    let before = pods::pods(&client, &ns, "restarted").await;
    let unrestarted = pods::pods(&client, &ns, "unrestarted").await;
    for pod in before.iter().chain(&unrestarted) {
        assert_eq!(env_token(cp, &ns, pod), v1, "{pod} reads v1 from env");
    }

    request_rotation(&api, "agent", "to-v2").await;
    wait_version(&api, "agent", 2, WAIT).await;
    let cutover = Instant::now();
    let v2 = version_of(&client, &ns, "agent", 2).await;

    // The restart target rolls: two new pods, none of the old ones, both reading v2.
    let after = eventually(ROLLOUT, "restarted's pods replaced", || {
        let (client, ns, before) = (client.clone(), ns.clone(), before.clone());
        async move {
            let now = pods::pods(&client, &ns, "restarted").await;
            (now.len() == 2 && now.iter().all(|p| !before.contains(p))).then_some(now)
        }
    })
    .await;
    pods::rollout_status(cp, &ns, "restarted", ROLLOUT);
    for pod in &after {
        assert_eq!(env_token(cp, &ns, pod), v2, "{pod} (new) reads v2 from env");
    }
    eprintln!(
        "pods: restart target replaced {:.1?} after the cutover",
        cutover.elapsed()
    );

    // The env reader that is no restart target: same pod, still v1, well past the time a
    // mounted volume would have followed.
    let settled = VOLUME_FOLLOWS_WITHIN.saturating_sub(cutover.elapsed());
    tokio::time::sleep(settled).await;
    assert_eq!(pods::pods(&client, &ns, "unrestarted").await, unrestarted);
    assert_eq!(
        env_token(cp, &ns, &unrestarted[0]),
        v1,
        "a pod reading env keeps the token it started with"
    );

    // Restarted by hand, it reads v2.
    let out = cp
        .kubectl()
        .args(["rollout", "restart", "-n", &ns, "deployment/unrestarted"])
        .output()
        .expect("kubectl rollout restart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = eventually(ROLLOUT, "unrestarted's pod replaced", || {
        let (client, ns, old) = (client.clone(), ns.clone(), unrestarted.clone());
        async move {
            let now = pods::pods(&client, &ns, "unrestarted").await;
            (now.len() == 1 && now[0] != old[0]).then_some(now)
        }
    })
    .await;
    assert_eq!(env_token(cp, &ns, &restarted[0]), v2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_in_progress_holds_the_previous_token_until_every_pod_has_the_new_one() {
    let cp = control_plane_with_node().await;
    let operator = pods::operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "pods-hold").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "agent",
        json!({ "workspaceId": "ws-pods-hold",
        "rotation": { "gracePeriod": "1s", "holdUntil": { "rolloutComplete": true } },
        "restartTargets": [{ "kind": "Deployment", "name": "agent" }] }),
    )
    .await;
    wait_version(&api, "agent", 1, WAIT).await;
    // Each new pod takes 6 s to be ready: a two-pod rollout outlasts the 1 s grace period.
    let slow = ready_when(token_reader("agent", "agent", Reads::Env, 2), "true", 6);
    pods::apply(&client, &ns, &slow).await;
    pods::rollout_status(cp, &ns, "agent", ROLLOUT);

    request_rotation(&api, "agent", "to-v2").await;
    wait_version(&api, "agent", 2, WAIT).await;
    let held_by = eventually(WAIT, "v1 held by the rollout", || {
        let api = api.clone();
        async move {
            let v1 = version_status(&api.get("agent").await.ok()?, 1)?;
            (v1.state == VersionState::Retiring && !v1.retire_held_by.is_empty())
                .then_some(v1.retire_held_by)
        }
    })
    .await;
    assert!(held_by[0].starts_with("Deployment/agent "), "{held_by:?}");
    let mounted = support::secret(&client, &ns, "agent").await.unwrap();
    assert!(
        support::data(&mounted, "previous-token-version").is_some(),
        "still served"
    );

    pods::rollout_status(cp, &ns, "agent", ROLLOUT);
    let rolled_out = Instant::now();
    eventually(
        Duration::from_secs(15),
        "v1 revoked once the rollout completed",
        || {
            let api = api.clone();
            async move {
                let v1 = version_status(&api.get("agent").await.ok()?, 1)?;
                (v1.state == VersionState::Revoked).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "pods: v1 revoked {:.1?} after the rollout completed",
        rolled_out.elapsed()
    );
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_never_completes_holds_until_max_grace_period_then_warns_stale_consumer() {
    let cp = control_plane_with_node().await;
    let operator = pods::operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "pods-stale").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "agent",
        json!({ "workspaceId": "ws-pods-stale",
        "rotation": { "gracePeriod": "1s", "maxGracePeriod": "30s",
            "holdUntil": { "rolloutComplete": true } },
        "restartTargets": [{ "kind": "Deployment", "name": "stuck" }] }),
    )
    .await;
    wait_version(&api, "agent", 1, WAIT).await;
    // Its pods are ready only with v1: the rollout v2 starts never finishes.
    let stuck = ready_when(
        token_reader("stuck", "agent", Reads::Env, 1),
        r#"[ "$TOKEN_VERSION" = v1 ]"#,
        0,
    );
    pods::apply(&client, &ns, &stuck).await;
    pods::rollout_status(cp, &ns, "stuck", ROLLOUT);

    request_rotation(&api, "agent", "to-v2").await;
    let cutover = Instant::now();
    wait_version(&api, "agent", 2, WAIT).await;
    let held_by = eventually(WAIT, "v1 held by the stuck rollout", || {
        let api = api.clone();
        async move {
            let v1 = version_status(&api.get("agent").await.ok()?, 1)?;
            (!v1.retire_held_by.is_empty()).then_some(v1.retire_held_by)
        }
    })
    .await;
    assert_eq!(held_by, vec!["Deployment/stuck 1 old pod left"]);

    let stale = eventually(Duration::from_secs(90), "StaleConsumer", || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { event_messages(&client, &ns, "StaleConsumer").await.pop() }
    })
    .await;
    assert!(stale.contains("Deployment/stuck"), "{stale}");
    assert!(
        cutover.elapsed() >= Duration::from_secs(29),
        "revoked at maxGracePeriod, not before: {:?}",
        cutover.elapsed()
    );
    let v1 = version_status(&api.get("agent").await.unwrap(), 1).unwrap();
    assert_eq!(v1.state, VersionState::Revoked);
    dump(&client, &ns, Some(operator)).await;
}

/// (version, SHA-256) of the token a pod read from its environment.
fn env_token(cp: &tokenwarden_testenv::ControlPlane, ns: &str, pod: &str) -> (String, String) {
    let seen = seen_by(cp, ns, pod, Reads::Env).unwrap_or_else(|| panic!("exec into {pod}"));
    (seen.version, seen.sha256)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelet_answers_no_certificate_of_the_clusters_ca() {
    use k8s_openapi::api::core::v1::Node;
    let cp = control_plane_with_node().await;
    let client = cp.admin_client().await;
    let node = Api::<Node>::all(client)
        .get(tokenwarden_testenv::node::NODE_NAME)
        .await
        .unwrap();
    let status = node.status.unwrap();
    let port = status
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    let ip = (status.addresses.unwrap().into_iter())
        .find(|a| a.type_ == "InternalIP")
        .unwrap()
        .address;
    // Cluster admin and the unprivileged user both hold certificates of the cluster's CA:
    // neither may read pods (or exec into them) at the kubelet.
    for who in ["admin", "user"] {
        let pki = cp.dir.join("pki");
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert"])
            .arg(pki.join(format!("{who}.crt")))
            .arg("--key")
            .arg(pki.join(format!("{who}.key")))
            .arg(format!("https://{ip}:{port}/pods"))
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "401",
            "{who} at the kubelet"
        );
    }
}
