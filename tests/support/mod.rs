//! What the integration tests share: the operator as a real child process, the CRD, waiting,
//! and the artifacts (logs, events, statuses, metrics) the leak scan reads afterwards.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod invariants;
pub mod platform;
pub mod pods;
pub mod tenant;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use tokenwarden::api::WorkspaceToken;
use tokenwarden_testenv::{ControlPlane, reaper};

/// Where this test binary leaves its logs and dumps for `make test`'s leak scan.
pub fn artifacts_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("artifacts")
            .join(format!("{binary}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create artifacts dir");
        dir
    })
    .clone()
}

/// The control plane of this test binary, with the CRD installed.
pub async fn control_plane() -> &'static ControlPlane {
    with_crds(tokenwarden_testenv::shared()).await
}

/// [`control_plane`] with a node that runs pods (started once per test binary).
pub async fn control_plane_with_node() -> &'static ControlPlane {
    with_crds(tokenwarden_testenv::shared_with_node()).await
}

async fn with_crds(cp: &'static ControlPlane) -> &'static ControlPlane {
    static CRD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRD.get_or_init(|| async {
        let client = cp.admin_client().await;
        install_crd(&client).await;
    })
    .await;
    cp
}

/// The three CRDs: WorkspaceToken, TokenIssuer, ClusterTokenIssuer.
pub async fn install_crd(client: &Client) {
    use tokenwarden::api::{ClusterTokenIssuer, TokenIssuer};
    for crd in [
        WorkspaceToken::crd(),
        TokenIssuer::crd(),
        ClusterTokenIssuer::crd(),
    ] {
        tokenwarden_testenv::crd::install(client, &crd, "tokenwarden-tests").await;
    }
}

/// `tokenwarden run` as a child process, logging into the artifacts dir.
pub struct Operator {
    child: Child,
    pub metrics_addr: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

static OPERATOR_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Operator {
    pub fn start(cp: &ControlPlane, args: &[&str]) -> Operator {
        Self::start_as(cp, cp.admin_kubeconfig(), args)
    }

    pub fn start_as(cp: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Operator {
        Self::start_with_env(cp, kubeconfig, args, &[])
    }

    /// With extra environment variables (a failpoint to arm, for instance).
    pub fn start_with_env(
        cp: &ControlPlane,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let _ = cp;
        let binary = Path::new(env!("CARGO_BIN_EXE_tokenwarden"));
        Self::start_binary(binary, kubeconfig, args, env)
    }

    /// Another build of tokenwarden (the previous release, for the upgrade test).
    pub fn start_binary(
        binary: &Path,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let seq = OPERATOR_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = artifacts_dir();
        let stdout = dir.join(format!("operator-{seq}.stdout.log"));
        let stderr = dir.join(format!("operator-{seq}.stderr.log"));
        let mut command = Command::new(binary);
        command
            .arg("run")
            .args(["--metrics-addr", &metrics_addr, "--log-format", "json"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("operator stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("operator stderr file"));
        let child = reaper::spawn(command).expect("start tokenwarden run");
        Operator {
            child,
            metrics_addr,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, no cleanup.
    pub fn kill(&mut self) {
        reaper::kill(&mut self.child);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// GET a path of the operator's metrics/health server: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr, path)
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Who holds the leader-election Lease in `leases`' namespace.
pub async fn lease_holder(
    leases: &Api<k8s_openapi::api::coordination::v1::Lease>,
) -> Option<String> {
    leases
        .get_opt("tokenwarden-leader")
        .await
        .ok()??
        .spec?
        .holder_identity
}

pub use tokenwarden_testenv::probe::http_get;

/// The operator this test binary shares between its tests.
pub async fn shared_operator() -> &'static Operator {
    let cp = control_plane().await;
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| Operator::start(cp, &["--concurrency", "8"]))
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(100), timeout, what, check).await
}

/// [`eventually`] polling every `period`: for checks that cost (a `kubectl exec` runs a
/// process in a container), so that polling does not starve what it waits for.
pub async fn eventually_every<T, F, Fut>(
    period: Duration,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(period).await;
    }
}

pub fn wst(name: &str, spec: serde_json::Value) -> WorkspaceToken {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tokenwarden.dev/v1alpha1",
        "kind": "WorkspaceToken",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("WorkspaceToken manifest")
}

pub async fn create(
    api: &Api<WorkspaceToken>,
    name: &str,
    spec: serde_json::Value,
) -> WorkspaceToken {
    api.create(&PostParams::default(), &wst(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create WorkspaceToken {name}: {e}"))
}

/// How long the garbage collector may take to delete the Secrets of a WorkspaceToken deleted
/// without a finalizer: kube-controller-manager looks for new resource kinds every 30 s, so on
/// a control plane started moments ago it may not watch WorkspaceTokens yet (the first run of
/// the deletion test took 35 s).
pub const GARBAGE_COLLECTION: Duration = Duration::from_secs(120);

/// Asks for a rotation the way a user does (`kubectl annotate ... tokenwarden.dev/rotate=`):
/// each new `value` rotates once.
pub async fn request_rotation(api: &Api<WorkspaceToken>, name: &str, value: &str) {
    let patch =
        serde_json::json!({ "metadata": { "annotations": { "tokenwarden.dev/rotate": value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("request a rotation of {name}: {e}"));
}

/// Waits until the WorkspaceToken is Ready with `version` current, and returns it.
pub async fn wait_version(
    api: &Api<WorkspaceToken>,
    name: &str,
    version: u32,
    timeout: Duration,
) -> WorkspaceToken {
    let what = format!("{name} Ready at v{version}");
    wait_ready_where(api, name, timeout, &what, |v| v == version).await
}

/// Waits until the WorkspaceToken is Ready with `version` or a later one current: with a
/// short schedule, a pass may go past `version` before status ever shows it.
pub async fn wait_version_at_least(
    api: &Api<WorkspaceToken>,
    name: &str,
    version: u32,
    timeout: Duration,
) -> WorkspaceToken {
    let what = format!("{name} Ready at v{version} or later");
    wait_ready_where(api, name, timeout, &what, |v| v >= version).await
}

async fn wait_ready_where(
    api: &Api<WorkspaceToken>,
    name: &str,
    timeout: Duration,
    what: &str,
    current: impl Fn(u32) -> bool,
) -> WorkspaceToken {
    eventually(timeout, what, || async {
        let w = api.get(name).await.ok()?;
        let s = w.status.as_ref()?;
        let ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && s.current_version.is_some_and(&current)).then_some(w)
    })
    .await
}

/// Waits until `name` is Degraded for `reason`; returns the condition's message.
pub async fn degraded_for(
    api: &Api<WorkspaceToken>,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> String {
    let what = format!("{name} Degraded {reason}");
    let (_, _, message) = eventually(timeout, &what, || async {
        condition(api, name, "Degraded")
            .await
            .filter(|(status, r, _)| status == "True" && r == reason)
    })
    .await;
    message
}

pub async fn condition(
    api: &Api<WorkspaceToken>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let w = api.get(name).await.ok()?;
    let c = w
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// Version `n` as the WorkspaceToken's status records it.
pub fn version_status(wst: &WorkspaceToken, n: u32) -> Option<tokenwarden::api::VersionStatus> {
    wst.status
        .as_ref()?
        .versions
        .iter()
        .find(|v| v.version == n)
        .cloned()
}

/// Waits up to `timeout` until the Secret `name` is gone (`what` names the wait).
pub async fn wait_secret_gone(secrets: &Api<Secret>, name: &str, what: &str, timeout: Duration) {
    eventually(timeout, what, || async {
        secrets.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

pub fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

pub async fn secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get Secret")
}

pub async fn secret_names(client: &Client, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    names.sort();
    names
}

pub async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    events(client, ns)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// The messages of the events with `reason` in `ns`.
pub async fn event_messages(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    let events = events(client, ns).await.into_iter();
    events
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
}

async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
}

/// Dumps what a test's namespace holds that could leak a token (events, WorkspaceTokens,
/// Secret metadata) plus the operator's metrics page, for the leak scan. Every test calls it
/// at the end.
pub async fn dump(client: &Client, ns: &str, operator: Option<&Operator>) {
    let dir = artifacts_dir();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await;
    let wsts = Api::<WorkspaceToken>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await;
    let mut out = BTreeMap::new();
    out.insert(
        "events",
        serde_json::to_value(events.map(|l| l.items).unwrap_or_default()).unwrap(),
    );
    out.insert(
        "workspacetokens",
        serde_json::to_value(wsts.map(|l| l.items).unwrap_or_default()).unwrap(),
    );
    out.insert(
        "secretMetadata",
        serde_json::to_value(secrets.map(|l| l.items).unwrap_or_default()).unwrap(),
    );
    std::fs::write(
        dir.join(format!("{ns}.json")),
        serde_json::to_vec_pretty(&out).unwrap(),
    )
    .expect("write dump");
    if let Some((_, metrics)) = operator.and_then(|o| o.get("/metrics")) {
        std::fs::write(dir.join(format!("{ns}.metrics.txt")), metrics).expect("write metrics");
    }
}

/// Mutating requests (server-side apply included) on Secrets and WorkspaceTokens the API server
/// has served, from its own `apiserver_request_total`.
pub async fn mutating_requests(client: &Client) -> u64 {
    let metrics = tokenwarden_testenv::apiserver::metrics(client).await;
    tokenwarden_testenv::apiserver::mutating_requests(
        &metrics,
        &[
            "secrets",
            "workspacetokens",
            "tokenissuers",
            "clustertokenissuers",
        ],
    )
}

/// A tool hack/tools/build.sh builds from the Go module proxy (helm, kubeconform, promtool),
/// cached outside the clone after the first time.
pub fn tool(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/tools/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run hack/tools/build.sh");
    assert!(out.status.success(), "hack/tools/build.sh failed");
    let dir = String::from_utf8(out.stdout).expect("a path");
    PathBuf::from(dir.lines().last().expect("a bin dir").trim()).join(name)
}
