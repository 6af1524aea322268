//! A real node beside the control plane: containerd, the kubelet and one local image, so
//! tests and the demo run pods that mount the rotated Secret.
//!
//! The node runs in PID and mount namespaces of its own (see [`config::Init`]): killing its
//! first process ends every container with it and drops every mount it made, however the
//! test process ended. What is left on the host are empty cgroup directories of its
//! containers and the kernel settings the kubelet and CNI change (`kernel.panic`,
//! `vm.overcommit_memory`, `net.ipv4.ip_forward`, ...), which [`release`] removes and
//! restores with the run directory.
//!
//! Pods get their own network namespace and an address from a per-run /24 through the CNI
//! `ptp` plugin (Debian's containernetworking-plugins): no bridge or NAT rule outlives them.

mod config;
pub mod image;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use image::IMAGE;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The node's name in the API.
pub const NODE_NAME: &str = "testenv-node";

/// How often the kubelet resyncs each pod, which bounds how long a mounted Secret volume
/// lags behind the Secret (the kubelet's default is one minute).
pub const SYNC_PERIOD: Duration = Duration::from_secs(10);

/// The Debian packages a node needs, for the error that names what is missing.
pub const PACKAGES: &str = "containerd runc busybox-static containernetworking-plugins";

/// What [`command`] needs from the control plane.
pub struct Launch<'a> {
    /// The node's directory (created here): configs, logs, containerd's and the kubelet's state.
    pub dir: &'a Path,
    pub bin_dir: &'a Path,
    /// The kubelet's credentials for the API server.
    pub kubeconfig: &'a Path,
    /// The CA whose client certificates the kubelet accepts (the API server's, for logs/exec).
    pub client_ca: &'a Path,
    pub kubelet_port: u16,
}

/// Writes the node's files and returns the command that runs it (`unshare` around
/// [`config::Init`]); the caller spawns it and waits for the Node to be Ready.
pub fn command(launch: &Launch<'_>) -> Result<Command, BoxError> {
    let tools = Tools::find()?;
    let dir = launch.dir;
    std::fs::create_dir_all(dir.join("cni/conf"))?;
    save_sysctls(dir)?;
    let image_tar = dir.join("image.tar");
    image::write_image(&tools.busybox, &image_tar)?;
    std::fs::write(dir.join("containerd.toml"), config::containerd(dir, IMAGE))?;
    std::fs::write(
        dir.join("cni/conf/10-pods.conflist"),
        config::cni_network(dir, &pod_subnet()),
    )?;
    std::fs::write(
        dir.join("kubelet.json"),
        config::kubelet(
            dir,
            launch.kubelet_port,
            launch.client_ca,
            SYNC_PERIOD.as_secs(),
        ),
    )?;
    let kubelet = launch.bin_dir.join("kubelet");
    let init = config::Init {
        dir,
        containerd: &tools.containerd,
        ctr: &tools.ctr,
        kubelet: &kubelet,
        kubeconfig: launch.kubeconfig,
        image_tar: &image_tar,
        node_name: NODE_NAME,
    };
    std::fs::write(dir.join("init.sh"), init.script())?;
    let mut command = Command::new(&tools.unshare);
    command
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["--propagation", "private", "bash"])
        .arg(dir.join("init.sh"));
    Ok(command)
}

/// The programs the node runs, found on `PATH` (runc and the shim are found by containerd).
struct Tools {
    containerd: PathBuf,
    ctr: PathBuf,
    unshare: PathBuf,
    busybox: PathBuf,
}

impl Tools {
    fn find() -> Result<Self, BoxError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the node runs containers: it needs root".into());
        }
        let missing: Vec<&str> = ["containerd", "containerd-shim-runc-v2", "runc", "ctr"]
            .into_iter()
            .filter(|tool| on_path(tool).is_err())
            .chain(
                ["ptp", "host-local"]
                    .into_iter()
                    .filter(|plugin| !Path::new(config::CNI_BIN_DIR).join(plugin).exists()),
            )
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the node needs {} (Debian: apt-get install {PACKAGES})",
                missing.join(", ")
            )
            .into());
        }
        Ok(Tools {
            containerd: on_path("containerd")?,
            ctr: on_path("ctr")?,
            unshare: on_path("unshare")?,
            busybox: image::static_busybox()?,
        })
    }
}

/// The first `name` on `PATH`.
fn on_path(name: &str) -> Result<PathBuf, BoxError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("{name} is not installed (the node needs Debian's {PACKAGES})").into()
        })
}

/// A /24 of 10.244.0.0/16 that no host route uses yet, so a demo and a test run on one
/// machine do not hand out the same pod address (ptp routes each pod address on the host).
fn pod_subnet() -> String {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let used: Vec<u8> = routes
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        // /proc/net/route shows addresses in host byte order (little-endian here).
        .map(|dest| dest.to_le_bytes())
        .filter(|octets| octets[0] == 10 && octets[1] == 244)
        .map(|octets| octets[2])
        .collect();
    let start = std::process::id() % 256;
    let third = (0..256u32)
        .map(|i| ((start + i) % 256) as u8)
        .find(|third| !used.contains(third))
        .unwrap_or(start as u8);
    format!("10.244.{third}.0/24")
}

/// Kernel settings the kubelet (its kernel defaults) and the CNI ptp plugin change.
const SYSCTLS: [&str; 7] = [
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
];

/// Records the kernel settings the node will change, for [`release`] to put back.
fn save_sysctls(dir: &Path) -> Result<(), BoxError> {
    let saved: String = SYSCTLS
        .iter()
        .filter_map(|key| {
            let value = std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok()?;
            Some(format!("{key} {}\n", value.trim()))
        })
        .collect();
    std::fs::write(dir.join("sysctl.saved"), saved)?;
    Ok(())
}

/// Once the node's processes are gone: its containers' cgroups removed, the kernel settings
/// it changed put back. Idempotent; a directory without a node is left alone.
pub fn release(node_dir: &Path) {
    release_cgroups(node_dir);
    let Ok(saved) = std::fs::read_to_string(node_dir.join("sysctl.saved")) else {
        return;
    };
    for (key, value) in saved.lines().filter_map(|l| l.split_once(' ')) {
        let path = Path::new("/proc/sys").join(key);
        if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != value) {
            let _ = std::fs::write(&path, value);
        }
    }
}

/// Removes the cgroups runc made for the node's containers (`k8s.io/<id>` under each
/// controller's hierarchy on cgroup v1, under the unified root on v2), once their processes
/// are gone, then `k8s.io` itself where it is left empty. Only ids of this node's tasks are
/// touched (a non-empty cgroup cannot be removed).
fn release_cgroups(node_dir: &Path) {
    let tasks = node_dir.join("containerd/state/io.containerd.runtime.v2.task/k8s.io");
    let Ok(entries) = std::fs::read_dir(&tasks) else {
        return;
    };
    let ids: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots = controllers
        .flatten()
        .map(|c| c.path())
        .chain([PathBuf::from("/sys/fs/cgroup")]);
    let cgroups: Vec<PathBuf> = roots
        .flat_map(|root| ids.iter().map(move |id| root.join("k8s.io").join(id)))
        .filter(|cgroup| cgroup.is_dir())
        .collect();
    // The kernel kills the node's processes as its PID namespace ends: a cgroup is busy
    // until the last one is gone.
    for _ in 0..50 {
        let busy = cgroups
            .iter()
            .filter(|cgroup| std::fs::remove_dir(cgroup).is_err() && cgroup.is_dir())
            .count();
        if busy == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let parents: std::collections::BTreeSet<&Path> = cgroups
        .iter()
        .filter_map(|cgroup| cgroup.parent())
        .collect();
    for parent in parents {
        let _ = std::fs::remove_dir(parent);
    }
}
