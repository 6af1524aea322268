//! Watches of the restart targets whose rollout holds a Retiring version
//! (`holdUntil.rolloutComplete`): one watch per named workload (a field selector on its name),
//! open only while a WorkspaceToken waits on it, never a cache of every workload.
//!
//! Each watch keeps only the judged rollout (`rollout::Rollout`), and wakes the WorkspaceTokens
//! waiting on it when that changes: a hold is released at the event, with no polling.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::api::{RestartKind, RestartTarget, WorkspaceToken};
use crate::rollout::{self, Rollout};

type TokenRef = ObjectRef<WorkspaceToken>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Target {
    kind: RestartKind,
    namespace: String,
    name: String,
}

struct Watched {
    seen: Option<Rollout>,
    waiting: HashSet<TokenRef>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Watches {
    targets: HashMap<Target, Watched>,
    /// The targets each WorkspaceToken waits on.
    by_token: HashMap<TokenRef, BTreeSet<Target>>,
}

/// The open rollout watches; cloned into every pass.
#[derive(Clone)]
pub struct RolloutWatches {
    client: Client,
    watches: Arc<Mutex<Watches>>,
    wake: mpsc::UnboundedSender<TokenRef>,
}

impl RolloutWatches {
    /// The registry, and the stream of WorkspaceTokens to reconcile when a rollout they wait
    /// on changes.
    pub fn new(client: Client) -> (Self, impl Stream<Item = TokenRef> + Send + 'static) {
        let (wake, woken) = mpsc::unbounded_channel();
        let watches = RolloutWatches {
            client,
            watches: Arc::default(),
            wake,
        };
        let stream = futures::stream::unfold(woken, |mut woken| async move {
            woken.recv().await.map(|token| (token, woken))
        });
        (watches, stream)
    }

    /// What has been seen of the rollouts of `targets` in `namespace` (absent: not yet).
    pub fn seen(
        &self,
        namespace: &str,
        targets: &[RestartTarget],
    ) -> BTreeMap<(RestartKind, String), Rollout> {
        let watches = self.watches.lock().expect("rollout watches lock");
        targets
            .iter()
            .filter_map(|t| {
                let target = Target {
                    kind: t.kind,
                    namespace: namespace.to_string(),
                    name: t.name.clone(),
                };
                let seen = watches.targets.get(&target)?.seen.clone()?;
                Some(((t.kind, t.name.clone()), seen))
            })
            .collect()
    }

    /// After a pass: `token` waits on `targets` (empty: on nothing). Watches open for targets
    /// newly waited on and close once no WorkspaceToken waits on them.
    pub fn wait_on(&self, token: &TokenRef, namespace: &str, targets: &[RestartTarget]) {
        let wanted: BTreeSet<Target> = targets
            .iter()
            .map(|t| Target {
                kind: t.kind,
                namespace: namespace.to_string(),
                name: t.name.clone(),
            })
            .collect();
        let mut watches = self.watches.lock().expect("rollout watches lock");
        let before = watches.by_token.remove(token).unwrap_or_default();
        for gone in before.difference(&wanted) {
            let Some(watched) = watches.targets.get_mut(gone) else {
                continue;
            };
            watched.waiting.remove(token);
            if watched.waiting.is_empty() {
                watched.task.abort();
                watches.targets.remove(gone);
            }
        }
        for target in &wanted {
            let watched = watches
                .targets
                .entry(target.clone())
                .or_insert_with(|| Watched {
                    seen: None,
                    waiting: HashSet::new(),
                    task: self.spawn(target.clone()),
                });
            watched.waiting.insert(token.clone());
        }
        if !wanted.is_empty() {
            watches.by_token.insert(token.clone(), wanted);
        }
    }

    /// Stops waiting for WorkspaceTokens that are gone (deleted without a last pass, as when
    /// someone removes the finalizer by hand): `exists` says which still are.
    pub fn forget_gone(&self, exists: impl Fn(&TokenRef) -> bool) {
        let gone: Vec<TokenRef> = {
            let watches = self.watches.lock().expect("rollout watches lock");
            watches
                .by_token
                .keys()
                .filter(|t| !exists(t))
                .cloned()
                .collect()
        };
        for token in gone {
            let ns = token.namespace.clone().unwrap_or_default();
            self.wait_on(&token, &ns, &[]);
        }
    }

    fn spawn(&self, target: Target) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let ns = target.namespace.clone();
        match target.kind {
            RestartKind::Deployment => tokio::spawn(self.clone().follow(
                Api::<Deployment>::namespaced(client, &ns),
                target,
                rollout::deployment,
            )),
            RestartKind::StatefulSet => tokio::spawn(self.clone().follow(
                Api::<StatefulSet>::namespaced(client, &ns),
                target,
                rollout::stateful_set,
            )),
            RestartKind::DaemonSet => tokio::spawn(self.clone().follow(
                Api::<DaemonSet>::namespaced(client, &ns),
                target,
                rollout::daemon_set,
            )),
        }
    }

    /// Follows one workload until aborted, recording each change of its rollout.
    async fn follow<K>(self, api: Api<K>, target: Target, judge: fn(&K) -> Rollout)
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
        let mut events = crate::relist::watcher(api, config)
            .default_backoff()
            .boxed();
        let mut listed = false;
        while let Some(event) = events.next().await {
            let seen = match event {
                Ok(watcher::Event::Init) => {
                    listed = false;
                    continue;
                }
                Ok(watcher::Event::InitApply(object)) => {
                    listed = true;
                    judge(&object)
                }
                Ok(watcher::Event::InitDone) if listed => continue,
                Ok(watcher::Event::InitDone) | Ok(watcher::Event::Delete(_)) => Rollout::Missing,
                Ok(watcher::Event::Apply(object)) => judge(&object),
                Err(e) => {
                    tracing::warn!(error = %e, kind = ?target.kind, name = %target.name,
                        "restart target watch failed; retrying");
                    match refused(&e) {
                        Some(reason) => Rollout::Unreadable(reason),
                        None => continue,
                    }
                }
            };
            self.record(&target, seen);
        }
    }
}

/// Why the API server refused the watch, when retrying will not fix it (RBAC, a bad name).
fn refused(error: &watcher::Error) -> Option<String> {
    let kube::Error::Api(status) = (match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        _ => return None,
    }) else {
        return None;
    };
    match status.code {
        403 => Some("forbidden".to_string()),
        400 => Some("refused: the name is not a valid object name".to_string()),
        _ => None,
    }
}

impl RolloutWatches {
    fn record(&self, target: &Target, seen: Rollout) {
        let mut watches = self.watches.lock().expect("rollout watches lock");
        let Some(watched) = watches.targets.get_mut(target) else {
            return;
        };
        if watched.seen.as_ref() == Some(&seen) {
            return;
        }
        watched.seen = Some(seen);
        for token in &watched.waiting {
            let _ = self.wake.send(token.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RestartTarget;

    fn target(name: &str) -> RestartTarget {
        RestartTarget {
            kind: RestartKind::Deployment,
            name: name.to_string(),
        }
    }

    fn open(watches: &RolloutWatches) -> usize {
        watches.watches.lock().unwrap().targets.len()
    }

    #[tokio::test]
    async fn a_watch_is_open_while_a_token_waits_and_closes_when_none_does_or_the_token_is_gone() {
        // No API server behind it: the watches only retry, which is all this needs.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let (watches, _woken) = RolloutWatches::new(Client::try_from(config).unwrap());
        let (a, b) = (
            TokenRef::new("a").within("team-a"),
            TokenRef::new("b").within("team-a"),
        );
        watches.wait_on(&a, "team-a", &[target("agent"), target("web")]);
        watches.wait_on(&b, "team-a", &[target("agent")]);
        assert_eq!(open(&watches), 2, "one watch per workload, shared");
        watches.wait_on(&a, "team-a", &[]);
        assert_eq!(
            open(&watches),
            1,
            "web is no longer waited on; agent still is, by b"
        );
        watches.forget_gone(|token| token != &b);
        assert_eq!(open(&watches), 0, "b is gone without a last pass");
    }
}
