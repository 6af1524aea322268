//! `tokenwarden run`: probes and metrics, optional leader election, then the controller.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::controller::{self, Settings};
use crate::leader::{LeaderElector, Role};
use crate::logging::{self, LogFormat};
use crate::metrics::{self, Health, Metrics};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Watch one namespace (default: all).
    #[arg(long, env = "TOKENWARDEN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// WorkspaceTokens reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    #[arg(long, default_value = "json")]
    pub log_format: LogFormat,
    /// Run as one of several replicas: only the holder of the Lease `tokenwarden-leader`
    /// reconciles.
    #[arg(long)]
    pub leader_elect: bool,
    /// Where the Lease lives (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Where ClusterTokenIssuer admin Secrets are read (default: the leader election
    /// namespace, $POD_NAMESPACE, else `default`).
    #[arg(long)]
    pub cluster_resource_namespace: Option<String>,
    /// Don't watch workloads and Pods: `status.consumers` stays empty, no
    /// `ConsumerNeedsRestart` (for clusters where the operator may not read pods).
    #[arg(long)]
    pub no_consumers: bool,
    /// How often each (issuer, workspace) in use is listed at its platform, to find the
    /// tokens nobody manages and served tokens revoked there (`5m`, `30s`; `0`: only at
    /// rotations).
    #[arg(long, default_value = "5m", value_parser = inventory_interval)]
    pub inventory_interval: Duration,
    /// How long a leader that stopped renewing keeps the Lease; renewals every third of it.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
}

fn inventory_interval(value: &str) -> Result<Duration, String> {
    crate::schedule::parse_duration(value).map_err(|e| e.to_string())
}

/// The operator's own namespace: `--leader-election-namespace`, else $POD_NAMESPACE, else
/// `default`.
fn operator_namespace(args: &RunArgs) -> String {
    args.leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into())
}

/// Runs until SIGTERM or Ctrl-C; an error says in one line what could not start.
pub async fn run(args: RunArgs, connection: &crate::cluster::Connection) -> Result<(), String> {
    logging::init_logging(args.log_format);
    let client = connection.client().await?;
    let metrics = Metrics::new();
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.metrics_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(metrics::serve(
        listener,
        metrics.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| hostname());
    let settings = Settings {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        instance: instance.clone(),
        consumers: !args.no_consumers,
        inventory_interval: args.inventory_interval,
        cluster_resource_namespace: args
            .cluster_resource_namespace
            .clone()
            .unwrap_or_else(|| operator_namespace(&args)),
    };

    if !args.leader_elect {
        metrics.set_leader(true);
        controller::run(client, settings, metrics, health, stopped(stop_rx)).await;
        let _ = server.await;
        tracing::info!("stopped");
        return Ok(());
    }

    let namespace = operator_namespace(&args);
    // Replicas on one host (no POD_NAME) still need distinct identities.
    let identity = match std::env::var("POD_NAME") {
        Ok(pod) => pod,
        Err(_) => format!("{instance}_{}", std::process::id()),
    };
    let lease_duration = Duration::from_secs(args.lease_duration_seconds.max(2));
    let mut elector = LeaderElector::new(client.clone(), &namespace, identity, lease_duration);

    // A standby is healthy and ready: it can take over at any moment. `tokenwarden_leader`
    // tells which replica leads.
    metrics.set_leader(false);
    health.set_ready(true);
    if !wait_for_leadership(&mut elector, stop_rx.clone()).await {
        let _ = server.await;
        return Ok(());
    }
    tracing::info!(identity = elector.identity(), %namespace, "became leader");
    metrics.set_leader(true);
    health.set_ready(false); // until the caches of the controller are synced

    let (lost_tx, lost_rx) = watch::channel(false);
    let renewal = tokio::spawn(keep_leadership(elector, lost_tx, stop_rx.clone()));
    let lost = lost_rx.clone();
    controller::run(client, settings, metrics, health, async move {
        tokio::select! {
            _ = stopped(stop_rx) => {}
            _ = stopped(lost) => {}
        }
    })
    .await;
    if *lost_rx.borrow() {
        // Another replica may lead now: exit, so a restart rejoins as a clean standby.
        tracing::error!("leadership lost; exiting");
        std::process::exit(1);
    }
    if let Ok(mut elector) = renewal.await
        && let Err(e) = elector.release().await
    {
        tracing::warn!(error = %e, "lease not released; a standby takes over when it expires");
    }
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Retries until this replica holds the lease (true) or the process is asked to stop (false).
async fn wait_for_leadership(elector: &mut LeaderElector, mut stop: watch::Receiver<bool>) -> bool {
    let mut last_holder = None;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(Role::Leader) => return true,
            Ok(Role::Standby { holder }) => {
                if last_holder.as_ref() != Some(&holder) {
                    tracing::info!(%holder, "standby: another replica leads");
                    last_holder = Some(holder);
                }
            }
            Err(e) => tracing::warn!(error = %e, "leader election: lease not reachable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.retry_period()) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews every retry period; signals `lost` when another replica took the lease or renewal
/// failed for a whole lease duration (another replica may then take it).
async fn keep_leadership(
    mut elector: LeaderElector,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> LeaderElector {
    let mut last_renewed = tokio::time::Instant::now();
    let lease_duration = elector.retry_period() * 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.retry_period()) => {}
            _ = stop.wait_for(|s| *s) => return elector,
        }
        // A renewal that hangs must not outlive the lease: bound each call.
        let attempt =
            tokio::time::timeout(elector.retry_period(), elector.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(Role::Leader)) => last_renewed = tokio::time::Instant::now(),
            Ok(Ok(Role::Standby { holder })) => {
                tracing::error!(%holder, "the lease was taken over; exiting at once");
                let _ = lost.send(true);
                // No draining of in-flight reconciles: another replica leads now.
                std::process::exit(1);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        // Stop before the lease can expire for the others (renew deadline).
        if last_renewed.elapsed() + elector.retry_period() >= lease_duration {
            tracing::error!("lease not renewed within its duration; exiting at once");
            let _ = lost.send(true);
            std::process::exit(1);
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "tokenwarden".to_string())
}
