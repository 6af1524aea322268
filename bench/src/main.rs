//! `make bench`: BENCH_N (default 1000) WorkspaceTokens on a fresh local control plane.
//! Prints a table, then one JSON line, also written to target/bench/result.json.

use std::path::PathBuf;
use std::time::Duration;

use tokenwarden_bench::{Config, env_or};

fn main() {
    let mut args = std::env::args().skip(1);
    let operator = match (args.next().as_deref(), args.next()) {
        (Some("--operator"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!(
                "usage: bench --operator <release tokenwarden binary>  (BENCH_N, BENCH_IDLE_S, BENCH_CONCURRENCY, BENCH_STORM_EVERY_S, BENCH_STORMS, BENCH_INVENTORY_INTERVAL_S)"
            );
            std::process::exit(2);
        }
    };
    let n: usize = env_or("BENCH_N", 1000);
    let out_dir = PathBuf::from(env_or("BENCH_OUT", "target/bench".to_string()));
    std::fs::create_dir_all(&out_dir).expect("create the output dir");
    let cfg = Config {
        n,
        operator,
        concurrency: env_or("BENCH_CONCURRENCY", 16),
        idle: Duration::from_secs(env_or("BENCH_IDLE_S", 120)),
        storm_every: Duration::from_secs(env_or(
            "BENCH_STORM_EVERY_S",
            Config::default_storm_every(n).as_secs(),
        )),
        out_dir: out_dir.clone(),
        inventory_interval: Duration::from_secs(env_or("BENCH_INVENTORY_INTERVAL_S", 20)),
        storms: env_or("BENCH_STORMS", 1u8) != 0,
    };

    let cp = std::thread::spawn(tokenwarden_testenv::ControlPlane::start)
        .join()
        .expect("control plane start panicked")
        .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
    eprintln!("bench: control plane ready in {:.1?}", cp.started_in);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = runtime.block_on(tokenwarden_bench::run(&cp, &cfg));
    cp.stop();

    let machine = tokenwarden_bench::machine();
    println!("tokenwarden bench on {machine}");
    print!("{}", figures.table());
    let report = serde_json::to_string(&figures.report()).expect("report as JSON");
    std::fs::write(out_dir.join("result.json"), format!("{report}\n")).expect("write result.json");
    std::fs::write(
        out_dir.join("figures.json"),
        serde_json::to_vec_pretty(&figures).expect("figures as JSON"),
    )
    .expect("write figures.json");
    println!("{report}");
}
