//! The benchmark at BENCH_N=50, so `make bench` cannot rot: it must converge every token,
//! write nothing while idle or across a restart, and rotate every token in both storms.
//! Timings are the benchmark's business (BENCHMARKS.md), never asserted here.

mod support;

use std::time::Duration;

use tokenwarden_bench::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tokens_converge_stay_quiet_through_a_restart_and_rotate_in_both_storms() {
    let cp = tokenwarden_testenv::shared();
    let cfg = Config {
        n: 50,
        operator: env!("CARGO_BIN_EXE_tokenwarden").into(),
        concurrency: 16,
        idle: Duration::from_secs(10),
        storm_every: Duration::from_secs(15),
        out_dir: support::artifacts_dir(),
        inventory_interval: Duration::from_secs(5),
        storms: true,
    };
    let figures = tokenwarden_bench::run(cp, &cfg).await;
    eprintln!("{}", figures.table());
    // For the leak scan: the statuses name every minted token's hash.
    support::dump(&cp.admin_client().await, &figures.namespace, None).await;

    // run() itself fails unless all 50 were seen Ready at v1, v2 and v3.
    assert_eq!(
        figures.converge_writes,
        50 * tokenwarden_bench::WRITES_PER_TOKEN
    );
    // One GET per new token: whether `S` is free. `S` is written from the token the pass
    // minted, not read back from `S-v1`.
    // Reads per new token: is S free (one GET of Secrets); the status apply's precondition
    // guards against a restored cluster without a GET of the token.
    let reads = &figures.converge_reads_by_kind;
    assert_eq!(reads.get("GET secrets").copied(), Some(50), "{reads:?}");
    assert_eq!(reads.get("GET workspacetokens"), None, "{reads:?}");
    assert_eq!(figures.steady_writes, 0, "writes while idle");
    assert_eq!(figures.restart_writes, 0, "writes across a restart");
    let rotations = |s: &Option<tokenwarden_bench::Storm>| s.as_ref().map(|s| s.rotations);
    assert_eq!(rotations(&figures.storm_no_jitter), Some(50));
    assert_eq!(rotations(&figures.storm), Some(50));
    assert!(
        figures.api_cost.untimed.is_empty(),
        "every kind convergence sent was timed: {:?}",
        figures.api_cost
    );
    assert!(figures.rss_steady_mib > 0.0 && figures.rss_peak_mib >= figures.rss_steady_mib);
    // The binary's allocator reports what of the RSS is live (`tokenwarden_heap_*_bytes`).
    let (live, resident) = (figures.heap_allocated_mib, figures.heap_resident_mib);
    assert!(
        live > 0.0 && live <= resident && resident <= figures.rss_steady_mib,
        "heap live {live} MiB, resident {resident} MiB, RSS {} MiB",
        figures.rss_steady_mib
    );
    // Seven series per token on the page (info, ready, degraded, last rotation, retiring,
    // held, unmanaged; no next rotation: the bench's tokens have no schedule), rendered from
    // the caches at each scrape.
    assert_eq!(
        figures.per_token_series,
        7 * figures.n as u64,
        "per-token series"
    );
    assert!(figures.metrics_scrape_ms > 0.0 && figures.rss_after_scrapes_mib > 0.0);
    assert!(figures.restart_list_floor_s > 0.0);
    // The floor is taken before convergence and again after the restart (a fuller cluster).
    assert_eq!(
        figures.replay_runs_s.len(),
        2,
        "{:?}",
        figures.replay_runs_s
    );
    // 25 workspaces of two issuer tokens, three intervals: about one listing each per interval.
    let inventory = &figures.inventory;
    assert_eq!(inventory.workspaces, 25);
    assert!(inventory.listings > 0, "{inventory:?}");
    assert_eq!(
        inventory.writes, 0,
        "the inventory writes nothing while nothing changes"
    );
    let report = serde_json::to_value(figures.report()).expect("report as JSON");
    let mut keys: Vec<&str> = report
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "n",
        "write_ceiling_per_s",
        "converge_s",
        "converge_ms_per_token",
        "converge_vs_replay",
        "api_cost_per_token",
        "steady_writes",
        "restart_writes",
        "restart_ready_s",
        "rss_peak_mib",
        "rss_steady_mib",
        "storm_peak_to_mean",
    ];
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want, "the headline JSON has exactly the issue's keys");
}
