//! etcd + kube-apiserver + kube-controller-manager as child processes on free loopback ports,
//! and on request kube-scheduler and a node (see [`crate::node`]) for real workloads.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{ClientIdentity, Pki};
use crate::reaper;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// containerd, the image import and the kubelet's registration: ~10 s here, 120 s allowed.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);
const START_ATTEMPTS: usize = 3;

/// A running control plane. Dropping it does not stop it: it lives until the process exits
/// (see [`reaper`]); [`ControlPlane::stop`] stops it earlier.
pub struct ControlPlane {
    /// The run directory: certificates, kubeconfigs, etcd data and every process's log.
    pub dir: PathBuf,
    /// Where etcd, kube-apiserver, kube-controller-manager and kubectl were found.
    pub bin_dir: PathBuf,
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// How long the start took, from the first process spawned to `/readyz` answering ok
    /// (and, with a node, to the Node being Ready and schedulable).
    pub started_in: Duration,
    /// Whether a node runs pods (then the scheduler and the workload controllers run too).
    pub has_node: bool,
    admin_kubeconfig: PathBuf,
    unprivileged_kubeconfig: PathBuf,
    /// `127.0.0.1:<port>`: etcd's client address (its JSON gateway serves compaction).
    etcd_addr: String,
    processes: Mutex<Vec<Process>>,
}

/// What a node's pods need from kube-controller-manager beyond the defaults above.
const WORKLOAD_CONTROLLERS: &str = ",deployment-controller,replicaset-controller,\
statefulset-controller,daemonset-controller,node-lifecycle-controller";

/// One child process and how to start it again (same flags, same data, same port).
struct Process {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    child: Child,
}

impl Process {
    fn command(program: &Path, args: &[OsString]) -> Command {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

impl ControlPlane {
    /// Starts a control plane in a fresh run directory and waits until it is ready.
    ///
    /// Blocking: it drives its own small runtime to poll `/readyz`, so call it from a plain
    /// thread (as [`crate::shared`] does), not from inside an async test.
    pub fn start() -> Result<Self, BoxError> {
        Self::start_with(&[])
    }

    /// [`ControlPlane::start`] with extra kube-apiserver flags (`--watch-cache=false`, ...).
    pub fn start_with(apiserver_flags: &[&str]) -> Result<Self, BoxError> {
        Self::start_options(apiserver_flags, false)
    }

    /// [`ControlPlane::start`] plus kube-scheduler, the workload controllers (Deployment,
    /// ReplicaSet, StatefulSet, DaemonSet, node lifecycle) and a node that runs pods of
    /// [`crate::node::IMAGE`]. Returns once the Node is Ready and schedulable.
    pub fn start_with_node() -> Result<Self, BoxError> {
        Self::start_options(&[], true)
    }

    fn start_options(apiserver_flags: &[&str], with_node: bool) -> Result<Self, BoxError> {
        let bin_dir = crate::binaries::locate()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            // A port picked as free can be taken before the process binds it: start again.
            match Self::start_once(&bin_dir, apiserver_flags, with_node) {
                Ok(cp) => return Ok(cp),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn start_once(
        bin_dir: &Path,
        apiserver_flags: &[&str],
        with_node: bool,
    ) -> Result<Self, BoxError> {
        let base = std::env::temp_dir().join("tokenwarden-testenv");
        let dir = reaper::run_dir(&base)?;
        let pki = Pki::generate(&dir.join("pki"))?;
        let [etcd_port, peer_port, apiserver_port, kubelet_port] = free_ports::<4>()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let admin_kubeconfig = write_kubeconfig(&dir, "admin", &server, &pki, &pki.admin)?;
        let unprivileged_kubeconfig =
            write_kubeconfig(&dir, "unprivileged", &server, &pki, &pki.unprivileged)?;

        let started = Instant::now();
        let mut processes = Vec::new();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bin_dir.join("etcd"));
        etcd.args([
            "--name",
            "testenv",
            "--log-level",
            "warn",
            "--unsafe-no-fsync",
            // 8 GiB, etcd's largest advised: the default 2 GiB fills at the bench's 100k.
            "--quota-backend-bytes",
            "8589934592",
        ])
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &etcd_url])
        .args(["--advertise-client-urls", &etcd_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("testenv={peer_url}")]);
        processes.push(spawn_logged(etcd, &dir, "etcd")?);
        let etcd_addr = format!("127.0.0.1:{etcd_port}");

        let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
        apiserver
            .args(["--etcd-servers", &etcd_url])
            .args(["--secure-port", &apiserver_port.to_string()])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .arg("--cert-dir")
            .arg(dir.join("apiserver-certs"))
            .arg("--tls-cert-file")
            .arg(&pki.serving_cert)
            .arg("--tls-private-key-file")
            .arg(&pki.serving_key)
            .arg("--client-ca-file")
            .arg(&pki.ca_cert)
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(&pki.service_account_public_key)
            .arg("--service-account-signing-key-file")
            .arg(&pki.service_account_key)
            .args(["--service-cluster-ip-range", "10.0.0.0/24"])
            .args(["--authorization-mode", "RBAC"])
            // `kubectl logs` and `exec` reach a node's kubelet with the one certificate of
            // the kubelet's own CA.
            .arg("--kubelet-client-certificate")
            .arg(&pki.apiserver_kubelet_client.cert)
            .arg("--kubelet-client-key")
            .arg(&pki.apiserver_kubelet_client.key)
            .args(["--kubelet-preferred-address-types", "InternalIP"])
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .args(["--allow-privileged=true", "--v=1"])
            .args(apiserver_flags);
        processes.push(spawn_logged(apiserver, &dir, "kube-apiserver")?);

        let mut cp = ControlPlane {
            dir,
            bin_dir: bin_dir.to_path_buf(),
            server,
            started_in: Duration::ZERO,
            has_node: with_node,
            admin_kubeconfig,
            unprivileged_kubeconfig,
            etcd_addr,
            processes: Mutex::new(processes),
        };
        if let Err(e) = cp.wait_ready() {
            cp.stop();
            return Err(e);
        }

        // Garbage collection (ownerReferences), namespace deletion, and the aggregation of
        // ClusterRoles into the built-in edit/view/admin (the chart aggregates WorkspaceTokens).
        // With a node, the workload controllers too; without one they stay off, so tests can
        // write a workload's rollout status themselves.
        let mut controllers =
            "garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller"
                .to_string();
        if with_node {
            controllers.push_str(WORKLOAD_CONTROLLERS);
        }
        let mut kcm = Command::new(bin_dir.join("kube-controller-manager"));
        kcm.arg("--kubeconfig").arg(&cp.admin_kubeconfig).args([
            "--controllers",
            &controllers,
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5",
            "--v=1",
        ]);
        let kcm = spawn_logged(kcm, &cp.dir, "kube-controller-manager")?;
        cp.processes.lock().unwrap().push(kcm);
        if with_node && let Err(e) = cp.start_node(kubelet_port, &pki) {
            cp.stop();
            return Err(e);
        }
        cp.started_in = started.elapsed();
        Ok(cp)
    }

    /// kube-scheduler and the node, then waits until the Node is Ready and schedulable.
    fn start_node(&self, kubelet_port: u16, pki: &Pki) -> Result<(), BoxError> {
        let mut scheduler = Command::new(self.bin_dir.join("kube-scheduler"));
        scheduler
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["--leader-elect=false", "--secure-port=0", "--v=1"]);
        let scheduler = spawn_logged(scheduler, &self.dir, "kube-scheduler")?;
        self.processes.lock().unwrap().push(scheduler);

        let node = crate::node::command(&crate::node::Launch {
            dir: &self.dir.join("node"),
            bin_dir: &self.bin_dir,
            kubeconfig: &self.admin_kubeconfig,
            client_ca: &pki.kubelet_client_ca,
            kubelet_port,
        })?;
        let node = spawn_logged(node, &self.dir, "node")?;
        self.processes.lock().unwrap().push(node);
        block_on(self.node_ready())
    }

    /// Waits until the Node reports Ready and carries no taint (the node lifecycle controller
    /// lifts `not-ready` once the kubelet reports Ready).
    async fn node_ready(&self) -> Result<(), BoxError> {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.admin_client().await);
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            if let Ok(Some(node)) = nodes.get_opt(crate::node::NODE_NAME).await {
                let status = node.status.unwrap_or_default();
                let ready = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let tainted = node
                    .spec
                    .and_then(|s| s.taints)
                    .is_some_and(|t| !t.is_empty());
                if ready && !tainted {
                    return Ok(());
                }
            }
            if let Some(exited) = self.exited_during("the node's start") {
                return Err(exited);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} not Ready after {NODE_READY_TIMEOUT:?}; logs in {}",
                    crate::node::NODE_NAME,
                    self.dir.join("node").display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn wait_ready(&self) -> Result<(), BoxError> {
        block_on(self.ready())
    }

    /// Waits until kube-apiserver's `/readyz` answers ok (which needs etcd too).
    pub async fn ready(&self) -> Result<(), BoxError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.admin_client().await;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "kube-apiserver not ready after {READY_TIMEOUT:?}; logs in {}",
                        self.dir.display()
                    )
                    .into());
                }
                _ => {}
            }
            if let Some(exited) = self.exited_during("start") {
                return Err(exited);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The error to give when a process exited while waiting for `what`: its log's last line.
    fn exited_during(&self, what: &str) -> Option<BoxError> {
        let exited = self.exited_process()?;
        let log = self.dir.join(format!("{exited}.log"));
        Some(
            format!(
                "{exited} exited during {what} ({}): {}",
                log.display(),
                last_line(&log)
            )
            .into(),
        )
    }

    fn exited_process(&self) -> Option<&'static str> {
        let mut processes = self.processes.lock().unwrap();
        processes.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(_)) => Some(p.name),
            _ => None,
        })
    }

    /// Kills every process of this control plane now.
    pub fn stop(&self) {
        for process in self.processes.lock().unwrap().iter_mut() {
            reaper::kill(&mut process.child);
        }
    }

    /// SIGKILLs one process (`etcd`, `kube-apiserver` or `kube-controller-manager`), as a
    /// crash would; [`ControlPlane::start_process`] brings it back.
    pub fn kill_process(&self, name: &str) {
        let mut processes = self.processes.lock().unwrap();
        let process = processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no control-plane process {name}"));
        reaper::kill(&mut process.child);
    }

    /// Starts a killed process again with the same flags, data and port (its log is appended
    /// to), then waits until the API server is ready.
    pub async fn start_process(&self, name: &str) -> Result<(), BoxError> {
        {
            let mut processes = self.processes.lock().unwrap();
            let process = processes
                .iter_mut()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no control-plane process {name}"));
            if process.child.try_wait()?.is_none() {
                return Err(format!("{name} is still running").into());
            }
            let command = Process::command(&process.program, &process.args);
            *process = spawn_logged(command, &self.dir, process.name)?;
        }
        self.ready().await
    }

    /// Takes a backup of etcd the way an operator of a cluster may: stops kube-apiserver and
    /// etcd, copies etcd's data directory to `to`, and starts both again (waiting until the
    /// API server is ready).
    pub async fn snapshot_etcd(&self, to: &Path) -> Result<(), BoxError> {
        self.with_etcd_stopped(|data| copy_dir(data, to)).await
    }

    /// Restores the backup [`ControlPlane::snapshot_etcd`] took: stops kube-apiserver and
    /// etcd, replaces etcd's data directory with the copy at `from`, and starts both again.
    /// The cluster is back at the backup: every object and resourceVersion as it was then.
    pub async fn restore_etcd(&self, from: &Path) -> Result<(), BoxError> {
        self.with_etcd_stopped(|data| {
            std::fs::remove_dir_all(data)?;
            copy_dir(from, data)
        })
        .await
    }

    /// Stops kube-apiserver then etcd, runs `change` on etcd's data directory, and starts
    /// etcd then kube-apiserver again with the same flags and ports.
    async fn with_etcd_stopped(
        &self,
        change: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), BoxError> {
        self.kill_process("kube-apiserver");
        self.kill_process("etcd");
        change(&self.dir.join("etcd"))?;
        for name in ["etcd", "kube-apiserver"] {
            let mut processes = self.processes.lock().unwrap();
            let process = processes
                .iter_mut()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no control-plane process {name}"));
            let command = Process::command(&process.program, &process.args);
            *process = spawn_logged(command, &self.dir, process.name)?;
        }
        self.ready().await
    }

    /// Compacts etcd's history at its current revision (what kube-apiserver does every
    /// five minutes): a watch resumed from an older resourceVersion then gets 410 Gone.
    /// Returns the revision compacted at.
    pub fn compact_etcd(&self) -> Result<u64, BoxError> {
        // The JSON gateway wants keys base64-encoded: "AA==" is the key "\0", and range_end
        // "AA==" means every key from there, so the header carries the store's revision.
        let (code, body) = crate::probe::http_post_json(
            &self.etcd_addr,
            "/v3/kv/range",
            r#"{"key":"AA==","range_end":"AA==","count_only":true}"#,
        )
        .ok_or("etcd is not reachable")?;
        let revision = json_body(code, &body)?["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .ok_or_else(|| format!("no revision in etcd's answer: {body}"))?;
        let compaction = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (code, body) =
            crate::probe::http_post_json(&self.etcd_addr, "/v3/kv/compaction", &compaction)
                .ok_or("etcd is not reachable")?;
        match json_body(code, &body) {
            // kube-apiserver's own periodic compaction got there first: compacted all the same.
            Err(e) if e.to_string().contains("has been compacted") => Ok(revision),
            Err(e) => Err(e),
            Ok(_) => Ok(revision),
        }
    }

    /// A client with cluster-admin rights (`system:masters`).
    pub async fn admin_client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// A client for [`crate::UNPRIVILEGED_USER`], who has no RBAC until a test grants it.
    pub async fn unprivileged_client(&self) -> kube::Client {
        client_from(&self.unprivileged_kubeconfig).await
    }

    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    pub fn unprivileged_kubeconfig(&self) -> &Path {
        &self.unprivileged_kubeconfig
    }

    /// `kubectl` from the same build, pointed at this control plane as admin (its discovery
    /// cache in the run directory, not in `~/.kube`).
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.admin_kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"));
        cmd
    }
}

/// Runs `wait` on a small runtime of its own: the start is blocking (see [`ControlPlane::start`]).
fn block_on(wait: impl std::future::Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait)
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read testenv kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load testenv kubeconfig");
    kube::Client::try_from(config).expect("build testenv client")
}

/// Starts `command` with its output appended to `<dir>/<name>.log`.
/// `cp -a from to`: etcd's data directory, with its permissions.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp -a {} {}: {status}",
            from.display(),
            to.display()
        )))
    }
}

fn spawn_logged(mut command: Command, dir: &Path, name: &'static str) -> Result<Process, BoxError> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let program = PathBuf::from(command.get_program());
    let args = command.get_args().map(OsString::from).collect();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child =
        reaper::spawn(command).map_err(|e| format!("start {name} ({}): {e}", dir.display()))?;
    Ok(Process {
        name,
        program,
        args,
        child,
    })
}

/// The JSON of an etcd gateway answer, or its error.
fn json_body(code: u16, body: &str) -> Result<serde_json::Value, BoxError> {
    // The gateway may answer chunked: the JSON object is what lies between the outer braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => body,
    };
    if code != 200 {
        return Err(format!("etcd answered {code}: {json}").into());
    }
    Ok(serde_json::from_str(json)?)
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    // Hold every listener until all are picked, so the N ports differ.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    pki: &Pki,
    identity: &ClientIdentity,
) -> Result<PathBuf, BoxError> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testenv", "cluster": {
            "server": server,
            "certificate-authority": pki.ca_cert,
        }}],
        "users": [{ "name": name, "user": {
            "client-certificate": identity.cert,
            "client-key": identity.key,
        }}],
        "contexts": [{ "name": name, "context": { "cluster": "testenv", "user": name, "namespace": "default" }}],
        "current-context": name,
    });
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(path)
}
