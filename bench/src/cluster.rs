//! Bulk writes with a tuned client and counts from the API server's own metrics.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use tokenwarden_testenv::apiserver;

/// The resources whose writes the benchmark counts as the operator's.
pub const OPERATOR_RESOURCES: [&str; 2] = ["secrets", "workspacetokens"];

/// Runs `write(i)` for i in 0..n, `concurrency` at a time; returns the wall time. A failed
/// write fails the benchmark: figures over partial work would flatter.
pub async fn bulk<F, Fut, T, E>(n: usize, concurrency: usize, write: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(&write)
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        if let Err(e) = result {
            panic!("bulk write failed: {e}");
        }
    }
    started.elapsed()
}

/// A Secret with `size` bytes of data under one key, labelled so it is easy to tell apart
/// (and never with tokenwarden's labels).
pub fn plain_secret(name: String, size: usize) -> Secret {
    let data = BTreeMap::from([("payload".to_string(), ByteString(vec![b'x'; size]))]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([(
                "bench.tokenwarden.dev/kind".to_string(),
                "unrelated".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Creates `n` Secrets of `size` bytes named `<prefix>-<i>`; returns the wall time.
pub async fn create_secrets(
    api: &Api<Secret>,
    prefix: &str,
    n: usize,
    size: usize,
    concurrency: usize,
) -> Duration {
    bulk(n, concurrency, |i| async move {
        let secret = plain_secret(format!("{prefix}-{i}"), size);
        api.create(&PostParams::default(), &secret).await
    })
    .await
}

/// Mutating requests the API server has served so far on `resources`.
pub async fn writes(client: &kube::Client, resources: &[&str]) -> u64 {
    let page = apiserver::metrics(client).await;
    apiserver::mutating_requests(&page, resources)
}

/// The resources the operator writes, events included.
pub const ALL_OPERATOR_RESOURCES: [&str; 3] = ["secrets", "workspacetokens", "events"];

/// Mutating requests served so far, by `"VERB resource[/subresource]"`.
pub async fn writes_by_kind(client: &kube::Client) -> BTreeMap<String, u64> {
    let page = apiserver::metrics(client).await;
    apiserver::mutating_requests_by_kind(&page, &ALL_OPERATOR_RESOURCES)
}

/// Reads (GET, LIST, WATCH) served so far on the operator's resources, by kind.
pub async fn reads_by_kind(client: &kube::Client) -> BTreeMap<String, u64> {
    let page = apiserver::metrics(client).await;
    apiserver::requests_by_kind(&page, &ALL_OPERATOR_RESOURCES, &apiserver::READ_VERBS)
}

/// The requests of a by-kind count that went to any of `resources`.
pub fn total(by_kind: &BTreeMap<String, u64>, resources: &[&str]) -> u64 {
    let resource_of = |kind: &str| {
        let resource = kind.split_once(' ').map_or(kind, |(_, r)| r);
        resource.split('/').next().unwrap_or(resource).to_string()
    };
    by_kind
        .iter()
        .filter(|(kind, _)| resources.contains(&resource_of(kind).as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// `after - before`, per kind, leaving out kinds that did not change.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(kind, n)| (kind.clone(), n - before.get(kind).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_sums_the_kinds_of_the_named_resources_subresources_included() {
        let by_kind = [
            ("APPLY workspacetokens/status", 3),
            ("POST secrets", 4),
            ("POST events", 5),
            ("PATCH workspacetokens", 1),
        ];
        let by_kind = by_kind
            .map(|(k, n)| (k.to_string(), n))
            .into_iter()
            .collect();
        assert_eq!(total(&by_kind, &OPERATOR_RESOURCES), 8);
        assert_eq!(total(&by_kind, &["events"]), 5);
        assert_eq!(total(&by_kind, &["leases"]), 0);
    }
}
