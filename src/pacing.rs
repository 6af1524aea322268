//! Pacing: when a WorkspaceToken is looked at again. Pure bookkeeping over the clock it is
//! given: after a failure, capped exponential backoff that our own writes do not cut short
//! but anyone else's edit does; after a pass, a wait until the caches show what it wrote
//! (planning on a cache behind our own writes would mint a version twice); after the
//! finalizer went, nothing for that object until the cache drops it; and passes that only
//! need redoing (a conflict, a platform with every slot busy) redone quietly up to a limit,
//! then reported like any failure.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Quiet retries in a row (conflicts, a busy platform); beyond this, one is a failure like
/// any other: a Degraded condition, a Warning event and backoff (something keeps changing
/// what our writes depend on, or a platform stays saturated, and someone should know).
pub const QUIET_RETRIES: u32 = 5;

/// How long to wait for the caches to show our writes before planning anyway.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a pass waiting for the caches looks again.
pub const EXPECTATION_RECHECK: Duration = Duration::from_secs(1);

/// What the caches show now of one WorkspaceToken and its Secrets.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub resource_version: Option<&'a str>,
    pub uid: Option<&'a str>,
    /// Its cached Secrets: name and resourceVersion.
    pub secrets: &'a [(String, Option<u64>)],
}

/// What one pass wrote, as the caches must show it before the next pass plans.
#[derive(Clone, Debug, Default)]
pub struct Wrote {
    /// The WorkspaceToken's resourceVersion after our last write to it.
    pub resource_version: Option<String>,
    /// Secrets written (name, resourceVersion; None = deleted).
    pub secrets: Vec<(String, Option<String>)>,
}

/// How a pass ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ended {
    /// Every step succeeded; look again after this long (None: on the next change).
    Succeeded(Option<Duration>),
    /// A write met a newer object, or the platform had no free slot: redone quietly.
    QuietRetry,
    /// A failure someone has to hear about.
    Failed,
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    After(Duration),
    OnChange,
}

/// The pacing state of every WorkspaceToken, by key.
#[derive(Debug)]
pub struct Pacer<K> {
    failures: HashMap<K, Failure>,
    expectations: HashMap<K, Expectation>,
}

impl<K> Default for Pacer<K> {
    fn default() -> Self {
        Pacer {
            failures: HashMap::new(),
            expectations: HashMap::new(),
        }
    }
}

/// A WorkspaceToken whose last passes failed.
#[derive(Debug, Default)]
struct Failure {
    attempts: u32,
    retry_at: Option<Instant>,
    /// The resourceVersion our own writes left: watch events of our writes are no reason to
    /// retry early, a change by anyone else (a fixed spec) is acted on at once.
    own_resource_version: Option<String>,
    /// Passes in a row that ended in a quiet retry.
    conflicts: u32,
}

/// What our own last writes must look like in the caches before we plan again.
#[derive(Debug)]
struct Expectation {
    resource_version: Option<u64>,
    secrets: Vec<(String, Option<u64>)>,
    /// The uid whose finalizer we removed: that object is gone, whatever the cache still
    /// shows (a pass on it would redo the deletion without the Secrets it needs).
    gone_uid: Option<String>,
    since: Instant,
}

impl<K: Hash + Eq + Clone> Pacer<K> {
    /// How long to hold a pass on `key` back, or None to go now.
    pub fn hold(&mut self, key: &K, seen: &Seen<'_>, now: Instant) -> Option<Duration> {
        if let Some(wait) = self.backing_off(key, seen, now) {
            return Some(wait);
        }
        let expected = self.expectations.get(key)?;
        if expected.met_by(seen) || now.duration_since(expected.since) > EXPECTATION_TIMEOUT {
            self.expectations.remove(key);
            return None;
        }
        Some(EXPECTATION_RECHECK)
    }

    fn backing_off(&self, key: &K, seen: &Seen<'_>, now: Instant) -> Option<Duration> {
        let failure = self.failures.get(key)?;
        let left = failure.retry_at?.checked_duration_since(now)?;
        let ours = failure.own_resource_version.as_deref() == seen.resource_version;
        (ours && !left.is_zero()).then_some(left)
    }

    /// Whether a retry met now is redone quietly: up to [`QUIET_RETRIES`] in a row.
    pub fn retry_is_quiet(&self, key: &K) -> bool {
        self.failures.get(key).map_or(0, |f| f.conflicts) < QUIET_RETRIES
    }

    /// Records what a pass wrote; the next pass waits until the caches show it.
    pub fn wrote(&mut self, key: K, wrote: Wrote, now: Instant) {
        if wrote.resource_version.is_none() && wrote.secrets.is_empty() {
            self.expectations.remove(&key);
            return;
        }
        let parse = |rv: Option<String>| rv.and_then(|rv| rv.parse().ok());
        let expectation = Expectation {
            resource_version: parse(wrote.resource_version),
            secrets: (wrote.secrets.into_iter())
                .map(|(name, rv)| (name, parse(rv)))
                .collect(),
            gone_uid: None,
            since: now,
        };
        self.expectations.insert(key, expectation);
    }

    /// Our pass removed the finalizer of `uid`: until the cache drops that object (or the
    /// expectation times out), nothing is planned for it.
    pub fn finished(&mut self, key: K, uid: String, now: Instant) {
        self.failures.remove(&key);
        // Entries for objects that are gone are never met again; drop the old ones here.
        (self.expectations).retain(|_, e| now.duration_since(e.since) <= EXPECTATION_TIMEOUT);
        let expectation = Expectation {
            resource_version: None,
            secrets: Vec::new(),
            gone_uid: Some(uid),
            since: now,
        };
        self.expectations.insert(key, expectation);
    }

    /// When to look at `key` again after a pass that ended so. `own_resource_version` is
    /// the object's as our writes left it; `jitter` a random number in [0, 1).
    pub fn ended(
        &mut self,
        key: K,
        ended: Ended,
        own_resource_version: Option<String>,
        now: Instant,
        jitter: f64,
    ) -> Next {
        match ended {
            Ended::Succeeded(after) => {
                self.failures.remove(&key);
                after.map_or(Next::OnChange, Next::After)
            }
            Ended::QuietRetry => {
                self.failures.entry(key).or_default().conflicts += 1;
                // Soon, but not in lockstep with whoever else writes the object.
                let spread = Duration::from_millis(300).mul_f64(jitter.clamp(0.0, 1.0));
                Next::After(Duration::from_millis(200) + spread)
            }
            Ended::Failed => {
                let failure = self.failures.entry(key).or_default();
                failure.attempts = failure.attempts.saturating_add(1);
                failure.own_resource_version = own_resource_version;
                let wait = backoff(failure.attempts, jitter);
                failure.retry_at = Some(now + wait);
                Next::After(wait)
            }
        }
    }

    /// Something the pass of `key` depends on besides its own object changed (its issuer, the
    /// labels of its namespace): a failure that may have come from it is retried now, not at
    /// the end of its backoff. The count of failures stays, so a retry that fails again
    /// backs off further.
    pub fn dependency_changed(&mut self, key: &K) {
        if let Some(failure) = self.failures.get_mut(key) {
            failure.retry_at = None;
        }
    }

    /// Failed passes in a row for `key`.
    pub fn attempts(&self, key: &K) -> u32 {
        self.failures.get(key).map_or(0, |f| f.attempts)
    }
}

impl Expectation {
    fn met_by(&self, seen: &Seen<'_>) -> bool {
        let parsed = |rv: Option<&str>| rv.and_then(|rv| rv.parse::<u64>().ok());
        let object = self
            .resource_version
            .is_none_or(|want| parsed(seen.resource_version).is_some_and(|have| have >= want));
        let secrets = self.secrets.iter().all(|(name, want)| {
            let found = seen.secrets.iter().find(|(n, _)| n == name);
            match (want, found) {
                (None, found) => found.is_none(),
                (Some(want), Some((_, have))) => have.is_some_and(|have| have >= *want),
                (Some(_), None) => false,
            }
        });
        let gone = self
            .gone_uid
            .as_deref()
            .is_none_or(|uid| seen.uid != Some(uid));
        object && secrets && gone
    }
}

/// 1 s, 2 s, 4 s ... capped at 5 min, plus up to 10% jitter so failures don't synchronise.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base =
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(9)).min(Duration::from_secs(300));
    base + base.mul_f64(0.1 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
