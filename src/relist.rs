//! Watches that list again when the cluster went back in time.
//!
//! A cluster restored from an etcd backup serves resourceVersions older than the ones a
//! running watch has seen. Resuming from its last one, kube-rs's watcher is then answered
//! "Too large resource version" for as long as the restored store has not caught up, and
//! would resume from there once it has, missing every change in between. client-go's reflector
//! lists again from scratch; so does this: on that answer the watch starts over, and the
//! caches it feeds are replaced by what the cluster holds now.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

/// [`kube::runtime::watcher`], started over when the API server says the cluster is behind
/// what this watch has seen.
pub fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let start = move || kube::runtime::watcher(api.clone(), config.clone()).boxed();
    let first = start();
    futures::stream::unfold((first, start), |(mut inner, start)| async move {
        let item = inner.next().await?;
        if let Err(e) = &item
            && went_back_in_time(e)
        {
            tracing::warn!(
                kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or_default(),
                error = %e,
                "the API server is behind what this watch has seen (a restore from an older \
                 backup?); listing everything again"
            );
            inner = start();
        }
        Some((item, (inner, start)))
    })
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
