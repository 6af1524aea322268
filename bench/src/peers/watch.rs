//! The bench's clock: one watch of the namespace's Secrets noting when each expected Secret
//! was first seen holding its data key, and when its value first differed from a baseline.
//! Values are kept only as SHA-256 digests and never printed.
//!
//! The watch is hand-rolled (one LIST, then WATCHes from the last resourceVersion) so that
//! its own requests are counted exactly and can be subtracted from the API server's totals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct State {
    /// name -> digest of the data key's value, as last seen
    latest: HashMap<String, [u8; 32]>,
    /// name -> when first seen with the data key
    present_at: HashMap<String, Instant>,
    /// the digests a change is measured against
    baseline: HashMap<String, [u8; 32]>,
    /// name -> when first seen with a value other than its baseline
    changed_at: HashMap<String, Instant>,
}

pub struct SecretWatch {
    state: Arc<Mutex<State>>,
    lists: Arc<AtomicU64>,
    watches: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SecretWatch {
    /// Watches `api`'s Secrets named in `names` for `key`.
    pub fn start(api: Api<Secret>, names: HashSet<String>, key: &str) -> SecretWatch {
        let state = Arc::new(Mutex::new(State::default()));
        let (lists, watches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = tokio::spawn(run(
            api,
            names,
            key.to_string(),
            state.clone(),
            lists.clone(),
            watches.clone(),
        ));
        SecretWatch {
            state,
            lists,
            watches,
            task,
        }
    }

    /// The bench's own requests so far, as the API server names them.
    pub fn own_requests(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            (
                "LIST secrets".to_string(),
                self.lists.load(Ordering::SeqCst),
            ),
            (
                "WATCH secrets".to_string(),
                self.watches.load(Ordering::SeqCst),
            ),
        ])
    }

    /// Makes the current values the baseline that [`SecretWatch::all_changed`] compares to.
    pub fn mark_baseline(&self) {
        let mut s = self.state.lock().expect("watch lock");
        s.baseline = s.latest.clone();
        s.changed_at.clear();
    }

    /// Waits until `n` Secrets hold their key; returns when the last was first seen so.
    pub async fn all_present(&self, n: usize, timeout: Duration) -> Instant {
        self.wait(n, timeout, "holding their key", |s| &s.present_at)
            .await
    }

    /// Waits until `n` Secrets hold a value other than their baseline; returns when the last
    /// was first seen so.
    pub async fn all_changed(&self, n: usize, timeout: Duration) -> Instant {
        self.wait(n, timeout, "changed", |s| &s.changed_at).await
    }

    async fn wait(
        &self,
        n: usize,
        timeout: Duration,
        what: &str,
        times: impl Fn(&State) -> &HashMap<String, Instant>,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.state.lock().expect("watch lock");
                let times = times(&s);
                if times.len() >= n {
                    return *times.values().max().expect("n > 0");
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} Secrets {what} after {timeout:?}",
                    times.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn note(state: &Mutex<State>, names: &HashSet<String>, key: &str, secret: &Secret) {
    let Some(name) = secret.metadata.name.as_ref().filter(|n| names.contains(*n)) else {
        return;
    };
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return;
    };
    let digest: [u8; 32] = Sha256::digest(&value.0).into();
    let now = Instant::now();
    let mut s = state.lock().expect("watch lock");
    s.present_at.entry(name.clone()).or_insert(now);
    if s.baseline.get(name).is_some_and(|b| *b != digest) {
        s.changed_at.entry(name.clone()).or_insert(now);
    }
    s.latest.insert(name.clone(), digest);
}

async fn run(
    api: Api<Secret>,
    names: HashSet<String>,
    key: String,
    state: Arc<Mutex<State>>,
    lists: Arc<AtomicU64>,
    watches: Arc<AtomicU64>,
) {
    'list: loop {
        lists.fetch_add(1, Ordering::SeqCst);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                eprintln!("bench-peers: list Secrets: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for secret in &list.items {
            note(&state, &names, &key, secret);
        }
        let mut version = list.metadata.resource_version.unwrap_or_default();
        loop {
            let stream = api
                .watch(&WatchParams::default().timeout(290), &version)
                .await;
            let mut stream = match stream {
                Ok(stream) => stream.boxed(),
                Err(e) => {
                    watches.fetch_add(1, Ordering::SeqCst);
                    eprintln!("bench-peers: watch Secrets: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'list;
                }
            };
            let mut relist = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(s) | WatchEvent::Modified(s)) => {
                        version = s.metadata.resource_version.clone().unwrap_or(version);
                        note(&state, &names, &key, &s);
                    }
                    Ok(WatchEvent::Deleted(s)) => {
                        version = s.metadata.resource_version.unwrap_or(version);
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(e)) => {
                        relist = e.code == 410;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // The API server counts a WATCH when it ends.
            watches.fetch_add(1, Ordering::SeqCst);
            if relist {
                continue 'list;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, key: &str, value: &[u8]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some([(key.to_string(), ByteString(value.to_vec()))].into());
        s
    }

    #[test]
    fn notes_expected_names_with_the_key_and_changes_against_the_baseline_only() {
        let state = Mutex::new(State::default());
        let names: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        note(&state, &names, "token", &secret("a", "token", b"1"));
        note(&state, &names, "token", &secret("a-v1", "token", b"1"));
        note(&state, &names, "token", &secret("b", "other", b"1"));
        {
            let s = state.lock().unwrap();
            assert_eq!(s.present_at.len(), 1);
            assert!(s.changed_at.is_empty(), "no baseline yet: nothing changed");
        }
        note(&state, &names, "token", &secret("b", "token", b"2"));
        {
            let mut s = state.lock().unwrap();
            s.baseline = s.latest.clone();
        }
        note(&state, &names, "token", &secret("a", "token", b"1"));
        assert!(state.lock().unwrap().changed_at.is_empty());
        note(&state, &names, "token", &secret("a", "token", b"3"));
        let s = state.lock().unwrap();
        assert_eq!(s.present_at.len(), 2);
        assert_eq!(s.changed_at.keys().collect::<Vec<_>>(), ["a"]);
    }
}
