//! Nothing the control plane starts outlives the process that started it.
//!
//! - Child processes are forked from one thread that lives as long as the process, with
//!   `PR_SET_PDEATHSIG=SIGKILL`: the kernel kills them when the process dies, however it dies
//!   (the signal follows the forking *thread*, which is why test threads must not fork them).
//! - On a normal exit (libtest calls `exit`, even after a panicking test) an `atexit` hook
//!   kills the children and removes the run's temp dirs; SIGINT/SIGTERM/SIGHUP run the same
//!   hook, then exit.
//! - A run killed with SIGKILL leaves its temp dir behind; the next start sweeps every run dir
//!   whose owning process is gone.
//! - A node's containers and mounts live in its own PID and mount namespaces, which end with
//!   its first process (see [`crate::node`]); its empty cgroups go with the run dir.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, Once, OnceLock, mpsc};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static RUN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HOOKS: Once = Once::new();

/// Starts `command` as a child that dies with this process and is killed at exit.
pub fn spawn(command: Command) -> io::Result<Child> {
    install_hooks();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // The sender is kept in a static, so this loop (and the thread) never ends.
                for mut request in incoming {
                    let child = fork_supervised(&mut request.command);
                    if let Ok(child) = &child {
                        CHILDREN.lock().unwrap().push(child.id());
                    }
                    let _ = request.reply.send(child);
                }
            })
            .expect("spawn the testenv spawner thread");
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))?
}

fn fork_supervised(command: &mut Command) -> io::Result<Child> {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Own process group: a terminal's Ctrl-C reaches only us, and we tear down in order.
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Kills a child started by [`spawn`] now (SIGKILL) and forgets it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    CHILDREN.lock().unwrap().retain(|pid| *pid != child.id());
}

/// Creates a fresh run directory under `base`, removed at exit. Sweeps run dirs of dead runs.
pub fn run_dir(base: &Path) -> io::Result<PathBuf> {
    install_hooks();
    std::fs::create_dir_all(base)?;
    sweep_dead_runs(base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = base.join(format!("{}-{nanos}", std::process::id()));
    // Keys and kubeconfigs live here: for this user only.
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    RUN_DIRS.lock().unwrap().push(dir.clone());
    Ok(dir)
}

fn sweep_dead_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            remove_run_dir(&entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn install_hooks() {
    HOOKS.call_once(|| {
        // SAFETY: registering a plain `extern "C"` function.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        if let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            std::thread::Builder::new()
                .name("testenv-signals".into())
                .spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        cleanup();
                        std::process::exit(128 + signal);
                    }
                })
                .expect("spawn the testenv signal thread");
        }
    });
}

extern "C" fn cleanup_at_exit() {
    cleanup();
}

/// Kills every child still running and removes every run dir. Idempotent.
pub fn cleanup() {
    let children: Vec<u32> =
        std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in children {
        // SAFETY: plain kill(2) and waitpid(2) on our own children.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
    let dirs: Vec<PathBuf> =
        std::mem::take(&mut *RUN_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    let keep = std::env::var_os("TOKENWARDEN_KEEP_TESTENV").is_some();
    for dir in dirs {
        crate::node::release(&dir.join("node"));
        if !keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes a run dir once its processes are gone, after releasing what its node left on the
/// host (cgroups, kernel settings).
fn remove_run_dir(dir: &Path) {
    crate::node::release(&dir.join("node"));
    let _ = std::fs::remove_dir_all(dir);
}
