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
use kube::{Client, Resource, ResourceExt};

use crate::api::{ClusterTokenIssuer, IssuerKind, TokenIssuer, WorkspaceToken};
use crate::issuer::caches::IssuerCaches;
use crate::token_cache::{CachedToken, token_ref};

/// Something a WorkspaceToken's issuer resolution reads changed.
#[derive(Debug)]
enum Touched {
    Namespaced {
        namespace: String,
        name: String,
    },
    Cluster {
        name: String,
    },
    Namespace {
        name: String,
    },
    /// A watch listed everything anew.
    Relisted,
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
    let namespaced_feed = changes(
        reflector(
            namespaced_writer,
            crate::relist::watcher(namespaced_api, watcher::Config::default()).default_backoff(),
        ),
        "TokenIssuer",
        |i: &TokenIssuer| Touched::Namespaced {
            namespace: i.namespace().unwrap_or_default(),
            name: i.name_any(),
        },
    );
    let cluster_feed = changes(
        reflector(
            cluster_writer,
            crate::relist::watcher(
                Api::<ClusterTokenIssuer>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        ),
        "ClusterTokenIssuer",
        |i: &ClusterTokenIssuer| Touched::Cluster { name: i.name_any() },
    );
    let namespace_feed = changes(
        reflector(
            namespaces_writer,
            crate::relist::watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                namespaces_config,
            )
            .default_backoff(),
        ),
        "Namespace",
        |n: &PartialObjectMeta<Namespace>| Touched::Namespace { name: n.name_any() },
    );
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

/// What each watch event can change. A (re)list ends with every object that the watch missed
/// deleting gone from the cache without an event of its own: then every token that names an
/// issuer is looked at again (once per list, not once per listed object).
fn changes<K, S>(
    events: S,
    kind: &'static str,
    touched: fn(&K) -> Touched,
) -> impl Stream<Item = Touched> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.filter_map(move |event| {
        future::ready(logged(event, kind).and_then(|event| match event {
            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                Some(touched(&object))
            }
            watcher::Event::InitDone => Some(Touched::Relisted),
            watcher::Event::Init | watcher::Event::InitApply(_) => None,
        }))
    })
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
        tokens: Store<CachedToken>,
    ) -> impl Stream<Item = ObjectRef<WorkspaceToken>> + Send + 'static {
        self.0.flat_map(move |touched| {
            let woken: Vec<_> = tokens
                .state()
                .iter()
                .filter(|wst| decided_by(wst, &touched))
                .map(|wst| token_ref(&ObjectRef::from_obj(wst.as_ref())))
                .collect();
            stream::iter(woken)
        })
    }
}

/// Whether `touched` can change how `wst`'s issuer resolves.
fn decided_by(wst: &CachedToken, touched: &Touched) -> bool {
    let Some(reference) = &wst.issuer_ref else {
        return false;
    };
    let ns = wst.meta().namespace.as_deref().unwrap_or_default();
    match (touched, reference.kind) {
        (Touched::Relisted, _) => true,
        (Touched::Namespaced { namespace, name }, IssuerKind::TokenIssuer) => {
            namespace == ns && *name == reference.name
        }
        (Touched::Cluster { name }, IssuerKind::ClusterTokenIssuer) => *name == reference.name,
        (Touched::Namespace { name }, IssuerKind::ClusterTokenIssuer) => name == ns,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(namespace: &str, issuer_ref: serde_json::Value) -> CachedToken {
        let wst: WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "t", "namespace": namespace },
            "spec": { "workspaceId": "ws", "issuerRef": issuer_ref }
        }))
        .unwrap();
        CachedToken::new(&wst)
    }

    #[test]
    fn each_change_wakes_the_tokens_it_can_decide() {
        let own = token("team-a", serde_json::json!({ "name": "platform" }));
        let shared = token(
            "team-a",
            serde_json::json!({ "kind": "ClusterTokenIssuer", "name": "shared" }),
        );
        let local = token("team-a", serde_json::Value::Null);
        let issuer = |namespace: &str, name: &str| Touched::Namespaced {
            namespace: namespace.into(),
            name: name.into(),
        };
        assert!(decided_by(&own, &issuer("team-a", "platform")));
        assert!(
            !decided_by(&own, &issuer("team-b", "platform")),
            "another namespace's"
        );
        assert!(!decided_by(&own, &issuer("team-a", "other")));
        assert!(decided_by(
            &shared,
            &Touched::Cluster {
                name: "shared".into()
            }
        ));
        assert!(!decided_by(
            &own,
            &Touched::Cluster {
                name: "platform".into()
            }
        ));
        let relabelled = Touched::Namespace {
            name: "team-a".into(),
        };
        assert!(
            decided_by(&shared, &relabelled),
            "namespaceSelector, workspace label"
        );
        assert!(!decided_by(&own, &relabelled));
        for wst in [&own, &shared] {
            assert!(
                decided_by(wst, &Touched::Relisted),
                "deletions the watch missed"
            );
        }
        assert!(
            !decided_by(&local, &Touched::Relisted),
            "a local token names no issuer"
        );
    }
}
