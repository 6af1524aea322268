//! Watches that list again when the cluster went back in time.
//!
//! A cluster restored from an etcd backup (its data directory copied back) serves
//! resourceVersions older than the ones a running watch has seen. Resumed from its last one,
//! a watch is then answered nothing at all (the API server waits for a resourceVersion it
//! has not reached) or, on older API servers, "Too large resource version"; once the restored
//! store passes that resourceVersion, it resumes from there and never sees what changed in
//! between: the caches would keep the future. (A restore with `etcdutl snapshot restore
//! --bump-revision --mark-compacted` avoids this: watches get 410 Gone and list again.)
//!
//! So every watch made here starts over, listing everything, when the API server says so,
//! and when [`watch_for_time_travel`] finds the cluster's resourceVersion (etcd's revision,
//! which only grows while no backup is restored) behind the highest one a watch has seen.

use std::fmt::Debug;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Bumped each time the cluster went back in time: every watch starts over.
static REWINDS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// The highest resourceVersion any watch has delivered (or the cluster was read at).
static HIGHEST_SEEN: AtomicU64 = AtomicU64::new(0);

/// How often the cluster's resourceVersion is read to notice it went backwards: before the
/// restored cluster's own writes (leases renew every few seconds) carry it past what the
/// watches saw.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// [`kube::runtime::watcher`], started over when the cluster went back in time.
pub fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let start = move || kube::runtime::watcher(api.clone(), config.clone()).boxed();
    let first = start();
    let rewinds = REWINDS.subscribe();
    futures::stream::unfold(
        (first, start, rewinds),
        |(mut inner, start, mut rewinds)| async move {
            loop {
                tokio::select! {
                    item = inner.next() => {
                        let item = item?;
                        if let Ok(event) = &item {
                            saw(event);
                        }
                        if let Err(e) = &item
                            && went_back_in_time(e)
                        {
                            tracing::warn!(
                                kind = kind::<K>(),
                                error = %e,
                                "the API server is behind what this watch has seen (a restore \
                                 from an older backup?); listing everything again"
                            );
                            inner = start();
                        }
                        return Some((item, (inner, start, rewinds)));
                    }
                    Ok(()) = rewinds.changed() => {
                        tracing::info!(kind = kind::<K>(), "listing everything again");
                        inner = start();
                    }
                }
            }
        },
    )
}

/// Keeps the highest resourceVersion a watch delivered.
fn saw<K: Resource>(event: &Event<K>) {
    let object = match event {
        Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => o,
        Event::Init | Event::InitDone => return,
    };
    let version = (object.meta().resource_version.as_deref()).and_then(|rv| rv.parse().ok());
    if let Some(version) = version {
        HIGHEST_SEEN.fetch_max(version, Ordering::Relaxed);
    }
}

fn kind<K>() -> &'static str {
    (std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or_default())
    .trim_end_matches('>')
}

/// Reads the cluster's resourceVersion every [`PROBE_INTERVAL`] (a list of at most one
/// WorkspaceToken, read from etcd) and starts every watch over when it is behind the highest
/// one seen. resourceVersions are compared as numbers: what etcd's revision is, which every
/// Kubernetes API server serves (KEP-5504 makes that comparison part of the API).
pub async fn watch_for_time_travel(api: Api<crate::api::WorkspaceToken>) {
    loop {
        // What the watches had seen before the read: the read is served at the cluster's
        // revision then or later, so only a cluster gone back in time answers less. (A
        // watch event arriving while the read is under way may be newer than its answer.)
        let seen = HIGHEST_SEEN.load(Ordering::Relaxed);
        let read = api.list_metadata(&ListParams::default().limit(1)).await;
        let now = (read.ok())
            .and_then(|l| l.metadata.resource_version)
            .and_then(|rv| rv.parse::<u64>().ok());
        if let Some(now) = now {
            HIGHEST_SEEN.fetch_max(now, Ordering::Relaxed);
            if now < seen {
                tracing::warn!(
                    seen,
                    now,
                    "the cluster's resourceVersion is behind what the watches saw (etcd \
                     restored from an older backup?): every watch lists everything again"
                );
                HIGHEST_SEEN.store(now, Ordering::Relaxed);
                REWINDS.send_modify(|n| *n += 1);
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Whether the object the cache showed at `cached` is now at `current`, a resourceVersion
/// below it: only a cluster restored from an older backup goes back so. Then every watch
/// lists again at once (without waiting for the probe), and the caller writes nothing.
pub fn object_went_back(cached: Option<&str>, current: Option<&str>) -> bool {
    let parse = |rv: Option<&str>| rv.and_then(|v| v.parse::<u64>().ok());
    let back = matches!((parse(cached), parse(current)), (Some(c), Some(n)) if n < c);
    if back {
        tracing::warn!(
            cached,
            current,
            "an object is older than the cache showed it (etcd restored from an older \
             backup?): every watch lists everything again"
        );
        HIGHEST_SEEN.store(parse(current).unwrap_or_default(), Ordering::Relaxed);
        REWINDS.send_modify(|n| *n += 1);
    }
    back
}

/// The API server's answer to a watch from a resourceVersion it has not reached.
pub fn went_back_in_time(error: &watcher::Error) -> bool {
    error.to_string().contains("Too large resource version")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> Box<kube::core::Status> {
        Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        })
    }

    #[test]
    fn only_an_object_older_than_the_cache_showed_is_a_trip_back_in_time() {
        assert!(object_went_back(Some("260"), Some("231")));
        assert!(!object_went_back(Some("231"), Some("260")));
        assert!(!object_went_back(Some("231"), Some("231")));
        assert!(!object_went_back(None, Some("231")));
    }

    #[test]
    fn only_a_too_large_resource_version_starts_the_watch_over() {
        let ahead = watcher::Error::WatchError(status(
            504,
            "Timeout: Too large resource version: 5000, current: 1200",
        ));
        let gone = watcher::Error::WatchError(status(410, "too old resource version: 1 (1200)"));
        assert!(went_back_in_time(&ahead));
        assert!(!went_back_in_time(&gone));
        assert!(!went_back_in_time(&watcher::Error::NoResourceVersion));
    }
}
