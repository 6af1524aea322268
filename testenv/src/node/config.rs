//! The files the node runs from: containerd's config, the kubelet's, the CNI network and the
//! script that is PID 1 of the node's namespaces.

use std::path::Path;

/// containerd 1.6 with its own root, state and socket under the node's directory.
///
/// `restrict_oom_score_adj`: this sandbox refuses a lower `oom_score_adj`, and without it runc
/// fails every pod sandbox with `can't get final child's PID from pipe: EOF`.
pub fn containerd(dir: &Path, image: &str) -> String {
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
[grpc]
  address = "{dir}/containerd/containerd.sock"
[ttrpc]
  address = "{dir}/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{dir}/cni/conf"
"#
    )
}

/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A point-to-point veth per pod with an address from `subnet`: pods get their own network
/// namespace and a pod IP, and nothing outlives the pod (no bridge, no NAT rules).
pub fn cni_network(dir: &Path, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "tokenwarden-testenv",
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "dataDir": dir.join("cni/ipam"),
            },
        }],
    })
    .to_string()
}

/// The kubelet on cgroup v1 (these machines have no v2). It answers only the holder of a
/// certificate from `client_ca`, a CA of its own that signs the API server's client
/// certificate and nothing else (`kubectl logs`, `exec`).
pub fn kubelet(dir: &Path, port: u16, client_ca: &Path, sync_period_s: u64) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": false,
        "enforceNodeAllocatable": [],
        "failSwapOn": false,
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": false },
            "x509": { "clientCAFile": client_ca },
        },
        "authorization": { "mode": "AlwaysAllow" },
        "containerRuntimeEndpoint": format!("unix://{}/containerd/containerd.sock", dir.display()),
        "syncFrequency": format!("{sync_period_s}s"),
        // The one image is imported, never pulled: it must never be garbage-collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        // The node shares the host's disk with builds: at the defaults (10 % free, 15 % for
        // images) a host 85 % full tainted it DiskPressure and no pod was scheduled. Set in
        // full: a partial evictionHard leaves the other signals without a threshold.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "makeIPTablesUtilChains": false,
        "podLogsDir": dir.join("pod-logs"),
    })
    .to_string()
}

/// PID 1 of the node's own PID and mount namespaces. Everything the node mounts (Secret
/// volumes' tmpfs, overlay root filesystems, network namespaces) lives in that mount
/// namespace, and every process in that PID namespace: when PID 1 dies, the kernel kills them
/// all and the mounts go with the namespace, however the test process ended.
///
/// Paths the kubelet, containerd, runc and CNI write outside their configured directories
/// (`/run/containerd`, `/var/lib/kubelet`, `/var/lib/cni`, `/var/log/containers`) are fresh
/// tmpfs inside the namespace, so nothing lands on the host.
pub struct Init<'a> {
    pub dir: &'a Path,
    pub containerd: &'a Path,
    pub ctr: &'a Path,
    pub kubelet: &'a Path,
    pub kubeconfig: &'a Path,
    pub image_tar: &'a Path,
    pub node_name: &'a str,
}

impl Init<'_> {
    pub fn script(&self) -> String {
        let dir = self.dir.display();
        let (containerd, ctr, kubelet) = (
            self.containerd.display(),
            self.ctr.display(),
            self.kubelet.display(),
        );
        let (kubeconfig, image_tar, node) = (
            self.kubeconfig.display(),
            self.image_tar.display(),
            self.node_name,
        );
        format!(
            r#"set -eu
for private in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 tokenwarden-node "$private"; done
mount --make-rshared /
"{containerd}" --config "{dir}/containerd.toml" >>"{dir}/containerd.log" 2>&1 &
i=0
until [ -S "{dir}/containerd/containerd.sock" ]; do
  i=$((i + 1)); [ $i -lt 300 ] || {{ echo "containerd did not open its socket" >&2; exit 1; }}
  sleep 0.1
done
"{ctr}" --address "{dir}/containerd/containerd.sock" -n k8s.io images import "{image_tar}" >&2
"{kubelet}" --config "{dir}/kubelet.json" --kubeconfig "{kubeconfig}" --root-dir "{dir}/kubelet" \
  --cert-dir "{dir}/kubelet/pki" --hostname-override "{node}" --v=1 >>"{dir}/kubelet.log" 2>&1 &
# Either one ending ends the node: PID 1 exits and the kernel tears the rest down.
wait -n
echo "containerd or the kubelet exited (logs in {dir})" >&2
exit 1
"#
        )
    }
}
