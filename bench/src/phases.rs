//! The benchmark's phases, in the order the figures depend on each other.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tokenwarden::api::WorkspaceToken;
use tokenwarden_testenv::ControlPlane;

use crate::cluster::{
    OPERATOR_RESOURCES, bulk, create_secrets, delta, reads_by_kind, total, writes, writes_by_kind,
};
use crate::cpu;
use crate::operator::OperatorProcess;
use crate::report::{Figures, Storm};
use crate::tracker::Tracker;
use crate::{Config, WRITES_PER_TOKEN};

/// Size of each unrelated Secret in the cluster during the memory figures.
const UNRELATED_SECRET_BYTES: usize = 10 * 1024;
/// Size of each write-ceiling Secret: about what `S-v1` holds.
const CEILING_SECRET_BYTES: usize = 128;
/// At most this many Secret creates measure the ceiling, and at most this many unrelated
/// Secrets sit in the cluster: a rate needs no more, and 100k 10 KiB Secrets would fill etcd.
const CEILING_SAMPLE: u64 = 30_000;
const UNRELATED_MAX: usize = 20_000;
/// Up to this many tokens the replay runs twice, before convergence and after the restart.
const REPLAY_AGAIN_MAX: usize = 20_000;

pub async fn run(cp: &ControlPlane, cfg: &Config) -> Figures {
    let client = cp.admin_client().await;
    install_crd(&client).await;
    await_garbage_collector(&client).await;
    let n = cfg.n;
    let concurrency = usize::from(cfg.concurrency);
    let mut figures = Figures::new(cfg);

    // 1. The write ceiling, in this run, on this machine.
    let writes_needed = (n as u64 * WRITES_PER_TOKEN).min(CEILING_SAMPLE);
    let ns = tokenwarden_testenv::namespace(&client, "bench-ceiling").await;
    let api = Api::<Secret>::namespaced(client.clone(), &ns);
    let cpu_before = cpu::snapshot(cp, None);
    let took = create_secrets(
        &api,
        "ceiling",
        writes_needed as usize,
        CEILING_SECRET_BYTES,
        concurrency,
    )
    .await;
    figures.ceiling_cpu_s = cpu::delta(&cpu_before, &cpu::snapshot(cp, None));
    figures.writes_needed = writes_needed;
    figures.write_ceiling_per_s = writes_needed as f64 / took.as_secs_f64();
    eprintln!(
        "bench: write ceiling {:.0}/s ({writes_needed} Secret creates in {took:.1?})",
        figures.write_ceiling_per_s
    );

    // What each kind of request costs, timed alone: the unit of api_cost_per_token.
    let ns = tokenwarden_testenv::namespace(&client, "bench-costs").await;
    figures.request_costs =
        crate::costs::measure(&client, &ns, n.clamp(500, 3000), concurrency).await;

    // The same requests the operator will send, from a client with no logic: its floor.
    let when = "before convergence";
    figures.replay_cpu_s = replay(cp, &client, &mut figures, n, concurrency, when).await;

    // Unrelated Secrets, there for the memory figures: the operator must not pay for them.
    let ns = tokenwarden_testenv::namespace(&client, "bench-unrelated").await;
    let api = Api::<Secret>::namespaced(client.clone(), &ns);
    let unrelated = n.min(UNRELATED_MAX);
    figures.unrelated_secrets = unrelated;
    let took = create_secrets(
        &api,
        "unrelated",
        unrelated,
        UNRELATED_SECRET_BYTES,
        concurrency,
    )
    .await;
    eprintln!("bench: {unrelated} unrelated 10 KiB Secrets in {took:.1?}");

    // 2. Converge: the operator runs and is ready; then BENCH_N WorkspaceTokens arrive.
    let ns = tokenwarden_testenv::namespace(&client, "bench").await;
    figures.namespace = ns.clone();
    let tokens = Api::<WorkspaceToken>::namespaced(client.clone(), &ns);
    let tracker = Tracker::watch(tokens.clone());
    let mut operator = start_operator(cp, cfg, 1);
    operator.wait_ready(cfg.ready_timeout()).await;
    let kinds_before = writes_by_kind(&client).await;
    let reads_before = reads_by_kind(&client).await;
    let cpu_before = cpu::snapshot(cp, Some(operator.pid()));
    let started = Instant::now();
    let created_in = bulk(n, concurrency, |i| {
        let tokens = tokens.clone();
        async move {
            tokens
                .create(&PostParams::default(), &workspace_token(i))
                .await
        }
    })
    .await;
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * n as u32;
    let last_ready = tracker.all_ready_at(n, 1, timeout).await;
    figures.converge_s = (last_ready - started).as_secs_f64();
    figures.created_in_s = created_in.as_secs_f64();
    figures.converge_cpu_s = cpu::delta(&cpu_before, &cpu::snapshot(cp, Some(operator.pid())));
    let kinds_after = writes_by_kind(&client).await;
    figures.converge_reads_by_kind = delta(&reads_before, &reads_by_kind(&client).await);
    let converged = total(&kinds_after, &OPERATOR_RESOURCES);
    let by_kind = delta(&kinds_before, &kinds_after);
    // The bench's own creates are in the count; the rest is the operator's.
    figures.converge_writes = total(&by_kind, &OPERATOR_RESOURCES) - n as u64;
    figures.converge_events = total(&by_kind, &["events"]);
    figures.api_cost = figures.request_costs.per_token(&by_kind, n);
    figures.converge_writes_by_kind = by_kind;
    eprintln!(
        "bench: converged {n} in {:.1} s ({} operator writes, {} events, {:.2} Secret-create units per token)",
        figures.converge_s,
        figures.converge_writes,
        figures.converge_events,
        figures.api_cost.units
    );

    // 3. Steady state: nothing to do, so nothing written.
    tokio::time::sleep(cfg.idle).await;
    figures.steady_writes = writes(&client, &OPERATOR_RESOURCES).await - converged;
    let rss = operator.rss();
    figures.rss_steady_mib = rss.now_mib;
    figures.rss_steady_file_mib = rss.file_mib;
    figures.rss_peak_mib = rss.peak_mib;
    let mib = |metric: &str| operator.metric(metric) / (1024.0 * 1024.0);
    figures.heap_allocated_mib = mib("tokenwarden_heap_allocated_bytes");
    figures.heap_resident_mib = mib("tokenwarden_heap_resident_bytes");
    eprintln!(
        "bench: idle {:?}: {} writes, RSS {:.1} MiB ({:.1} code, peak {:.1}), heap live {:.1} MiB of {:.1} resident",
        cfg.idle,
        figures.steady_writes,
        rss.now_mib,
        rss.file_mib,
        rss.peak_mib,
        figures.heap_allocated_mib,
        figures.heap_resident_mib
    );
    measure_scrapes(&operator, &mut figures);

    // ...and across a restart: ready, then every token reconciled once, and still nothing.
    let before = writes(&client, &OPERATOR_RESOURCES).await;
    operator.stop().await;
    let cpu_before = cpu::snapshot(cp, None);
    let mut operator = start_operator(cp, cfg, 2);
    figures.restart_ready_s = operator.wait_ready(cfg.ready_timeout()).await.as_secs_f64();
    figures.restart_cpu_s = cpu::delta(&cpu_before, &cpu::snapshot(cp, Some(operator.pid())));
    let deadline = Instant::now() + timeout;
    while operator.metric("tokenwarden_reconcile_total") < n as f64 {
        assert!(
            Instant::now() < deadline,
            "restarted operator did not reconcile every token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    figures.restart_resync_s = operator.started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    figures.restart_writes = writes(&client, &OPERATOR_RESOURCES).await - before;
    figures.restart_list_floor_s = list_operator_secrets(&client).await;
    eprintln!(
        "bench: restart ready in {:.2} s (a plain list of its Secrets: {:.2} s), every token reconciled in {:.2} s, {} writes",
        figures.restart_ready_s,
        figures.restart_list_floor_s,
        figures.restart_resync_s,
        figures.restart_writes
    );

    // The replay again, on the fuller API server convergence left: replay_s is the mean of
    // both, so the floor is not measured on an emptier cluster than the operator ran on.
    if n <= REPLAY_AGAIN_MAX {
        let when = "after the restart";
        replay(cp, &client, &mut figures, n, concurrency, when).await;
    } else {
        eprintln!("bench: replayed once (BENCH_N > {REPLAY_AGAIN_MAX}: a replay takes minutes)");
    }

    // 5. Rotation storms: the same `every` for all, first without jitter, then with.
    let every = cfg.storm_every;
    let slack = Duration::from_secs_f64(figures.converge_s * 3.0) + Duration::from_secs(120);
    if cfg.storms {
        figures.storm_no_jitter =
            Some(storm(&client, &tokens, &tracker, 2, every, None, every + slack).await);
        let jittered = storm(
            &client,
            &tokens,
            &tracker,
            3,
            every,
            Some(every),
            2 * every + slack,
        );
        figures.storm = Some(jittered.await);
    } else {
        eprintln!("bench: storms skipped (BENCH_STORMS=0)");
    }
    let rss = operator.rss();
    figures.rss_peak_mib = figures.rss_peak_mib.max(rss.peak_mib);
    operator.stop().await;

    // 6. The issuer inventory's request rate.
    figures.inventory = crate::inventory::measure(cp, cfg).await;
    figures
}

/// Replays the operator's requests for `n` new tokens in a namespace of their own; keeps
/// the time in `figures.replay_runs_s`, returns each process's CPU seconds meanwhile.
async fn replay(
    cp: &ControlPlane,
    client: &Client,
    figures: &mut Figures,
    n: usize,
    concurrency: usize,
    when: &str,
) -> BTreeMap<String, f64> {
    let ns = tokenwarden_testenv::namespace(client, "bench-replay").await;
    let cpu_before = cpu::snapshot(cp, None);
    let took = crate::replay::replay(client, &ns, n, concurrency).await;
    let cpu = cpu::delta(&cpu_before, &cpu::snapshot(cp, None));
    figures.replay_runs_s.push(took.as_secs_f64());
    eprintln!("bench: replay of the operator's requests for {n} tokens {when} in {took:.1?}");
    cpu
}

/// Seconds a client with no logic takes to list what a starting operator must list before it
/// is ready: every Secret it manages, by its label, in its pages of 500. What of
/// `restart_ready_s` is the API server's.
async fn list_operator_secrets(client: &Client) -> f64 {
    let api = Api::<Secret>::all(client.clone());
    let started = Instant::now();
    let mut params = ListParams::default()
        .labels(&tokenwarden::secrets::managed_selector())
        .limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .expect("list the operator's Secrets");
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return started.elapsed().as_secs_f64(),
        }
    }
}

fn start_operator(cp: &ControlPlane, cfg: &Config, seq: usize) -> OperatorProcess {
    let log = cfg.out_dir.join(format!("operator-{seq}.log"));
    OperatorProcess::start(&cfg.operator, cp.admin_kubeconfig(), cfg.concurrency, log)
}

async fn install_crd(client: &Client) {
    use tokenwarden::api::{ClusterTokenIssuer, TokenIssuer};
    for crd in [
        WorkspaceToken::crd(),
        TokenIssuer::crd(),
        ClusterTokenIssuer::crd(),
    ] {
        tokenwarden_testenv::crd::install(client, &crd, "tokenwarden-bench").await;
    }
}

/// Until the garbage collector watches WorkspaceTokens, it GETs the owner of each new Secret
/// itself: requests the bench would count as the operator's reads, and work it would time as
/// the operator's (CI once saw 50 such GETs in the convergence of N=50).
async fn await_garbage_collector(client: &Client) {
    let ns = tokenwarden_testenv::namespace(client, "bench-gc-probe").await;
    let probe = serde_json::to_value(workspace_token(0)).expect("probe as JSON");
    let mut probe: DynamicObject = serde_json::from_value(probe).expect("probe as an object");
    probe.metadata.namespace = Some(ns);
    let resource = ApiResource::erase::<WorkspaceToken>(&());
    let started = Instant::now();
    tokenwarden_testenv::crd::await_garbage_collector_tracks(client, &resource, probe).await;
    let waited = started.elapsed();
    eprintln!("bench: the garbage collector watches WorkspaceTokens after {waited:.1?}");
}

fn workspace_token(i: usize) -> WorkspaceToken {
    serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1",
        "kind": "WorkspaceToken",
        "metadata": { "name": format!("agent-{i:05}") },
        "spec": { "workspaceId": format!("ws-{:03}", i % 100) },
    }))
    .expect("WorkspaceToken manifest")
}

/// Gives every token the same `every` (and `jitter`), waits until all reached `version`, and
/// bins the creations of their `S-v<version>` Secrets by second.
async fn storm(
    client: &Client,
    tokens: &Api<WorkspaceToken>,
    tracker: &Tracker,
    version: u32,
    every: Duration,
    jitter: Option<Duration>,
    timeout: Duration,
) -> Storm {
    let n = tracker.count_at(1);
    let seconds = |d: Duration| format!("{}s", d.as_secs());
    let rotation = json!({ "every": seconds(every), "jitter": jitter.map(seconds) });
    let names: Vec<String> = tokens
        .list_metadata(&ListParams::default())
        .await
        .expect("list WorkspaceTokens")
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    let started = Instant::now();
    bulk(names.len(), 16, |i| {
        let patch = json!({ "spec": { "rotation": rotation } });
        let name = names[i].clone();
        async move {
            tokens
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    })
    .await;
    tracker.all_ready_at(n, version, timeout).await;
    let took = started.elapsed();
    let secrets =
        Api::<Secret>::namespaced(client.clone(), tokens.namespace().unwrap_or("default"));
    let created = secrets
        .list_metadata(&ListParams::default().labels(&format!("tokenwarden.dev/version={version}")))
        .await
        .expect("list versioned Secrets")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.creation_timestamp.map(|t| t.0.as_second()));
    let storm = Storm::from_creations(created, every);
    eprintln!(
        "bench: storm to v{version} (jitter {:?}): {} rotations in {took:.1?}, busiest second {}, mean {:.1}/s",
        jitter, storm.rotations, storm.peak_per_s, storm.mean_per_s
    );
    storm
}

/// Five scrapes of `/metrics` at RSS steady: per-token series are rendered from the caches
/// at each one, so their cost is the scrape's time and what it leaves resident.
fn measure_scrapes(operator: &OperatorProcess, figures: &mut Figures) {
    let scrapes: Vec<(String, Duration)> = (0..5).map(|_| operator.scrape()).collect();
    let (page, _) = scrapes.last().expect("five scrapes");
    figures.metrics_page_kib = page.len() as f64 / 1024.0;
    let took: Duration = scrapes.iter().map(|(_, took)| *took).sum();
    figures.metrics_scrape_ms = took.as_secs_f64() * 1000.0 / scrapes.len() as f64;
    figures.per_token_series = (page.lines())
        .filter(|l| l.starts_with("tokenwarden_token_"))
        .count() as u64;
    figures.rss_after_scrapes_mib = operator.rss().now_mib;
    eprintln!(
        "bench: /metrics {:.0} KiB in {:.0} ms, {} per-token series, RSS {:.1} MiB after 5 scrapes",
        figures.metrics_page_kib,
        figures.metrics_scrape_ms,
        figures.per_token_series,
        figures.rss_after_scrapes_mib
    );
}
