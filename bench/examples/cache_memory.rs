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

/// Values as random as an API server's and the operator's (uids, hashes, trace ids): a
/// repeated placeholder would compress to nothing and flatter the figures.
fn hex(seed: &str) -> String {
    tokenwarden::token::sha256_hex(seed.as_bytes())
}

fn uid(seed: &str) -> String {
    let h = hex(seed);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn main() {
    let at = "2026-11-24T03:00:00Z";
    let before = LIVE.load(Ordering::Relaxed);
    let (store, mut writer) = kube::runtime::reflector::store::<CachedToken>();
    for i in 0..N {
        let token_value = format!("tw_{}", &hex(&format!("token {i}"))[..40]);
        let (sha, trace) = (
            hex(&token_value),
            hex(&format!("trace {i}"))[..32].to_string(),
        );
        let name = format!("agent-{i:05}");
        let wst: WorkspaceToken = serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": name, "namespace": "bench-abcdef", "uid": uid(&name),
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
        let token_value = format!("tw_{}", &hex(&format!("token {i}"))[..40]);
        let (sha, trace) = (
            hex(&token_value),
            hex(&format!("trace {i}"))[..32].to_string(),
        );
        let token = format!("agent-{i:05}");
        for (name, version) in [(token.clone(), None), (format!("{token}-v1"), Some("1"))] {
            let mut labels = json!({ "app.kubernetes.io/managed-by": "tokenwarden", "tokenwarden.dev/token": token });
            if let Some(v) = version {
                labels["tokenwarden.dev/version"] = json!(v);
            }
            let mut secret: Secret = serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "bench-abcdef", "uid": uid(&format!("secret {name}")),
                    "resourceVersion": "177592", "creationTimestamp": at, "labels": labels,
                    "annotations": { "tokenwarden.dev/spec-hash": "635be3b22bf83056", "tokenwarden.dev/template-keys": "",
                        "tokenwarden.dev/token-sha256": sha, "tokenwarden.dev/trace-id": trace },
                    "ownerReferences": [{ "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken", "name": token,
                        "uid": uid(&token), "controller": true }] },
                "data": { "token": k8s_openapi::ByteString(token_value.clone().into_bytes()),
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
