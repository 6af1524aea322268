//! `make bench-peers`: tokenwarden and External Secrets Operator side by side on BENCH_N
//! (default 1000) objects on one fresh local control plane. Prints a table, then one JSON
//! line, also written to <BENCH_OUT>/result.json (default target/bench-peers).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokenwarden_bench::env_or;
use tokenwarden_bench::peers::{PeersConfig, run};

const USAGE: &str = "usage: bench-peers --operator <static tokenwarden> --eso <ESO dir with bin/ and crds/>  (BENCH_N, BENCH_IDLE_S, BENCH_CONCURRENCY, BENCH_RESTART_WINDOW_S, BENCH_OUT)";

fn main() {
    let wall = Instant::now();
    let (mut operator, mut eso) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--operator", Some(path)) => operator = Some(PathBuf::from(path)),
            ("--eso", Some(path)) => eso = Some(PathBuf::from(path)),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let (Some(operator), Some(eso)) = (operator, eso) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let out_dir = PathBuf::from(env_or("BENCH_OUT", "target/bench-peers".to_string()));
    std::fs::create_dir_all(&out_dir).expect("create the output dir");
    let cfg = PeersConfig {
        n: env_or("BENCH_N", 1000),
        operator,
        eso,
        concurrency: env_or("BENCH_CONCURRENCY", 16),
        idle: Duration::from_secs(env_or("BENCH_IDLE_S", 120)),
        restart_window: Duration::from_secs(env_or("BENCH_RESTART_WINDOW_S", 30)),
        out_dir: out_dir.clone(),
    };

    let cp = std::thread::spawn(tokenwarden_testenv::ControlPlane::start)
        .join()
        .expect("control plane start panicked")
        .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
    eprintln!("bench-peers: control plane ready in {:.1?}", cp.started_in);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(run(&cp, &cfg));
    cp.stop();

    println!(
        "tokenwarden vs External Secrets Operator, N={} on {} (run took {:.0} s)",
        cfg.n,
        tokenwarden_bench::machine(),
        wall.elapsed().as_secs_f64()
    );
    print!("{}", outcome.table(cfg.n));
    let report = serde_json::to_string(&outcome.report(cfg.n, cfg.idle)).expect("report as JSON");
    std::fs::write(out_dir.join("result.json"), format!("{report}\n")).expect("write result.json");
    let sides = serde_json::json!({ "tokenwarden": outcome.tokenwarden, "eso": outcome.eso });
    std::fs::write(
        out_dir.join("sides.json"),
        serde_json::to_vec_pretty(&sides).expect("sides as JSON"),
    )
    .expect("write sides.json");
    println!("{report}");
}
