//! `controlplane`: starts the local control plane and keeps it up until SIGINT/SIGTERM.
//!
//! Used by `make demo`. With `--node`, a node runs pods too (see `tokenwarden_testenv::node`). Writes an admin kubeconfig to the path given with `--kubeconfig`
//! once the API server is ready, prints where everything is, and on a signal stops every
//! process and removes the run directory (see `tokenwarden_testenv::reaper`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut kubeconfig_out: Option<PathBuf> = None;
    let mut with_node = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig" => kubeconfig_out = args.next().map(PathBuf::from),
            "--node" => with_node = true,
            "-h" | "--help" => {
                println!("usage: controlplane [--kubeconfig PATH] [--node]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("controlplane: unknown argument {other:?} (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let start = if with_node {
        tokenwarden_testenv::ControlPlane::start_with_node()
    } else {
        tokenwarden_testenv::ControlPlane::start()
    };
    let cp = match start {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("controlplane: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(out) = &kubeconfig_out {
        // Written last and atomically: its presence tells a script the API server is ready.
        let tmp = out.with_extension("tmp");
        if let Err(e) =
            std::fs::copy(cp.admin_kubeconfig(), &tmp).and_then(|_| std::fs::rename(&tmp, out))
        {
            eprintln!("controlplane: write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "controlplane: {} {}ready in {:.1?}; logs in {}; kubeconfig {}",
        cp.server,
        if cp.has_node { "with a node " } else { "" },
        cp.started_in,
        cp.dir.display(),
        kubeconfig_out
            .as_deref()
            .unwrap_or(cp.admin_kubeconfig())
            .display()
    );
    // SIGINT/SIGTERM are handled by the reaper's signal thread: it stops everything and exits.
    loop {
        std::thread::park();
    }
}
