//! What one request of each kind the operator sends costs the API server, measured as the
//! throughput of 3000 of them at concurrency 16 on a fresh control plane: why converging
//! BENCH_N tokens takes longer than writing 4 x BENCH_N plain Secrets (BENCHMARKS.md).
//! `cargo run --release -p tokenwarden-bench --example write_costs`

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokenwarden::api::WorkspaceToken;

const N: usize = 3000;
const CONCURRENCY: usize = 16;

async fn timed<F, Fut, T>(what: &str, write: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let started = Instant::now();
    let mut writes = futures::stream::iter(0..N)
        .map(&write)
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = writes.next().await {
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let took = started.elapsed();
    println!("{what:<34} {:>6.0}/s", N as f64 / took.as_secs_f64());
}

fn main() {
    let cp = std::thread::spawn(tokenwarden_testenv::ControlPlane::start)
        .join()
        .expect("control plane thread")
        .expect("control plane");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = cp.admin_client().await;
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        let apply = PatchParams::apply("write-costs").force();
        let crd = WorkspaceToken::crd();
        crds.patch("workspacetokens.tokenwarden.dev", &apply, &Patch::Apply(&crd))
            .await
            .expect("CRD");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ns = tokenwarden_testenv::namespace(&client, "costs").await;
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let tokens = Api::<WorkspaceToken>::namespaced(client.clone(), &ns);
        let events = Api::<Event>::namespaced(client.clone(), &ns);
        let at = "2026-11-24T03:00:00Z";
        let status = json!({ "currentVersion": 1, "observedGeneration": 1, "lastRotationTime": at,
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Active",
                "message": "version 1 is active", "lastTransitionTime": at, "observedGeneration": 1 }],
            "versions": [{ "version": 1, "secretName": "w-v1", "state": "Active",
                "tokenSha256": "a".repeat(64), "tokenPrefix": "abcdefgh", "createdAt": at }] });

        timed("POST secrets (the ceiling's kind)", |i| {
            let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": format!("s-{i}") },
                "data": { "token": "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh" } }))
            .expect("Secret");
            let secrets = secrets.clone();
            async move { secrets.create(&PostParams::default(), &secret).await }
        })
        .await;
        timed("POST workspacetokens", |i| {
            let wst: WorkspaceToken = serde_json::from_value(json!({ "apiVersion": "tokenwarden.dev/v1alpha1",
                "kind": "WorkspaceToken", "metadata": { "name": format!("w-{i}") },
                "spec": { "workspaceId": "ws" } }))
            .expect("WorkspaceToken");
            let tokens = tokens.clone();
            async move { tokens.create(&PostParams::default(), &wst).await }
        })
        .await;
        timed("PATCH workspacetokens (finalizer)", |i| {
            let patch = json!({ "metadata": { "finalizers": ["tokenwarden.dev/cleanup"] } });
            let tokens = tokens.clone();
            async move { tokens.patch(&format!("w-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await }
        })
        .await;
        timed("APPLY workspacetokens/status", |i| {
            let body = json!({ "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken", "status": status });
            let (tokens, apply) = (tokens.clone(), PatchParams::apply("tokenwarden").force());
            async move { tokens.patch_status(&format!("w-{i}"), &apply, &Patch::Apply(&body)).await }
        })
        .await;
        timed("POST events", |i| {
            let event: Event = serde_json::from_value(json!({ "metadata": { "name": format!("w-{i}.e") },
                "eventTime": "2026-11-24T03:00:00.000000Z", "reportingController": "tokenwarden.dev/controller",
                "reportingInstance": "costs", "action": "Mint", "reason": "Minted", "type": "Normal",
                "note": "minted version 1", "regarding": { "apiVersion": "tokenwarden.dev/v1alpha1",
                    "kind": "WorkspaceToken", "name": format!("w-{i}"), "namespace": ns } }))
            .expect("Event");
            let events = events.clone();
            async move { events.create(&PostParams::default(), &event).await }
        })
        .await;
    });
    cp.stop();
}
