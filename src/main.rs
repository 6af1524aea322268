//! `tokenwarden`: the controller and its CLI. Argument parsing and wiring only.

use std::process::ExitCode;

#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's statistics for `/metrics` (`tokenwarden_heap_*_bytes`): the bench and an on-call
// tell the live caches from the pages the allocator keeps.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
fn jemalloc_stats() -> Option<tokenwarden::heap::HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(tokenwarden::heap::HeapStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", not(target_env = "msvc")))]
    tokenwarden::heap::install(jemalloc_stats);
    let asked_by_kubectl = tokenwarden::completion::asked_by_kubectl();
    let cli = asked_by_kubectl
        .is_none()
        .then(tokenwarden::cli::Cli::parse_args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Run as kubectl_complete-tokenwarden: kubectl asks for completions of its plugin.
    let Some(cli) = cli else {
        let words = asked_by_kubectl.unwrap_or_default();
        let cli = <tokenwarden::cli::Cli as clap::CommandFactory>::command();
        let answer = tokenwarden::completion::for_kubectl(cli, &words);
        print!("{}", runtime.block_on(answer));
        return ExitCode::SUCCESS;
    };
    match runtime.block_on(tokenwarden::cli::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
