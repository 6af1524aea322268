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
//! So every watch made here starts over, listing everything, when one of them is told it is
//! ahead of the API server, when [`watch_for_time_travel`] finds the cluster's
//! resourceVersion (etcd's revision, which only grows while no backup is restored) behind the
//! highest one a watch has seen, and when a write finds an object older than the cache
//! showed it ([`object_went_back`]). From that moment until every watch that had listed
//! before has listed again ([`caught_up`]), the caches mix two worlds (a restored
//! WorkspaceToken beside the Secrets of its future): no pass plans on them.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// How often the cluster's resourceVersion is read to notice it went backwards: before the
/// restored cluster's own writes (leases renew every few seconds) carry it past what the
/// watches saw.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a hold after a rewind lasts before the watches it waits for are named in the log.
const HOLD_REPORTED_AFTER: Duration = Duration::from_secs(30);

/// The rewinds of this process's one cluster.
static CLUSTER: LazyLock<Rewinds> = LazyLock::new(Rewinds::default);

/// The cluster's trips back in time as this process noticed them, and how far each watch
/// has caught up with them.
struct Rewinds {
    /// How many times the cluster went back in time: each one starts every watch over.
    count: watch::Sender<u64>,
    /// The highest resourceVersion any watch has delivered (or the cluster was read at).
    highest_seen: AtomicU64,
    /// Every live watch's progress (dropped watches leave a dead reference, swept here).
    watches: Mutex<Vec<Weak<Listed>>>,
}

/// One watch's progress: 1 + the rewind count when the list it last completed was started;
/// 0 while it never completed one (a watch that cannot list, missing a CRD or a permission,
/// holds nothing back: its cache was never trusted). With the kind it watches, to say which
/// watches a hold waits for.
struct Listed(AtomicU64, &'static str);

impl Default for Rewinds {
    fn default() -> Self {
        Rewinds {
            count: watch::channel(0).0,
            highest_seen: AtomicU64::new(0),
            watches: Mutex::default(),
        }
    }
}

/// [`kube::runtime::watcher`], started over when the cluster went back in time.
pub fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    CLUSTER.watch(move |again| {
        let listing = kube::runtime::watcher(api.clone(), config.clone()).boxed();
        if again {
            late_for_a_fault_test::<K>(listing)
        } else {
            listing
        }
    })
}

/// Whether every watch that had listed before the cluster last went back in time has listed
/// again since (and what read its new list, a cache, has taken it in). Until then a cache
/// may still show the world the cluster left.
pub fn caught_up() -> bool {
    CLUSTER.caught_up()
}

/// How many times this process found the cluster gone back in time: a pass that sees it
/// change while under way observed a world that is gone.
pub fn rewinds() -> u64 {
    *CLUSTER.count.borrow()
}

/// What a watch yields: kube's watcher events, or its error.
type Listing<K> = BoxStream<'static, watcher::Result<Event<K>>>;

/// One watch as [`Rewinds::watch`] runs it.
struct Watch<K, F> {
    inner: Listing<K>,
    /// Starts the watch (again, when told `true`).
    start: F,
    rewinds: watch::Receiver<u64>,
    listed: Arc<Listed>,
    /// The rewind count when `inner` was started.
    started_at: u64,
    /// `inner` has just delivered the end of a list: when the next item is asked for, what
    /// read the list (a cache) has taken it in.
    ended_a_list: bool,
}

impl Rewinds {
    /// A watch started by `start`, started over by every rewind.
    fn watch<K, F>(&'static self, start: F) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
    where
        K: Resource + Send + 'static,
        F: Fn(bool) -> Listing<K> + Send + 'static,
    {
        let rewinds = self.count.subscribe();
        let started_at = *rewinds.borrow();
        let listed = Arc::new(Listed(AtomicU64::new(0), kind::<K>()));
        (self.watches.lock().expect("watches")).push(Arc::downgrade(&listed));
        let first = Watch {
            inner: start(false),
            started_at,
            start,
            rewinds,
            listed,
            ended_a_list: false,
        };
        futures::stream::unfold(first, move |mut w| async move {
            if std::mem::take(&mut w.ended_a_list) {
                w.listed.0.fetch_max(w.started_at + 1, Ordering::Relaxed);
            }
            loop {
                tokio::select! {
                    // A rewind first: nothing more is read from a watch of the world before.
                    biased;
                    Ok(()) = w.rewinds.changed() => {
                        w.started_at = *w.rewinds.borrow_and_update();
                        tracing::info!(kind = kind::<K>(), "listing everything again");
                        w.inner = (w.start)(true);
                    }
                    item = w.inner.next() => {
                        let item = item?;
                        match &item {
                            Ok(event) => {
                                self.saw(event);
                                w.ended_a_list = matches!(event, Event::InitDone);
                            }
                            Err(e) if went_back_in_time(e) => {
                                tracing::warn!(
                                    kind = kind::<K>(),
                                    error = %e,
                                    "the API server is behind what this watch has seen (a \
                                     restore from an older backup?): every watch lists \
                                     everything again"
                                );
                                self.rewind(0);
                            }
                            Err(_) => {}
                        }
                        return Some((item, w));
                    }
                }
            }
        })
    }

    /// Starts every watch over; `now` is the cluster's resourceVersion, as far as known.
    fn rewind(&self, now: u64) {
        self.highest_seen.store(now, Ordering::Relaxed);
        self.count.send_modify(|n| *n += 1);
    }

    fn caught_up(&self) -> bool {
        self.behind().is_empty()
    }

    /// The kinds of the watches that listed before the last rewind and not since.
    fn behind(&self) -> Vec<&'static str> {
        let count = *self.count.borrow();
        let mut watches = self.watches.lock().expect("watches");
        watches.retain(|w| w.strong_count() > 0);
        let behind = watches.iter().filter_map(Weak::upgrade).filter(|w| {
            let listed = w.0.load(Ordering::Relaxed);
            listed != 0 && listed <= count
        });
        behind.map(|w| w.1).collect()
    }

    /// Keeps the highest resourceVersion a watch delivered.
    fn saw<K: Resource>(&self, event: &Event<K>) {
        let object = match event {
            Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => o,
            Event::Init | Event::InitDone => return,
        };
        let version = (object.meta().resource_version.as_deref()).and_then(|rv| rv.parse().ok());
        if let Some(version) = version {
            self.highest_seen.fetch_max(version, Ordering::Relaxed);
        }
    }
}

/// With the `failpoints` feature and [`crate::failpoint::SECRET_RELIST_LATE`] armed, a Secret
/// watch started over waits a few seconds before it lists: the gap in which the WorkspaceToken
/// cache already shows the restored cluster while the Secret index still shows its future.
fn late_for_a_fault_test<K>(listing: Listing<K>) -> Listing<K>
where
    K: Send + 'static,
{
    use crate::failpoint::{SECRET_RELIST_LATE, armed};
    if kind::<K>() != "Secret" || !armed(SECRET_RELIST_LATE) {
        return listing;
    }
    let late = futures::stream::once(tokio::time::sleep(Duration::from_secs(3)));
    late.filter_map(|()| async { None }).chain(listing).boxed()
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
    let cluster = &*CLUSTER;
    let mut held_since: Option<std::time::Instant> = None;
    loop {
        // A watch that cannot list again (its permission or CRD gone with the restore) holds
        // every pass: say which, every 30 s.
        let behind = cluster.behind();
        let held = held_since.get_or_insert_with(std::time::Instant::now);
        if behind.is_empty() {
            held_since = None;
        } else if held.elapsed() >= HOLD_REPORTED_AFTER {
            tracing::warn!(
                watches = ?behind,
                seconds = held.elapsed().as_secs(),
                "no pass runs until these watches have listed the restored cluster again"
            );
            held_since = Some(std::time::Instant::now());
        }
        // What the watches had seen before the read: the read is served at the cluster's
        // revision then or later, so only a cluster gone back in time answers less. (A
        // watch event arriving while the read is under way may be newer than its answer.)
        let seen = cluster.highest_seen.load(Ordering::Relaxed);
        let read = api.list_metadata(&ListParams::default().limit(1)).await;
        let now = (read.ok())
            .and_then(|l| l.metadata.resource_version)
            .and_then(|rv| rv.parse::<u64>().ok());
        if let Some(now) = now {
            cluster.highest_seen.fetch_max(now, Ordering::Relaxed);
            if now < seen {
                tracing::warn!(
                    seen,
                    now,
                    "the cluster's resourceVersion is behind what the watches saw (etcd \
                     restored from an older backup?): every watch lists everything again"
                );
                cluster.rewind(now);
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
        CLUSTER.rewind(parse(current).unwrap_or_default());
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
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::collections::VecDeque;
    use std::pin::pin;

    fn object(resource_version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                resource_version: Some(resource_version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// One complete list of one object at `resource_version`.
    fn list(resource_version: &str) -> Vec<watcher::Result<Event<ConfigMap>>> {
        let object = object(resource_version);
        vec![
            Ok(Event::Init),
            Ok(Event::InitApply(object)),
            Ok(Event::InitDone),
        ]
    }

    /// A watch that answers each start with the next of `answers`, then waits for ever.
    fn answering(
        answers: Vec<Vec<watcher::Result<Event<ConfigMap>>>>,
    ) -> impl Fn(bool) -> Listing<ConfigMap> + Send + 'static {
        let answers = Mutex::new(VecDeque::from(answers));
        move |_| {
            let events = answers.lock().unwrap().pop_front().unwrap_or_default();
            let events = futures::stream::iter(events);
            events.chain(futures::stream::pending()).boxed()
        }
    }

    /// What the watch delivers now, if anything (a cache reading it asks for the next item).
    fn read<S: Stream + Unpin>(watch: &mut S) -> Option<S::Item> {
        watch.next().now_or_never().flatten()
    }

    fn rewinds() -> &'static Rewinds {
        Box::leak(Box::default())
    }

    #[tokio::test]
    async fn after_a_rewind_passes_wait_until_every_watch_listed_again_and_was_read_past_it() {
        let cluster = rewinds();
        let mut tokens = pin!(cluster.watch(answering(vec![list("265"), list("235")])));
        let mut secrets = pin!(cluster.watch(answering(vec![list("265"), list("235")])));
        let mut cannot_list = pin!(cluster.watch(answering(vec![])));
        for _ in 0..4 {
            read(&mut tokens);
            read(&mut secrets);
        }
        assert!(read(&mut cannot_list).is_none());
        assert!(cluster.caught_up(), "both listed");
        assert_eq!(cluster.highest_seen.load(Ordering::Relaxed), 265);

        cluster.rewind(235);
        assert!(
            !cluster.caught_up(),
            "held from the rewind on, before any watch restarts"
        );
        assert_eq!(
            cluster.behind(),
            ["ConfigMap", "ConfigMap"],
            "the two that had listed"
        );
        assert!(matches!(read(&mut tokens), Some(Ok(Event::Init))));
        assert!(matches!(read(&mut tokens), Some(Ok(Event::InitApply(_)))));
        assert!(matches!(read(&mut tokens), Some(Ok(Event::InitDone))));
        assert!(
            !cluster.caught_up(),
            "the cache has not taken in the list yet"
        );
        assert!(read(&mut tokens).is_none());
        assert!(!cluster.caught_up(), "the Secrets still show the future");
        for _ in 0..3 {
            read(&mut secrets);
        }
        assert!(!cluster.caught_up());
        read(&mut secrets);
        assert!(
            cluster.caught_up(),
            "every watch listed the restored cluster"
        );
    }

    #[tokio::test]
    async fn a_watch_told_it_is_ahead_of_the_api_server_starts_every_watch_over() {
        let cluster = rewinds();
        let ahead = watcher::Error::WatchError(status(
            504,
            "Timeout: Too large resource version: 265, current: 235",
        ));
        let mut told = list("265");
        told.push(Err(ahead));
        let mut secrets = pin!(cluster.watch(answering(vec![told, list("235")])));
        let mut tokens = pin!(cluster.watch(answering(vec![list("265"), list("235")])));
        for _ in 0..3 {
            read(&mut secrets);
            read(&mut tokens);
        }
        read(&mut tokens);
        assert!(cluster.caught_up());
        assert!(matches!(read(&mut secrets), Some(Err(_))));
        assert!(
            !cluster.caught_up(),
            "one watch behind the API server: all are suspect"
        );
        assert!(matches!(read(&mut tokens), Some(Ok(Event::Init))));
        for _ in 0..4 {
            read(&mut tokens);
            read(&mut secrets);
        }
        assert!(cluster.caught_up());
    }

    #[tokio::test]
    async fn a_watch_that_went_away_holds_nothing_back() {
        let cluster = rewinds();
        {
            let mut gone = pin!(cluster.watch(answering(vec![list("7")])));
            for _ in 0..4 {
                read(&mut gone);
            }
            cluster.rewind(5);
            assert!(!cluster.caught_up());
        }
        assert!(cluster.caught_up());
    }

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
