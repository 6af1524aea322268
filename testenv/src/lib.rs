//! A real local Kubernetes control plane for tokenwarden's tests, benchmark and demo.
//!
//! ```no_run
//! # async fn example() {
//! let cp = tokenwarden_testenv::shared();
//! let client = cp.admin_client().await;
//! let ns = tokenwarden_testenv::namespace(&client, "my-test").await;
//! # }
//! ```

pub mod apiserver;
pub mod binaries;
mod controlplane;
pub mod crd;
pub mod leak;
pub mod node;
mod pki;
pub mod probe;
pub mod reaper;
pub mod tls_front;

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

pub use controlplane::ControlPlane;
pub use pki::UNPRIVILEGED_USER;

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary: started by the first test that asks, shared by all.
pub fn shared() -> &'static ControlPlane {
    shared_as(false)
}

/// [`shared`] with a node that runs pods (see [`ControlPlane::start_with_node`]). Every test
/// of a binary that uses the node asks for it this way: the node starts once per binary.
pub fn shared_with_node() -> &'static ControlPlane {
    shared_as(true)
}

fn shared_as(with_node: bool) -> &'static ControlPlane {
    let cp = SHARED.get_or_init(|| {
        // Started on a plain thread: `start` blocks on a runtime of its own.
        let start = if with_node {
            ControlPlane::start_with_node
        } else {
            ControlPlane::start
        };
        let cp = std::thread::spawn(start)
            .join()
            .expect("control plane start panicked")
            .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
        eprintln!(
            "testenv: control plane at {} {}ready in {:.1?} (run dir {})",
            cp.server,
            if cp.has_node { "with a node " } else { "" },
            cp.started_in,
            cp.dir.display()
        );
        cp
    });
    assert_eq!(
        cp.has_node, with_node,
        "one test binary asks for its control plane both with and without a node: \
         the workload controllers of a node would overwrite rollout status a test writes"
    );
    cp
}

/// Creates a fresh namespace `<prefix>-<random>` for one test and returns its name.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let suffix: String = (0..6)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let name = format!("{prefix}-{suffix}");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "tokenwarden.dev/testenv": "true" } }
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}
