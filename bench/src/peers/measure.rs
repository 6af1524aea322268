//! One operator through the four phases on N objects in a namespace of its own:
//! converge, idle, restart, one rotation of every object.
//!
//! Subtracted from the API server's counts as the bench's own: the N creates (`POST <kind>`)
//! in converge, the N annotation patches (`PATCH <kind>`) in rotation, and its Secret
//! watch's LIST/WATCH requests (counted by the watch itself) in every phase. The rest on
//! the counted resources (see `requests`) is the operator's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use tokenwarden_testenv::ControlPlane;

use super::figures::Side;
use super::peer::{Peer, object_name};
use super::requests::{self, ByKind, Raw};
use super::watch::SecretWatch;
use super::{PeersConfig, eso};
use crate::cluster::bulk;
use crate::cpu;
use crate::operator::OperatorProcess;

/// After the last Secret of a phase, the operator's follow-up writes (statuses, events) still
/// belong to the phase: its counts close this long after.
const SETTLE: Duration = Duration::from_secs(5);

/// Counters at one moment.
struct Mark {
    requests: Raw,
    own: ByKind,
    cpu: BTreeMap<String, f64>,
}

async fn mark(client: &Client, cp: &ControlPlane, watch: &SecretWatch, pid: u32) -> Mark {
    let mut cpu: BTreeMap<String, f64> = cpu::control_plane_pids_in(&cp.bin_dir, &cp.dir)
        .into_iter()
        .map(|(name, pid)| (name, cpu::cpu_seconds(pid)))
        .collect();
    cpu.insert("operator".into(), cpu::cpu_seconds(pid));
    Mark {
        requests: requests::snapshot(client).await,
        own: watch.own_requests(),
        cpu,
    }
}

/// Records a phase: the API server's requests less the bench's own (its watch's LIST/WATCH
/// and `bench_writes`), the background apart, CPU seconds per process.
fn close(
    side: &mut Side,
    peer: Peer,
    phase: &str,
    before: &Mark,
    after: &Mark,
    bench_writes: ByKind,
) {
    let served = requests::split(
        &requests::delta(&before.requests, &after.requests),
        peer.own_group(),
    );
    let mut own = requests::delta(&before.own, &after.own);
    own.extend(bench_writes);
    side.requests
        .insert(phase.into(), requests::subtract(&served.counted, &own));
    side.subtracted.insert(phase.into(), own);
    side.background.insert(phase.into(), served.background);
    side.cpu_s
        .insert(phase.into(), cpu::delta(&before.cpu, &after.cpu));
}

fn writes(verb: &str, peer: Peer, n: usize) -> ByKind {
    BTreeMap::from([(format!("{verb} {}", peer.resource().plural), n as u64)])
}

pub async fn measure(
    cp: &ControlPlane,
    client: &Client,
    cfg: &PeersConfig,
    peer: Peer,
) -> (Side, String) {
    let n = cfg.n;
    let who = peer.name();
    let ns = tokenwarden_testenv::namespace(client, &format!("peers-{who}")).await;
    let names: Vec<String> = (0..n).map(object_name).collect();
    let api = peer.api(client, &ns);
    if peer == Peer::Eso {
        let generator: DynamicObject =
            serde_json::from_value(eso::password_generator()).expect("generator manifest");
        let gvk = kube::api::GroupVersionKind::gvk(
            "generators.external-secrets.io",
            "v1alpha1",
            "Password",
        );
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "passwords");
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource)
            .create(&PostParams::default(), &generator)
            .await
            .expect("create the Password generator");
    }
    let watch = SecretWatch::start(
        Api::<Secret>::namespaced(client.clone(), &ns),
        names.iter().cloned().collect(),
        peer.data_key(),
    );
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * n as u32;
    let mut side = Side::default();

    // 1. Converge: the operator is up and settled; then N objects arrive.
    let mut process = peer.start(cfg, cp.admin_kubeconfig(), 1);
    peer.wait_up(&mut process, Duration::from_secs(60)).await;
    tokio::time::sleep(SETTLE).await;
    let before = mark(client, cp, &watch, process.pid()).await;
    let started = Instant::now();
    let created = bulk(n, usize::from(cfg.concurrency), |i| {
        peer.create(&api, &names[i], i)
    })
    .await;
    let last = watch.all_present(n, timeout).await;
    side.converge_s = (last - started).as_secs_f64();
    side.created_in_s = created.as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = mark(client, cp, &watch, process.pid()).await;
    close(
        &mut side,
        peer,
        "converge",
        &before,
        &after,
        writes("POST", peer, n),
    );
    eprintln!(
        "bench-peers: {who}: converged {n} in {:.1} s (creates took {created:.1?})",
        side.converge_s
    );

    // 2. Idle.
    let before = after;
    tokio::time::sleep(cfg.idle).await;
    let after = mark(client, cp, &watch, process.pid()).await;
    close(&mut side, peer, "idle", &before, &after, ByKind::new());
    let rss = process.rss();
    (side.rss_steady_mib, side.rss_peak_mib) = (rss.now_mib, rss.peak_mib);
    eprintln!(
        "bench-peers: {who}: idle {:?}: {} writes; RSS {:.1} MiB, peak {:.1}",
        cfg.idle,
        requests::mutating(&side.requests["idle"]),
        rss.now_mib,
        rss.peak_mib
    );

    // 3. Restart: stop, start; counted until every object was reconciled once and the
    // window (at least `restart_window`) is over.
    let before = after;
    let old_cpu = cpu::cpu_seconds(process.pid()) - before.cpu["operator"];
    process.stop().await;
    let mut process: OperatorProcess = peer.start(cfg, cp.admin_kubeconfig(), 2);
    side.restart_up_s = peer
        .wait_up(&mut process, Duration::from_secs(120))
        .await
        .as_secs_f64();
    side.restart_ready_s = peer
        .wait_reconciled(&mut process, n, timeout)
        .await
        .as_secs_f64();
    let window_end = process.started + cfg.restart_window.max(process.started.elapsed() + SETTLE);
    tokio::time::sleep(window_end.saturating_duration_since(Instant::now())).await;
    let mut after = mark(client, cp, &watch, process.pid()).await;
    let new_cpu = after.cpu["operator"];
    after.cpu.insert(
        "operator".into(),
        before.cpu["operator"] + old_cpu + new_cpu,
    );
    close(&mut side, peer, "restart", &before, &after, ByKind::new());
    eprintln!(
        "bench-peers: {who}: restart: up in {:.2} s, all reconciled in {:.2} s, {} writes in {:.0?}",
        side.restart_up_s,
        side.restart_ready_s,
        requests::mutating(&side.requests["restart"]),
        process.started.elapsed()
    );
    after.cpu.insert("operator".into(), new_cpu);

    // 4. One rotation of every object.
    watch.mark_baseline();
    let before = after;
    let stamp = format!(
        "{}",
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_secs()
    );
    let started = Instant::now();
    bulk(n, usize::from(cfg.concurrency), |i| {
        peer.rotate(&api, &names[i], &stamp)
    })
    .await;
    let last = watch.all_changed(n, timeout).await;
    side.rotation_s = (last - started).as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = mark(client, cp, &watch, process.pid()).await;
    close(
        &mut side,
        peer,
        "rotation",
        &before,
        &after,
        writes("PATCH", peer, n),
    );
    side.rss_peak_mib = side.rss_peak_mib.max(process.rss().peak_mib);
    eprintln!(
        "bench-peers: {who}: rotated {n} in {:.1} s",
        side.rotation_s
    );

    process.stop().await;
    drop(watch);
    (side, ns)
}
