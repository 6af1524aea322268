//! `tokenwarden`: the controller and its CLI. Argument parsing and wiring only.

use std::process::ExitCode;

#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's options, read at its start: one arena (the default, four per core, each keeps
// its own partly used pages: 2 MiB more RSS at 10k tokens on two cores) and freed pages given
// back after a second (the default waits ten). muzzy_decay_ms:0, pages given back at once
// rather than first marked free (which the RSS still counts), is jemalloc 5.3's default,
// written out so it stays. No thread caches: each thread kept freed objects of every size
// for its next allocations, which an idle operator never makes (at 10k tokens 1.5 MiB of
// RSS, for no measurable CPU over a convergence). BENCHMARKS.md, "Memory at 10k".
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache:false\0";

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

#[cfg(all(test, target_os = "linux", not(target_env = "msvc")))]
mod tests {
    #[test]
    fn jemalloc_keeps_one_arena_no_thread_caches_and_gives_freed_pages_back_soon() {
        // dirty_decay_ms shows the options are linked in (one arena is also the default on
        // one CPU, muzzy_decay_ms 0 always).
        let read = |name: &[u8]| unsafe { tikv_jemalloc_ctl::raw::read::<isize>(name) };
        assert_eq!(tikv_jemalloc_ctl::opt::narenas::read().ok(), Some(1));
        assert_eq!(read(b"opt.dirty_decay_ms\0").ok(), Some(1000));
        assert_eq!(read(b"opt.muzzy_decay_ms\0").ok(), Some(0));
        let tcache = unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.tcache\0") };
        assert_eq!(tcache.ok(), Some(false));
        assert_eq!(
            tikv_jemalloc_ctl::opt::background_thread::read().ok(),
            Some(true)
        );
    }
}
