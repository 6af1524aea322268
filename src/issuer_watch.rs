//! The watches behind issuer resolution: TokenIssuers, ClusterTokenIssuers and the labels of
//! namespaces, cached for `IssuerCaches`; a change to any of them wakes the WorkspaceTokens it
//! can decide (a new issuer, a URL or selector edited, a namespace relabelled).

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::api::{ClusterTokenIssuer, IssuerKind, TokenIssuer, WorkspaceToken};
use crate::issuer::caches::IssuerCaches;

/// Something a WorkspaceToken's issuer resolution reads changed.
#[derive(Debug)]
enum Touched {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
    Namespace { name: String },
}

/// The changes of the watched issuers and namespaces, not yet mapped to WorkspaceTokens.
pub struct IssuerFeeds(BoxStream<'static, Touched>);

/// The watches (started with the stream) of the issuers in `namespace` (None: all), and
/// their caches, which read ClusterTokenIssuer admin Secrets in `cluster_resource_namespace`.
pub fn issuer_watches(
    client: &Client,
    namespace: Option<&str>,
    cluster_resource_namespace: &str,
) -> (IssuerCaches, IssuerFeeds) {
    let (namespaced_api, namespaces_config): (Api<TokenIssuer>, _) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={ns}")),
        ),
        None => (Api::all(client.clone()), watcher::Config::default()),
    };
    let (namespaced, namespaced_writer) = reflector::store();
    let (cluster, cluster_writer) = reflector::store();
    let (namespaces, namespaces_writer) = reflector::store();
    let namespaced_feed = reflector(
        namespaced_writer,
        watcher(namespaced_api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .filter_map(|r| {
        future::ready(
            logged(r, "TokenIssuer").map(|i: TokenIssuer| Touched::Namespaced {
                namespace: i.namespace().unwrap_or_default(),
                name: i.name_any(),
            }),
        )
    });
    let cluster_feed = reflector(
        cluster_writer,
        watcher(
            Api::<ClusterTokenIssuer>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .filter_map(|r| {
        future::ready(
            logged(r, "ClusterTokenIssuer")
                .map(|i: ClusterTokenIssuer| Touched::Cluster { name: i.name_any() }),
        )
    });
    let namespace_feed = reflector(
        namespaces_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            namespaces_config,
        )
        .default_backoff(),
    )
    .touched_objects()
    .filter_map(|r| {
        future::ready(logged(r, "Namespace").map(|n| Touched::Namespace { name: n.name_any() }))
    });
    let caches = IssuerCaches {
        namespaced,
        cluster,
        namespaces,
        cluster_resource_namespace: cluster_resource_namespace.to_string(),
        owns_cluster_status: namespace.is_none(),
    };
    let feeds = stream::select_all([
        namespaced_feed.boxed(),
        cluster_feed.boxed(),
        namespace_feed.boxed(),
    ]);
    (caches, IssuerFeeds(feeds.boxed()))
}

fn logged<T>(result: Result<T, watcher::Error>, kind: &str) -> Option<T> {
    result
        .inspect_err(|e| tracing::warn!(error = %e, kind, "watch failed; retrying"))
        .ok()
}

impl IssuerFeeds {
    /// The WorkspaceTokens (from `tokens`) each change may decide.
    pub fn triggers(
        self,
        tokens: Store<WorkspaceToken>,
    ) -> impl Stream<Item = ObjectRef<WorkspaceToken>> + Send + 'static {
        self.0.flat_map(move |touched| {
            let woken: Vec<_> = tokens
                .state()
                .iter()
                .filter(|wst| decided_by(wst, &touched))
                .map(|wst| ObjectRef::from_obj(wst.as_ref()))
                .collect();
            stream::iter(woken)
        })
    }
}

/// Whether `touched` can change how `wst`'s issuer resolves.
fn decided_by(wst: &WorkspaceToken, touched: &Touched) -> bool {
    let Some(reference) = &wst.spec.issuer_ref else {
        return false;
    };
    let ns = wst.metadata.namespace.as_deref().unwrap_or_default();
    match (touched, reference.kind) {
        (Touched::Namespaced { namespace, name }, IssuerKind::TokenIssuer) => {
            namespace == ns && *name == reference.name
        }
        (Touched::Cluster { name }, IssuerKind::ClusterTokenIssuer) => *name == reference.name,
        (Touched::Namespace { name }, IssuerKind::ClusterTokenIssuer) => name == ns,
        _ => false,
    }
}
