//! The two operators behind one interface: how each is started, what it is given, how a
//! rotation is asked of it and how far its reconciles got.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{PeersConfig, eso};
use crate::operator::OperatorProcess;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tokenwarden,
    Eso,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Tokenwarden => "tokenwarden",
            Peer::Eso => "eso",
        }
    }

    /// The resource the bench creates and annotates, as the API server names it.
    pub fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Peer::Tokenwarden => (
                "tokenwarden.dev",
                "v1alpha1",
                "WorkspaceToken",
                "workspacetokens",
            ),
            Peer::Eso => (
                "external-secrets.io",
                "v1",
                "ExternalSecret",
                "externalsecrets",
            ),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        ApiResource::from_gvk_with_plural(&gvk, plural)
    }

    /// Whether an API group is this operator's own (its CRDs).
    pub fn own_group(self) -> fn(&str) -> bool {
        match self {
            Peer::Tokenwarden => |g| g == "tokenwarden.dev",
            Peer::Eso => |g| g == "external-secrets.io" || g.ends_with(".external-secrets.io"),
        }
    }

    /// The data key of the Secret a workload consumes (named like the object).
    pub fn data_key(self) -> &'static str {
        match self {
            Peer::Tokenwarden => "token",
            Peer::Eso => eso::DATA_KEY,
        }
    }

    /// The annotation whose new value asks for a new token/password.
    pub fn rotate_annotation(self) -> &'static str {
        match self {
            Peer::Tokenwarden => "tokenwarden.dev/rotate",
            Peer::Eso => "force-sync",
        }
    }

    /// The object the bench creates for `name`.
    pub fn object(self, name: &str, i: usize) -> Value {
        match self {
            Peer::Tokenwarden => json!({
                "apiVersion": "tokenwarden.dev/v1alpha1",
                "kind": "WorkspaceToken",
                "metadata": { "name": name },
                "spec": { "workspaceId": format!("ws-{:03}", i % 100) },
            }),
            Peer::Eso => eso::external_secret(name),
        }
    }

    pub fn start(
        self,
        cfg: &PeersConfig,
        kubeconfig: &std::path::Path,
        seq: usize,
    ) -> OperatorProcess {
        let log = cfg.out_dir.join(format!("{}-{seq}.log", self.name()));
        match self {
            Peer::Tokenwarden => {
                OperatorProcess::start(&cfg.operator, kubeconfig, cfg.concurrency, log)
            }
            Peer::Eso => eso::start(&cfg.eso, kubeconfig, cfg.concurrency, &log),
        }
    }

    /// Waits until the process answers its probe (tokenwarden: `/readyz` 200; ESO has no
    /// health endpoint in this configuration: `/metrics` 200); returns the time since start.
    pub async fn wait_up(self, process: &mut OperatorProcess, timeout: Duration) -> Duration {
        let path = match self {
            Peer::Tokenwarden => "/readyz",
            Peer::Eso => "/metrics",
        };
        let deadline = Instant::now() + timeout;
        while process.get(path).is_none() {
            assert!(process.running(), "{} exited before it was up", self.name());
            assert!(
                Instant::now() < deadline,
                "{} not up in {timeout:?}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.started.elapsed()
    }

    /// Reconciles of the bench's kind this process finished, by its own metrics.
    pub fn reconciled(self, process: &OperatorProcess) -> f64 {
        match self {
            Peer::Tokenwarden => process.metric("tokenwarden_reconcile_total"),
            Peer::Eso => eso::reconciled(&process.get("/metrics").unwrap_or_default()),
        }
    }

    /// Waits until the process reconciled `n` objects; returns the time since its start.
    pub async fn wait_reconciled(
        self,
        process: &mut OperatorProcess,
        n: usize,
        timeout: Duration,
    ) -> Duration {
        let deadline = Instant::now() + timeout;
        while self.reconciled(process) < n as f64 {
            assert!(process.running(), "{} exited", self.name());
            assert!(
                Instant::now() < deadline,
                "{} reconciled {} of {n} in {timeout:?}",
                self.name(),
                self.reconciled(process)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process.started.elapsed()
    }

    pub fn api(self, client: &Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), ns, &self.resource())
    }

    pub async fn create(
        self,
        api: &Api<DynamicObject>,
        name: &str,
        i: usize,
    ) -> kube::Result<DynamicObject> {
        let object: DynamicObject =
            serde_json::from_value(self.object(name, i)).expect("object manifest");
        api.create(&PostParams::default(), &object).await
    }

    /// Asks for one rotation: a merge patch of the rotate annotation to `stamp`.
    pub async fn rotate(
        self,
        api: &Api<DynamicObject>,
        name: &str,
        stamp: &str,
    ) -> kube::Result<DynamicObject> {
        let patch = json!({ "metadata": { "annotations": { self.rotate_annotation(): stamp } } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }
}

/// The name of the bench's `i`th object, and of its consumable Secret.
pub fn object_name(i: usize) -> String {
    format!("peer-{i:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_peers_name_the_kinds_the_api_server_counts() {
        assert_eq!(Peer::Tokenwarden.resource().plural, "workspacetokens");
        assert_eq!(Peer::Eso.resource().plural, "externalsecrets");
        assert_eq!(Peer::Eso.resource().api_version, "external-secrets.io/v1");
        let wst = Peer::Tokenwarden.object(&object_name(7), 7);
        assert_eq!(wst["metadata"]["name"], "peer-00007");
        assert!(
            serde_json::from_value::<tokenwarden::api::WorkspaceToken>(wst).is_ok(),
            "a valid WorkspaceToken"
        );
    }
}
