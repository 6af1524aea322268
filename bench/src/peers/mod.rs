//! `make bench-peers`: tokenwarden side by side with External Secrets Operator (ESO) on one
//! local control plane, the same N objects and the same phases for both:
//!
//! 1. converge: N objects created; time to the last consumable Secret (named like the
//!    object, holding its data key) seen by the bench's Secret watch;
//! 2. idle: requests while nothing changes;
//! 3. restart: stop, start; time until every object was reconciled once, requests until then
//!    (at least the restart window);
//! 4. rotation: every object asked for a new value at once (tokenwarden: annotation
//!    `tokenwarden.dev/rotate`; ESO: annotation `force-sync`, which changes the hash of
//!    annotations and labels that ESO compares with `status.syncedResourceVersion`); time to
//!    the last Secret whose value changed.
//!
//! ESO runs first and is stopped (its objects stay) before tokenwarden starts.
//! Requests come from the API server's `apiserver_request_total`, less the bench's own
//! (see [`requests`] and [`measure`]).

mod eso;
mod figures;
mod measure;
mod peer;
mod render;
mod requests;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use kube::{Client, CustomResourceExt};
use tokenwarden_testenv::ControlPlane;

pub use figures::Side;
use peer::Peer;

const CRD_SETTLE: Duration = Duration::from_secs(65);

pub struct PeersConfig {
    pub n: usize,
    /// The static tokenwarden binary.
    pub operator: PathBuf,
    /// ESO's build: `bin/external-secrets` and `crds/bundle.yaml`.
    pub eso: PathBuf,
    /// Both operators' reconcile concurrency, and the bench's client concurrency.
    pub concurrency: u16,
    pub idle: Duration,
    /// The least time after a restart whose requests count as the restart's.
    pub restart_window: Duration,
    /// Logs of both operators.
    pub out_dir: PathBuf,
}

/// Both sides, and where their reports go.
pub struct Outcome {
    pub tokenwarden: Side,
    pub eso: Side,
}

impl Outcome {
    pub fn table(&self, n: usize) -> String {
        render::table(&figures::rows(n, &self.tokenwarden, &self.eso))
    }

    pub fn report(&self, n: usize, idle: Duration) -> serde_json::Value {
        render::report(n, idle.as_secs(), &self.tokenwarden, &self.eso)
    }
}

pub async fn run(cp: &ControlPlane, cfg: &PeersConfig) -> Outcome {
    let client = cp.admin_client().await;
    install_tokenwarden_crds(&client).await;
    eso::install_crds(cp, &cfg.eso);
    // kube-controller-manager's garbage collector and quota controller find new resources by
    // re-reading discovery every 30 s; until then the collector looks up the owners of new
    // Secrets one GET at a time. Both operators start after that.
    tokio::time::sleep(CRD_SETTLE).await;
    // ESO's objects stay when it stops: deleting its namespace set the garbage collector to
    // work through its Secrets during tokenwarden's phases (458 GETs of Secrets counted in
    // tokenwarden's convergence, 203 while it idled). Tokenwarden's Secret watch is
    // label-selected, so they cost it nothing.
    let (eso, _) = measure::measure(cp, &client, cfg, Peer::Eso).await;
    let (tokenwarden, _) = measure::measure(cp, &client, cfg, Peer::Tokenwarden).await;
    Outcome { tokenwarden, eso }
}

async fn install_tokenwarden_crds(client: &Client) {
    use tokenwarden::api::{ClusterTokenIssuer, TokenIssuer, WorkspaceToken};
    for crd in [
        WorkspaceToken::crd(),
        TokenIssuer::crd(),
        ClusterTokenIssuer::crd(),
    ] {
        tokenwarden_testenv::crd::install(client, &crd, "tokenwarden-bench").await;
    }
}
