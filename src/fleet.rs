//! `tokenwarden rotate`: one WorkspaceToken, or a fleet picked by a label selector (seed 000:
//! rotate tokens after team access changes). Every token of one call gets the same request,
//! a fresh W3C trace id in `tokenwarden.dev/rotate`, so their audit lines share that trace
//! id and the `--reason`; `--revoke-now` also names each current version in
//! `tokenwarden.dev/revoke-version`, which rotates it and revokes it at the cutover. One
//! token failing does not stop the others; the failures are listed at the end.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::api::{VersionState, WorkspaceToken};
use crate::cluster::{Connection, client_and_namespace, not_found};
use crate::contract::{REVOKE_VERSION_ANNOTATION, ROTATE_ANNOTATION, ROTATE_REASON_ANNOTATION};

/// What `tokenwarden rotate` was asked.
#[derive(clap::Args, Debug)]
pub struct Request {
    /// The WorkspaceToken (or -l).
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    pub name: Option<String>,
    /// Rotate every WorkspaceToken with these labels (`team=a`, `tier in (prod)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace (with -l).
    #[arg(short = 'A', long, conflicts_with = "namespace", requires = "selector")]
    pub all_namespaces: bool,
    /// Why, in every audit line of the rotation (one trace id for the whole call).
    #[arg(long)]
    pub reason: Option<String>,
    /// Revoke each previous version as soon as its successor is active.
    #[arg(long)]
    pub revoke_now: bool,
    /// Wait until the new version is active (and with --revoke-now, the old one revoked).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl Request {
    /// How long `--wait` waits; None without it.
    fn wait(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.timeout))
    }
}

/// One token of the call: where it was and what rotated means for it.
struct Asked {
    api: Api<WorkspaceToken>,
    ns: String,
    name: String,
    /// The current version when asked (rotated means: another one is current).
    from: Option<u32>,
}

pub async fn rotate(
    request: Request,
    connection: &Connection,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (client, ns) = client_and_namespace(connection, request.namespace.clone()).await?;
    let targets = select(&client, &ns, &request).await?;
    let trace_id = crate::apply::new_trace_id();
    if request.selector.is_some() {
        println!(
            "rotating {} WorkspaceTokens (trace id {trace_id})",
            targets.len()
        );
    }
    let total = targets.len();
    let mut failures = Vec::new();
    let mut asked = Vec::new();
    for wst in targets {
        let (ns, name) = (wst.namespace().unwrap_or_default(), wst.name_any());
        let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
        let from = wst.status.as_ref().and_then(|s| s.current_version);
        match ask(&api, &name, &trace_id, &request, from).await {
            Ok(()) => {
                println!("rotation of {ns}/{name} requested");
                if request.revoke_now && from.is_none() {
                    println!("{ns}/{name} has no current version: nothing to revoke");
                }
                asked.push(Asked {
                    api,
                    ns,
                    name,
                    from,
                });
            }
            Err(e) => failures.push(format!("{ns}/{name}: {e}")),
        }
    }
    if let Some(timeout) = request.wait() {
        failures.extend(wait(&asked, &trace_id, request.revoke_now, timeout).await);
    }
    if failures.is_empty() {
        return Ok(());
    }
    for failure in &failures {
        eprintln!("failed: {failure}");
    }
    Err(format!("{} of {total} WorkspaceTokens failed", failures.len()).into())
}

/// The named token, or every one the selector picks in the namespace (or all of them).
async fn select(
    client: &kube::Client,
    ns: &str,
    request: &Request,
) -> Result<Vec<WorkspaceToken>, String> {
    let api: Api<WorkspaceToken> = if request.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    };
    if let Some(name) = &request.name {
        return Ok(vec![api.get(name).await.map_err(not_found(name, ns))?]);
    }
    let selector = request.selector.as_deref().unwrap_or_default();
    if selector.trim().is_empty() {
        return Err("-l needs a label selector (an empty one would pick every token)".into());
    }
    let items = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("list WorkspaceTokens with -l {selector}: {e}"))?
        .items;
    if items.is_empty() {
        let scope = if request.all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {ns}")
        };
        return Err(format!(
            "no WorkspaceToken in {scope} matches -l {selector}"
        ));
    }
    Ok(items)
}

/// One merge patch: the request, its reason, and with `--revoke-now` the version to revoke.
async fn ask(
    api: &Api<WorkspaceToken>,
    name: &str,
    trace_id: &str,
    request: &Request,
    from: Option<u32>,
) -> Result<(), String> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(ROTATE_ANNOTATION.into(), trace_id.into());
    // A reason of an earlier call must not follow this one into the audit trail.
    annotations.insert(
        ROTATE_REASON_ANNOTATION.into(),
        request
            .reason
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    if request.revoke_now
        && let Some(current) = from
    {
        annotations.insert(REVOKE_VERSION_ANNOTATION.into(), current.to_string().into());
    }
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("annotate: {e}"))
}

/// Waits for every asked token to rotate (and with `--revoke-now`, for its previous version
/// to be revoked), printing each as it does; returns those that did not within `timeout`.
async fn wait(asked: &[Asked], trace_id: &str, revoke_now: bool, timeout: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<&Asked> = asked.iter().collect();
    let mut errors = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for a in pending {
            match a.api.get(&a.name).await {
                Ok(wst) if done(&wst, trace_id, a.from, revoke_now) => {
                    let s = wst.status.unwrap_or_default();
                    println!(
                        "{}/{} rotated to {} (prefix {})",
                        a.ns,
                        a.name,
                        s.token_version.as_deref().unwrap_or("-"),
                        s.token_prefix.as_deref().unwrap_or("-")
                    );
                }
                Ok(_) => still.push(a),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    errors.push(format!("{}/{}: deleted while waiting", a.ns, a.name));
                }
                // Anything else may pass: asked again until the deadline.
                Err(_) => still.push(a),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let secs = timeout.as_secs();
            errors.extend(
                (pending.iter())
                    .map(|a| format!("{}/{} did not rotate within {secs}s", a.ns, a.name)),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    errors
}

fn done(wst: &WorkspaceToken, trace_id: &str, from: Option<u32>, revoke_now: bool) -> bool {
    let Some(s) = &wst.status else {
        return false;
    };
    let rotated = s.last_rotate_request.as_deref() == Some(trace_id) && s.current_version != from;
    // A revoked version may already be trimmed from status (historyLimit): gone is revoked.
    let revoked = !revoke_now
        || from.is_none_or(|n| {
            s.versions
                .iter()
                .all(|v| v.version != n || v.state == VersionState::Revoked)
        });
    rotated && revoked
}
