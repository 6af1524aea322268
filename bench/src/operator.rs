//! The operator under test: the release binary as a child process, its probes, its metrics
//! and its memory as the kernel counts it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenwarden_testenv::{probe, reaper};

pub struct OperatorProcess {
    child: Child,
    metrics_addr: String,
    pub started: Instant,
}

/// Resident memory in MiB: now (`VmRSS`), of it the pages mapped from files (`RssFile`:
/// mostly the binary's code), and the high-water mark (`VmHWM`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub now_mib: f64,
    pub file_mib: f64,
    pub peak_mib: f64,
}

/// `127.0.0.1:<a port free now>`.
pub(crate) fn free_local_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

impl OperatorProcess {
    pub fn start(binary: &Path, kubeconfig: &Path, concurrency: u16, log: PathBuf) -> Self {
        Self::start_with(binary, kubeconfig, concurrency, log, &[])
    }

    /// [`OperatorProcess::start`] with more flags.
    pub fn start_with(
        binary: &Path,
        kubeconfig: &Path,
        concurrency: u16,
        log: PathBuf,
        args: &[&str],
    ) -> Self {
        let metrics_addr = free_local_addr();
        let mut command = Command::new(binary);
        command
            .arg("run")
            .args(["--metrics-addr", &metrics_addr])
            .args(["--concurrency", &concurrency.to_string()])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG");
        Self::spawn(command, metrics_addr, &log)
    }

    /// Any operator's `command`, its output to `log`, serving metrics at `metrics_addr`.
    pub(crate) fn spawn(mut command: Command, metrics_addr: String, log: &Path) -> Self {
        let log = std::fs::File::create(log).expect("operator log file");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = reaper::spawn(command).expect("start the operator");
        OperatorProcess {
            child,
            metrics_addr,
            started: Instant::now(),
        }
    }

    /// The page at `path` on the metrics address, when it answers 200.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        match probe::http_get(&self.metrics_addr, path) {
            Some((200, page)) => Some(page),
            _ => None,
        }
    }

    /// Whether the process has not exited.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/readyz` every 20 ms; returns the time from start to the first 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = probe::http_get(&self.metrics_addr, "/readyz") {
                return self.started.elapsed();
            }
            assert!(
                matches!(self.child.try_wait(), Ok(None)),
                "the operator exited before it was ready"
            );
            assert!(
                Instant::now() < deadline,
                "operator not ready in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of every sample of one metric family on the operator's `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let Some((200, page)) = probe::http_get(&self.metrics_addr, "/metrics") else {
            return 0.0;
        };
        page.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// One scrape of `/metrics`: the page and how long it took to answer.
    pub fn scrape(&self) -> (String, Duration) {
        let started = Instant::now();
        let page = probe::http_get(&self.metrics_addr, "/metrics").map(|(_, page)| page);
        (page.unwrap_or_default(), started.elapsed())
    }

    pub fn rss(&self) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<operator>/status");
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Rss {
            now_mib: kib("VmRSS:") / 1024.0,
            file_mib: kib("RssFile:") / 1024.0,
            peak_mib: kib("VmHWM:") / 1024.0,
        }
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reaper::kill(&mut self.child);
    }
}
