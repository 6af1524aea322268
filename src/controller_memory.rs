//! What the controller remembers between passes, beyond the caches: failed usage questions
//! (asked again a minute later) and the highest version seen of each WorkspaceToken.

use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::api::WorkspaceToken;
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

    pub(super) fn versions_seen(&self, uid: &str) -> Option<u32> {
        (self.versions_seen.lock().expect("versions seen"))
            .get(uid)
            .copied()
    }

    /// Remembers the highest version the caches showed of `wst` in this pass.
    pub(super) fn saw_versions(
        &self,
        uid: &str,
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
        if let Some(highest) = highest {
            let mut seen = self.versions_seen.lock().expect("versions seen");
            let entry = seen.entry(uid.to_string()).or_default();
            *entry = (*entry).max(highest);
        }
    }
}
