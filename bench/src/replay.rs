//! The floor under the operator's own work, measured in the same run: a client with no logic
//! that sends exactly the requests tokenwarden sends for a new token, on a twin CRD (the same
//! schema and validation rules under another group, which the operator does not watch).
//!
//! Per token, as in convergence: the create (the user's), then a metadata GET of `S` (is the
//! name free?), `S-v1`, `S`, the status apply (its precondition the token's resourceVersion,
//! the restore guard) and one Event (Minted), posted in the background. A local token under
//! `Revoke` has no finalizer, and its first activation is said by the Minted Event.
//! The creates run at the bench's concurrency and the rest at the operator's, overlapping as
//! they do when the operator runs; the operator's watches (the tokens, its Secrets) and the
//! bench's own watch of the tokens are open meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tokenwarden::api::WorkspaceToken;
use tokio::sync::Semaphore;

pub(crate) const GROUP: &str = "replay.bench.tokenwarden.dev";

pub(crate) fn twin_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1alpha1".into(),
        api_version: format!("{GROUP}/v1alpha1"),
        kind: "WorkspaceToken".into(),
        plural: "workspacetokens".into(),
    }
}

/// WorkspaceToken's CRD under the replay group.
pub(crate) async fn install_twin(client: &Client) {
    let mut crd = serde_json::to_value(WorkspaceToken::crd()).expect("CRD as JSON");
    crd["metadata"]["name"] = json!(format!("workspacetokens.{GROUP}"));
    crd["spec"]["group"] = json!(GROUP);
    // Not reachable as `wst` or `kubectl get tokenwarden`: those stay the real CRD's.
    crd["spec"]["names"]["shortNames"] = json!([]);
    crd["spec"]["names"]["categories"] = json!([]);
    let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("twin CRD");
    tokenwarden_testenv::crd::install(client, &crd, "tokenwarden-bench").await;
}

/// Creates and "converges" `n` twin tokens in namespace `ns`; returns the wall time from the
/// first create to the last status write.
pub async fn replay(client: &Client, ns: &str, n: usize, concurrency: usize) -> Duration {
    install_twin(client).await;
    let tokens: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &twin_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    // Events in flight at once, as the operator's publisher allows.
    let in_flight = Arc::new(Semaphore::new(8));
    let (created_tx, created_rx) = tokio::sync::mpsc::unbounded_channel::<DynamicObject>();

    // The bench watches the real tokens while they converge, and the operator watches them
    // and its Secrets: the API server sends each change to every watch. Watch the twins and
    // their Secrets alike.
    let watches = {
        use kube::runtime::{WatchStreamExt, watcher};
        let config = || watcher::Config::default().page_size(500);
        let bench = watcher(tokens.clone(), config());
        let operator = watcher(tokens.clone(), config());
        let owned = config().labels("app.kubernetes.io/managed-by=tokenwarden-replay");
        let secrets = watcher(secrets.clone(), owned);
        [
            tokio::spawn(bench.default_backoff().for_each(|_| async {})),
            tokio::spawn(operator.default_backoff().for_each(|_| async {})),
            tokio::spawn(secrets.default_backoff().for_each(|_| async {})),
        ]
    };
    let started = Instant::now();
    let creator = {
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let mut creates = futures::stream::iter(0..n)
                .map(|i| {
                    let tokens = tokens.clone();
                    async move {
                        let object = twin_object(&format!("agent-{i:05}"));
                        tokens.create(&PostParams::default(), &object).await
                    }
                })
                .buffer_unordered(concurrency);
            while let Some(created) = creates.next().await {
                let _ = created_tx.send(created.expect("create a twin WorkspaceToken"));
            }
        })
    };
    let mut background = Vec::new();
    let mut work = tokio_stream_of(created_rx)
        .map(|object| converge_one(&tokens, &secrets, &events, &in_flight, object))
        .buffer_unordered(concurrency);
    while let Some(posted) = work.next().await {
        background.extend(posted);
    }
    creator.await.expect("creator task");
    let took = started.elapsed();
    for watch in watches {
        watch.abort();
    }
    for event in futures::future::join_all(background).await {
        event.expect("event task").expect("post an Event");
    }
    took
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

type EventTask = tokio::task::JoinHandle<kube::Result<Event>>;

/// The requests tokenwarden sends for one new token; the Events go in the background.
async fn converge_one(
    tokens: &Api<DynamicObject>,
    secrets: &Api<Secret>,
    events: &Api<Event>,
    in_flight: &Arc<Semaphore>,
    object: DynamicObject,
) -> Vec<EventTask> {
    let name = object.metadata.name.clone().expect("name");
    let uid = object.metadata.uid.clone().expect("uid");
    let free = secrets.get_metadata_opt(&name).await.expect("GET S");
    assert!(free.is_none(), "{name} is new");
    let owner = json!([{ "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "WorkspaceToken",
        "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true }]);
    for (secret_name, version) in [(format!("{name}-v1"), Some(1)), (name.clone(), None)] {
        let secret = token_secret(&name, &secret_name, version, owner.clone());
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create a Secret");
    }
    let mut background = Vec::new();
    let event = twin_event(&name, &uid, events.namespace(), "Minted", "Mint");
    let (events, in_flight) = (events.clone(), in_flight.clone());
    background.push(tokio::spawn(async move {
        let _permit = in_flight.acquire_owned().await;
        events.create(&PostParams::default(), &event).await
    }));
    // The operator applies status on the object as its pass left it: the resourceVersion is
    // the apply's precondition (a 409 would make it read the object; none comes here).
    let rv = object
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");
    let status = json!({ "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "WorkspaceToken",
        "metadata": { "resourceVersion": rv }, "status": twin_status(&name) });
    tokens
        .patch_status(
            &name,
            &PatchParams::apply("tokenwarden").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply");
    background
}

pub(crate) fn twin_object(name: &str) -> DynamicObject {
    let mut object = DynamicObject::new(name, &twin_resource());
    object.data = json!({ "spec": { "workspaceId": "ws-000" } });
    object
}

/// A Secret shaped like tokenwarden's (same keys, labels, annotations and sizes), labelled
/// so the operator's selector does not see it.
pub(crate) fn token_secret(
    token: &str,
    name: &str,
    version: Option<u32>,
    owner: serde_json::Value,
) -> Secret {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "tokenwarden-replay".to_string(),
        ),
        ("tokenwarden.dev/token".to_string(), token.to_string()),
    ]);
    if let Some(v) = version {
        labels.insert("tokenwarden.dev/version".into(), v.to_string());
    }
    let data = BTreeMap::from([
        ("token".to_string(), ByteString(vec![b'A'; 43])),
        ("token-version".to_string(), ByteString(b"v1".to_vec())),
        ("workspace-id".to_string(), ByteString(b"ws-000".to_vec())),
    ]);
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "tokenwarden.dev/token-sha256": "a".repeat(64),
                "tokenwarden.dev/trace-id": "b".repeat(32),
                "tokenwarden.dev/spec-hash": "c".repeat(16),
            },
            "ownerReferences": owner,
        },
        "data": data,
        "immutable": version.is_some(),
        "type": "Opaque",
    }))
    .expect("replay Secret")
}

pub(crate) fn twin_event(
    name: &str,
    uid: &str,
    ns: Option<&str>,
    reason: &str,
    action: &str,
) -> Event {
    serde_json::from_value(json!({
        "metadata": { "name": format!("{name}.{:016x}", rand_u64()) },
        "eventTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        "reportingController": "tokenwarden.dev/controller",
        "reportingInstance": "replay",
        "action": action,
        "reason": reason,
        "note": format!("version 1 is active (prefix AAAAAAAA) {reason}"),
        "type": "Normal",
        "regarding": { "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "WorkspaceToken",
            "name": name, "uid": uid, "namespace": ns },
    }))
    .expect("replay Event")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// The status tokenwarden writes for a token at v1, Ready.
pub(crate) fn twin_status(name: &str) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now();
    let now = format!("{}", now.strftime("%Y-%m-%dT%H:%M:%SZ"));
    json!({
        "observedGeneration": 1,
        "currentVersion": 1,
        "tokenVersion": "v1",
        "tokenPrefix": "AAAAAAAA",
        "tokenSha256": "a".repeat(64),
        "lastRotationTime": now,
        "lastTraceId": "b".repeat(32),
        "versions": [{ "version": 1, "secretName": format!("{name}-v1"), "state": "Active",
            "tokenPrefix": "AAAAAAAA", "tokenSha256": "a".repeat(64), "createdAt": now,
            "activatedAt": now, "traceId": "b".repeat(32) }],
        "conditions": [
            { "type": "Ready", "status": "True", "reason": "Active", "message": "version 1 is active",
              "lastTransitionTime": now, "observedGeneration": 1 },
            { "type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
              "lastTransitionTime": now, "observedGeneration": 1 },
        ],
    })
}
