//! Live heap of the operator's two caches at 10k tokens (the WorkspaceToken store of packed
//! tokens and the Secret index), counted by a global allocator: what `rss_steady_mib` is made
//! of.
//! `cargo run --release -p tokenwarden-bench --example cache_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::Event;
use serde_json::json;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::secrets::{SecretIndex, hash_in_place};
use tokenwarden::token_cache::CachedToken;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 10_000;

fn main() {
    let at = "2026-11-24T03:00:00Z";
    let (sha, trace) = ("d".repeat(64), "5".repeat(32));
    let before = LIVE.load(Ordering::Relaxed);
    let (store, mut writer) = kube::runtime::reflector::store::<CachedToken>();
    for i in 0..N {
        let name = format!("agent-{i:05}");
        let wst: WorkspaceToken = serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": name, "namespace": "bench-abcdef", "uid": format!("757a5cec-9389-4e6e-b9fd-1063{i:08}"),
                "resourceVersion": "190607", "generation": 1, "creationTimestamp": at,
                "finalizers": ["tokenwarden.dev/cleanup"] },
            "spec": { "workspaceId": format!("ws-{:03}", i % 100) },
            "status": { "observedGeneration": 1, "currentVersion": 1, "tokenVersion": "v1",
                "tokenPrefix": "mJX5uYEk", "tokenSha256": sha, "lastRotationTime": at, "lastTraceId": trace,
                "versions": [{ "version": 1, "secretName": format!("{name}-v1"), "state": "Active",
                    "tokenPrefix": "mJX5uYEk", "tokenSha256": sha, "createdAt": at, "activatedAt": at, "traceId": trace }],
                "conditions": [
                    { "type": "Ready", "status": "True", "reason": "Active", "message": "version 1 is active",
                      "lastTransitionTime": at, "observedGeneration": 1 },
                    { "type": "Degraded", "status": "False", "reason": "AsExpected",
                      "message": "the last reconcile succeeded", "lastTransitionTime": at, "observedGeneration": 1 }] },
        }))
        .expect("WorkspaceToken");
        writer.apply_watcher_event(&Event::Apply(CachedToken::new(&wst)));
    }
    let tokens = LIVE.load(Ordering::Relaxed) - before;
    let index = SecretIndex::default();
    for i in 0..N {
        let token = format!("agent-{i:05}");
        for (name, version) in [(token.clone(), None), (format!("{token}-v1"), Some("1"))] {
            let mut labels = json!({ "app.kubernetes.io/managed-by": "tokenwarden", "tokenwarden.dev/token": token });
            if let Some(v) = version {
                labels["tokenwarden.dev/version"] = json!(v);
            }
            let mut secret: Secret = serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "bench-abcdef", "uid": format!("4a381249-3dd5-4330-be76-7859{i:08}"),
                    "resourceVersion": "177592", "creationTimestamp": at, "labels": labels,
                    "annotations": { "tokenwarden.dev/spec-hash": "635be3b22bf83056", "tokenwarden.dev/template-keys": "",
                        "tokenwarden.dev/token-sha256": sha, "tokenwarden.dev/trace-id": trace },
                    "ownerReferences": [{ "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken", "name": token,
                        "uid": "757a5cec-9389-4e6e-b9fd-106325f1d333", "controller": true }] },
                "data": { "token": "bUpYNXVZRWtwUUZTMHhsd29HdEVrY2U2RE9oX2RnUlJsaTdaalhXSHpKUQ==",
                    "token-version": "djE=", "workspace-id": "d3MtMDQy" },
                "immutable": version.is_some(), "type": "Opaque",
            }))
            .expect("Secret");
            hash_in_place(&mut secret);
            index.apply(&Event::Apply(secret));
        }
    }
    let secrets = LIVE.load(Ordering::Relaxed) - before - tokens;
    let mib = |b: usize| b as f64 / 1048576.0;
    println!(
        "{} WorkspaceTokens: {:.1} MiB ({} B each); {} Secrets: {:.1} MiB ({} B each)",
        store.state().len(),
        mib(tokens),
        tokens / N,
        index.len(),
        mib(secrets),
        secrets / (2 * N)
    );
}
