//! Real pods on the testenv's node that read a WorkspaceToken's Secret, and what they see.
//!
//! A reader prints, every two seconds, the version and 8-character prefix of the token it
//! sees (never the token); tests ask a pod through `kubectl exec` for the version and the
//! SHA-256 of what it holds, and compare with the versioned Secrets' `token-sha256`.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokenwarden_testenv::ControlPlane;
use tokenwarden_testenv::node::IMAGE;

use super::Operator;

/// How a workload's pods read the token.
#[derive(Clone, Copy, Debug)]
pub enum Reads {
    /// A Secret volume at `/token`: the kubelet updates the files in place.
    Volume,
    /// `env` `secretKeyRef`: fixed when the container starts.
    Env,
}

/// The operator of a test binary that runs pods.
pub async fn operator() -> &'static Operator {
    let cp = super::control_plane_with_node().await;
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| Operator::start(cp, &["--concurrency", "4"]))
}

/// A Deployment `name` (pods labelled `app: name`) whose pods read Secret `secret`.
pub fn token_reader(name: &str, secret: &str, reads: Reads, replicas: i32) -> Deployment {
    let (print, env, mounts, volumes) = match reads {
        Reads::Volume => (
            r#"echo "$(date -u +%T) sees $(cat /token/token-version) $(head -c 8 /token/token)... previous: $(cat /token/previous-token-version 2>/dev/null || echo none)""#,
            serde_json::json!([]),
            serde_json::json!([{ "name": "token", "mountPath": "/token", "readOnly": true }]),
            serde_json::json!([{ "name": "token", "secret": { "secretName": secret } }]),
        ),
        Reads::Env => (
            r#"echo "$(date -u +%T) sees $TOKEN_VERSION $(printf %s "$TOKEN" | head -c 8)... (from env)""#,
            serde_json::json!([
                { "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": secret, "key": "token" } } },
                { "name": "TOKEN_VERSION", "valueFrom": { "secretKeyRef": { "name": secret, "key": "token-version" } } },
            ]),
            serde_json::json!([]),
            serde_json::json!([]),
        ),
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "reader",
                        "image": IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["/bin/sh", "-c", format!("while true; do {print}; sleep 2; done")],
                        "env": env,
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }))
    .expect("reader Deployment")
}

/// The Deployment with a readiness probe running `script` every second after `delay_s`:
/// a pod is available only once it passes (and a rollout waits for it).
pub fn ready_when(mut deployment: Deployment, script: &str, delay_s: i32) -> Deployment {
    let container = &mut deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("a pod spec")
        .containers[0];
    container.readiness_probe = Some(
        serde_json::from_value(serde_json::json!({
            "exec": { "command": ["/bin/sh", "-c", script] },
            "initialDelaySeconds": delay_s,
            "periodSeconds": 1,
        }))
        .expect("readiness probe"),
    );
    deployment
}

/// Creates or updates the Deployment (server-side apply).
pub async fn apply(client: &Client, ns: &str, deployment: &Deployment) {
    let name = deployment
        .metadata
        .name
        .as_deref()
        .expect("a named Deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("tokenwarden-tests").force(),
            &Patch::Apply(deployment),
        )
        .await
        .unwrap_or_else(|e| panic!("apply Deployment {name}: {e}"));
}

/// `kubectl rollout status`: every replica updated and available, no pod of an older template.
pub fn rollout_status(cp: &ControlPlane, ns: &str, deployment: &str, timeout: Duration) {
    let out = cp
        .kubectl()
        .args([
            "rollout",
            "status",
            "-n",
            ns,
            &format!("deployment/{deployment}"),
        ])
        .arg(format!("--timeout={}s", timeout.as_secs()))
        .output()
        .expect("run kubectl rollout status");
    assert!(
        out.status.success(),
        "deployment/{deployment} did not roll out in {timeout:?}: {}{}\nthe node: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node_state(cp)
    );
}

/// The node's conditions and taints: why pods may wait unscheduled (a host disk under the
/// kubelet's eviction threshold taints it).
fn node_state(cp: &ControlPlane) -> String {
    let template = "{range .items[*]}{range .status.conditions[*]}{.type}={.status} {end}\
        taints={.spec.taints}{end}";
    let out = (cp.kubectl())
        .args(["get", "nodes", "-o", &format!("jsonpath={template}")])
        .output()
        .expect("run kubectl get nodes");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The running pods (not terminating) of the Deployment `app`, by name.
pub async fn pods(client: &Client, ns: &str, app: &str) -> Vec<String> {
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods");
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// The token one pod holds: its version and SHA-256, and the previous token's if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub version: String,
    pub sha256: String,
    pub previous: Option<(String, String)>,
}

/// Asks the pod (through `kubectl exec`) what it holds; None while it cannot answer.
pub fn seen_by(cp: &ControlPlane, ns: &str, pod: &str, reads: Reads) -> Option<Seen> {
    let script = match reads {
        Reads::Volume => {
            "cat /token/token-version; echo; sha256sum /token/token | cut -d' ' -f1; \
             if [ -e /token/previous-token ]; then cat /token/previous-token-version; echo; \
             sha256sum /token/previous-token | cut -d' ' -f1; fi"
        }
        Reads::Env => r#"echo "$TOKEN_VERSION"; printf %s "$TOKEN" | sha256sum | cut -d' ' -f1"#,
    };
    let out = cp
        .kubectl()
        .args(["exec", "-n", ns, pod, "--", "/bin/sh", "-c", script])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    match lines.as_slice() {
        [version, sha256] => Some(Seen {
            version: version.to_string(),
            sha256: sha256.to_string(),
            previous: None,
        }),
        [version, sha256, previous, previous_sha256] => Some(Seen {
            version: version.to_string(),
            sha256: sha256.to_string(),
            previous: Some((previous.to_string(), previous_sha256.to_string())),
        }),
        _ => None,
    }
}

/// `vN` and the SHA-256 of version N's token, hashed from its versioned Secret `S-vN` (and
/// checked against the `token-sha256` the operator wrote beside it).
pub async fn version_of(client: &Client, ns: &str, secret: &str, n: u32) -> (String, String) {
    use sha2::{Digest, Sha256};
    let versioned = format!("{secret}-v{n}");
    let s: Secret = Api::namespaced(client.clone(), ns)
        .get(&versioned)
        .await
        .unwrap_or_else(|e| panic!("get {versioned}: {e}"));
    let token = s
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .unwrap_or_else(|| panic!("{versioned} has no token"));
    let sha = hex::encode(Sha256::digest(&token.0));
    let annotated = s
        .metadata
        .annotations
        .and_then(|a| a.get("tokenwarden.dev/token-sha256").cloned());
    assert_eq!(
        annotated.as_deref(),
        Some(sha.as_str()),
        "{versioned}'s token-sha256"
    );
    (format!("v{n}"), sha)
}
