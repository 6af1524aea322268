//! Watches the benchmark's WorkspaceTokens and notes when each was first seen Ready at each
//! version: the bench's clock for "converged" and "rotated".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokenwarden::api::WorkspaceToken;

#[derive(Clone, Default)]
pub struct Tracker {
    /// name -> version -> when first seen Ready at that version
    ready_at: Arc<Mutex<HashMap<String, HashMap<u32, Instant>>>>,
}

impl Tracker {
    /// Starts watching; the task ends with the process.
    pub fn watch(api: Api<WorkspaceToken>) -> Tracker {
        let tracker = Tracker::default();
        let seen = tracker.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default().page_size(500))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(wst) = event {
                    seen.note(&wst);
                }
            }
        });
        tracker
    }

    fn note(&self, wst: &WorkspaceToken) {
        let Some(status) = wst.status.as_ref() else {
            return;
        };
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let (Some(version), true) = (status.current_version, ready) else {
            return;
        };
        let name = wst.metadata.name.clone().unwrap_or_default();
        let mut ready_at = self.ready_at.lock().expect("tracker lock");
        ready_at
            .entry(name)
            .or_default()
            .entry(version)
            .or_insert_with(Instant::now);
    }

    /// How many tokens have been Ready at `version` (or later).
    pub fn count_at(&self, version: u32) -> usize {
        let ready_at = self.ready_at.lock().expect("tracker lock");
        ready_at
            .values()
            .filter(|versions| versions.keys().any(|v| *v >= version))
            .count()
    }

    /// Waits until `n` tokens have been Ready at `version`; returns when the last one was
    /// first seen so. Panics after `timeout`, naming how many made it.
    pub async fn all_ready_at(&self, n: usize, version: u32, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let ready_at = self.ready_at.lock().expect("tracker lock");
                let firsts: Vec<Instant> = ready_at
                    .values()
                    .filter_map(|versions| {
                        versions
                            .iter()
                            .filter(|(v, _)| **v >= version)
                            .map(|(_, at)| *at)
                            .min()
                    })
                    .collect();
                if firsts.len() >= n {
                    return firsts.into_iter().max().expect("n > 0");
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} WorkspaceTokens Ready at v{version} after {timeout:?}",
                    firsts.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
