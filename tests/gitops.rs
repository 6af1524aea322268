//! GitOps: what Argo CD, Flux and scripts rely on, checked with the real kubectl against the
//! real API server and operator. `kubectl wait --for=condition=Ready wst/NAME` returns once a
//! token is served (and `Ready=false` when it can't be); `examples/` renders with
//! `kubectl kustomize` and the result is accepted by the API server.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden_testenv::ControlPlane;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// Runs `command` with `stdin`, keeping what it printed in the artifacts for the leak scan.
fn run(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for kubectl");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(artifacts_dir().join("kubectl-gitops-output.txt"))
        .and_then(|mut log| {
            log.write_all(&output.stdout)?;
            log.write_all(&output.stderr)
        })
        .expect("write kubectl output");
    output
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut command = cp.kubectl();
    command.args(args);
    run(command, "")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: tokenwarden.dev/v1alpha1\n\
         kind: WorkspaceToken\n\
         metadata:\n  name: {name}\n\
         spec:\n  workspaceId: 948bab9a-2cad-4a3f-af1f-01bfe260f85b\n"
    )
}

#[tokio::test]
async fn kubectl_wait_for_condition_ready_returns_once_the_first_token_is_served() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "wait").await;

    // Applied and waited for at once, as a pipeline would: kubectl wait has to cope with an
    // object that has no status yet.
    let mut apply = cp.kubectl();
    apply.args(["apply", "-n", &ns, "-f", "-"]);
    let applied = run(apply, &manifest("agent-alpha"));
    assert!(applied.status.success(), "apply: {}", stderr(&applied));
    let waited = kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Ready",
            "wst/agent-alpha",
            "--timeout=60s",
            "-n",
            &ns,
        ],
    );
    assert!(waited.status.success(), "wait: {}", stderr(&waited));
    assert!(
        String::from_utf8_lossy(&waited.stdout).contains("condition met"),
        "{}",
        String::from_utf8_lossy(&waited.stdout)
    );

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let status = api.get("agent-alpha").await.unwrap().status.unwrap();
    assert_eq!(status.current_version, Some(1));
    assert!(
        secret(&client, &ns, "agent-alpha").await.is_some(),
        "Ready before the mounted Secret exists"
    );
    for condition in [
        "--for=condition=Degraded=false",
        "--for=jsonpath={.status.tokenVersion}=v1",
    ] {
        let waited = kubectl(
            cp,
            &[
                "wait",
                condition,
                "wst/agent-alpha",
                "--timeout=10s",
                "-n",
                &ns,
            ],
        );
        assert!(waited.status.success(), "{condition}: {}", stderr(&waited));
    }
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn kubectl_wait_sees_a_token_that_cannot_be_served_as_ready_false() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "wait-conflict").await;
    let foreign: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "agent-alpha" },
        "stringData": { "token": "not-ours" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the foreign Secret");
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "agent-alpha",
        serde_json::json!({ "workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b" }),
    )
    .await;

    let not_ready = kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Ready=false",
            "wst/agent-alpha",
            "--timeout=60s",
            "-n",
            &ns,
        ],
    );
    assert!(not_ready.status.success(), "{}", stderr(&not_ready));
    let (status, reason, _) = condition(&api, "agent-alpha", "Ready").await.unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretConflict")
    );
    let ready = kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Ready",
            "wst/agent-alpha",
            "--timeout=3s",
            "-n",
            &ns,
        ],
    );
    assert!(!ready.status.success(), "Ready despite the conflict");
    dump(&client, &ns, Some(operator)).await;
}

/// The objects `kubectl kustomize examples/` renders.
fn rendered_examples(cp: &ControlPlane) -> Vec<serde_json::Value> {
    let output = kubectl(cp, &["kustomize", EXAMPLES]);
    assert!(
        output.status.success(),
        "kubectl kustomize examples/: {}",
        stderr(&output)
    );
    let yaml = String::from_utf8(output.stdout).expect("UTF-8");
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("rendered YAML"))
        .collect()
}

#[tokio::test]
async fn examples_render_with_kubectl_kustomize_into_one_labelled_namespace() {
    let cp = control_plane().await;
    let objects = rendered_examples(cp);
    let mut kinds: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    let expected = [
        ("Deployment", "agent"),
        ("WorkspaceToken", "agent"),
        ("WorkspaceToken", "agent-alpha"),
        ("WorkspaceToken", "nightly-agent"),
    ]
    .map(|(k, n)| (k.to_string(), n.to_string()));
    assert_eq!(kinds, expected);
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], "team-a", "{}", o["metadata"]);
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "tokenwarden-examples",
            "{}",
            o["metadata"]
        );
    }
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["selector"],
        serde_json::json!({ "matchLabels": { "app": "agent" } }),
        "the immutable selector is left alone"
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "tokenwarden-examples"
    );
}

#[tokio::test]
async fn the_kustomized_examples_pass_a_server_side_dry_run() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "team-a" } })).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace team-a: {e}"),
    }
    let applied = kubectl(cp, &["apply", "--dry-run=server", "-k", EXAMPLES]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let out = String::from_utf8_lossy(&applied.stdout);
    for object in [
        "workspacetoken.tokenwarden.dev/agent-alpha created (server dry run)",
        "workspacetoken.tokenwarden.dev/nightly-agent created (server dry run)",
        "workspacetoken.tokenwarden.dev/agent created (server dry run)",
        "deployment.apps/agent created (server dry run)",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
    let api: Api<WorkspaceToken> = Api::namespaced(client, "team-a");
    assert!(
        api.get_opt("agent-alpha").await.unwrap().is_none(),
        "a dry run wrote"
    );
}
