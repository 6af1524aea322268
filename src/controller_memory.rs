//! What the controller remembers between passes, beyond the caches: failed usage questions
//! (asked again a minute later) and the highest version seen of each WorkspaceToken; and
//! forgetting it for WorkspaceTokens that are gone.

use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};

use super::Context;
use crate::api::WorkspaceToken;
use crate::inventory::Inventory;
use crate::token_cache::{CachedToken, cached_ref};
use crate::{plan, secrets};

impl Context {
    /// The failed answer about `version`'s use that stands until it may be asked again.
    pub(super) fn unanswered(
        &self,
        key: &ObjectRef<WorkspaceToken>,
        version: u32,
    ) -> Option<plan::UsageReading> {
        let failures = self.usage_failures.lock().expect("usage failures");
        let (until, reading) = failures.get(key)?;
        (reading.version == version && Instant::now() < *until).then(|| reading.clone())
    }

    /// Remembers a failed answer until it may be asked again (and forgets expired ones).
    pub(super) fn answered(
        &self,
        key: ObjectRef<WorkspaceToken>,
        reading: plan::UsageReading,
    ) -> plan::UsageReading {
        let mut failures = self.usage_failures.lock().expect("usage failures");
        let now = Instant::now();
        failures.retain(|_, (until, _)| *until > now);
        if reading.usage.is_err() {
            let retry = Duration::from_secs(plan::USAGE_RETRY_SECONDS.unsigned_abs());
            failures.insert(key, (now + retry, reading.clone()));
        } else {
            failures.remove(&key);
        }
        reading
    }

    pub(super) fn versions_seen(&self, uid: Option<u128>) -> Option<u32> {
        (self.versions_seen.lock().expect("versions seen"))
            .get(&uid?)
            .copied()
    }

    /// Remembers the highest version the caches showed of `wst` in this pass.
    pub(super) fn saw_versions(
        &self,
        uid: Option<u128>,
        view: &secrets::SecretsView,
        wst: &WorkspaceToken,
    ) {
        let recorded = (wst.status.iter()).flat_map(|s| {
            s.versions
                .iter()
                .map(|v| v.version)
                .chain(s.current_version)
        });
        let highest = view.versioned.keys().copied().chain(recorded).max();
        if let (Some(highest), Some(uid)) = (highest, uid) {
            let mut seen = self.versions_seen.lock().expect("versions seen");
            let entry = seen.entry(uid).or_default();
            *entry = (*entry).max(highest);
        }
    }

    /// One round of `count_ready_tokens`: its sets of every uid and group are gone before the
    /// wait (held across it, they were a megabyte at 10k tokens, always).
    pub(super) fn count_and_forget(&self, store: &Store<CachedToken>) {
        self.rollouts
            .forget_gone(|token| store.get(&cached_ref(token)).is_some());
        let (mut ready, mut not_ready) = (0, 0);
        let mut uids = std::collections::HashSet::new();
        let mut groups = std::collections::HashSet::new();
        for cached in store.state() {
            if cached.ready {
                ready += 1;
            } else {
                not_ready += 1;
            }
            uids.extend(cached.uid);
            if cached.issuer_ref.is_none() {
                continue;
            }
            let wst = cached.unpack();
            if let Some(Ok(issuer)) = self.io.issuers.for_token(&wst) {
                groups.insert(Inventory::key(&issuer, &wst));
            }
        }
        self.io.metrics.set_ready_tokens(ready, not_ready);
        self.inventory.forget_gone(|group| groups.contains(group));
        self.io
            .metrics
            .set_unmanaged_tokens(self.inventory.unmanaged_count());
        (self.versions_seen.lock().expect("versions seen")).retain(|uid, _| uids.contains(uid));
    }
}
