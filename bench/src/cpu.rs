//! CPU seconds per process, from /proc: where a phase's time went on a machine where the
//! operator, the API server and etcd share two cores.

use std::collections::BTreeMap;
use std::path::Path;

use tokenwarden_testenv::ControlPlane;

/// utime + stime of `pid`, in seconds (clock ticks are 1/100 s on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The processes (binaries under `bin_dir`, by binary name) of the control plane whose run
/// directory is `run_dir` (its processes name it on their command lines): other control
/// planes may run from the same binaries at the same time.
pub fn control_plane_pids_in(bin_dir: &Path, run_dir: &Path) -> BTreeMap<String, u32> {
    let run_dir = run_dir.as_os_str().as_encoded_bytes();
    pids_where(bin_dir, |pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(run_dir.len()).any(|w| w == run_dir))
    })
}

fn pids_where(bin_dir: &Path, keep: impl Fn(u32) -> bool) -> BTreeMap<String, u32> {
    let mut pids = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(entry.path().join("exe"))
            && exe.starts_with(bin_dir)
            && keep(pid)
            && let Some(name) = exe.file_name().and_then(|n| n.to_str())
        {
            pids.insert(name.to_string(), pid);
        }
    }
    pids
}

/// CPU seconds of the control plane's processes, the operator's and this process's.
pub fn snapshot(cp: &ControlPlane, operator: Option<u32>) -> BTreeMap<String, f64> {
    let mut cpu: BTreeMap<String, f64> = control_plane_pids_in(&cp.bin_dir, &cp.dir)
        .into_iter()
        .map(|(name, pid)| (name, cpu_seconds(pid)))
        .collect();
    if let Some(pid) = operator {
        cpu.insert("tokenwarden".into(), cpu_seconds(pid));
    }
    cpu.insert("bench".into(), cpu_seconds(std::process::id()));
    cpu
}

pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                ((s - before.get(name).copied().unwrap_or(0.0)) * 100.0).round() / 100.0,
            )
        })
        .collect()
}
