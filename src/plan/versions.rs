//! Which versions exist, which one is current, and the moves between states.

use super::planner::Planner;
use chrono::{DateTime, Utc};

use super::{RevokeReason, Step, VersionRecord};
use crate::api::VersionState;

impl Planner<'_, '_> {
    /// The current version for a pass that changes nothing about it (deletion, conflict,
    /// suspend): what is observed, else what status recorded (a lost current version stays
    /// current until a pass that may act on it), and only a version status can show.
    pub(super) fn recorded_current(&self) -> Option<u32> {
        self.observed_current()
            .map(|(n, _)| n)
            .or(self.o.status.and_then(|s| s.current_version))
            .filter(|n| self.versions.contains_key(n) && !self.revoked(*n))
    }

    /// The version `S` holds (and whether `S` is intact), or the record status points at when
    /// `S` is gone, edited or behind.
    pub(super) fn observed_current(&self) -> Option<(u32, bool)> {
        let o = self.o;
        let status_current = o.status.and_then(|s| s.current_version);
        // What S holds, when its token is that version's: it matches the record, or the record
        // is gone and S matches what status knew of the version (an edited S that names a
        // version status never saw is drift, not a record to restore). Without any status
        // there is nothing to check S against.
        let in_mounted = o.mounted.as_ref().and_then(|m| {
            let n = m.version?;
            let sha = m.token_sha256.as_ref()?;
            if self.revoked(n) {
                return None;
            }
            let known = match o.versioned.get(&n) {
                Some(record) => record.token_sha256.as_ref(),
                // (A status holding only a mint intent is no status of versions.)
                None if o.status.is_none_or(|s| s.versions.is_empty()) => Some(sha),
                None => self.versions.get(&n).and_then(|v| v.token_sha256.as_ref()),
            };
            (known == Some(sha)).then_some(n)
        });
        let recorded = status_current.filter(|n| self.usable(*n));
        match (in_mounted, recorded) {
            // Versions only move forward: S behind status was rolled back by someone (S ahead
            // of status is a cutover whose status write was lost, and S is right).
            (Some(held), Some(recorded)) if recorded > held => Some((recorded, false)),
            // S behind a current version whose own copies are both gone: that version is lost
            // (below), S's older token does not come back as current.
            (Some(held), None) if status_current.is_some_and(|c| c > held) => None,
            (Some(held), _) => Some((held, true)),
            (None, Some(recorded)) => Some((recorded, false)),
            // Both copies of the current version are gone: that is a lost token, not a reason
            // to bring back an older one.
            (None, None) if status_current.is_some() => None,
            // No status (lost, or a first pass that crashed): the newest record.
            (None, None) => o
                .versioned
                .keys()
                .copied()
                .filter(|n| self.usable(*n))
                .max()
                .map(|n| (n, false)),
        }
    }

    pub(super) fn revoked(&self, n: u32) -> bool {
        self.versions
            .get(&n)
            .is_some_and(|v| v.state == VersionState::Revoked)
    }

    /// Whether `S-vN` holds a token that may be served: the record exists (or is restored in
    /// this pass) and the version is not revoked.
    pub(super) fn usable(&self, n: u32) -> bool {
        let recorded = self
            .o
            .versioned
            .get(&n)
            .is_some_and(|v| v.token_sha256.is_some());
        (recorded || self.restored == Some(n)) && !self.revoked(n)
    }

    pub(super) fn has_history(&self) -> bool {
        !self.versions.is_empty() || self.o.status.and_then(|s| s.current_version).is_some()
    }

    pub(super) fn next_version(&self) -> u32 {
        let from_status = self.o.status.map(|s| {
            s.versions
                .iter()
                .map(|v| v.version)
                .chain(s.current_version)
                .max()
                .unwrap_or(0)
        });
        self.versions
            .keys()
            .copied()
            .chain(from_status)
            .chain(self.o.versions_seen)
            .max()
            .unwrap_or(0)
            + 1
    }

    pub(super) fn activate(&mut self, version: u32) {
        if let Some(record) = self.current.and_then(|old| self.versions.get_mut(&old)) {
            record.state = VersionState::Retiring;
        }
        let now = self.now;
        let record = self
            .versions
            .get_mut(&version)
            .expect("activated version exists");
        record.state = VersionState::Active;
        record.activated_at = Some(now);
        record.retire_at = None;
        self.current = Some(version);
    }

    /// Marks `version` Revoked and returns the step that does it. A version already recorded
    /// as revoked keeps its revocation time.
    pub(super) fn revoke(&mut self, version: u32, reason: RevokeReason) -> Step {
        let now = self.now;
        if let Some(record) = self.versions.get_mut(&version) {
            record.state = VersionState::Revoked;
            record.retire_at = None;
            record.revoked_at = record.revoked_at.or(Some(now));
        }
        Step::Revoke { version, reason }
    }

    /// States for a pass that changes nothing (conflict, suspend).
    pub(super) fn mark_states(&mut self) {
        let current = self.current;
        for (n, record) in self.versions.iter_mut() {
            if record.state == VersionState::Revoked {
                continue;
            }
            record.state = match current {
                Some(c) if *n == c => VersionState::Active,
                Some(c) if *n < c => VersionState::Retiring,
                _ => VersionState::Pending,
            };
        }
    }
}

/// The record of a version minted in this pass.
pub(super) fn new_record(now: DateTime<Utc>) -> VersionRecord {
    VersionRecord {
        state: VersionState::Pending,
        token_prefix: None,
        token_sha256: None,
        created_at: Some(now),
        activated_at: None,
        retire_at: None,
        revoked_at: None,
        trace_id: None,
        issuer_token_id: None,
        issuer: None,
        retire_held_by: Vec::new(),
        usage: None,
    }
}

/// A version as status recorded it.
pub(super) fn record_from_status(v: &crate::api::VersionStatus) -> VersionRecord {
    VersionRecord {
        state: v.state,
        token_prefix: v.token_prefix.clone(),
        token_sha256: v.token_sha256.clone(),
        created_at: v.created_at.as_ref().map(crate::time::from_time),
        activated_at: v.activated_at.as_ref().map(crate::time::from_time),
        retire_at: v.retire_at.as_ref().map(crate::time::from_time),
        revoked_at: v.revoked_at.as_ref().map(crate::time::from_time),
        trace_id: v.trace_id.clone(),
        issuer_token_id: v.issuer_token_id.clone(),
        issuer: v.issuer.clone(),
        retire_held_by: Vec::new(),
        usage: usage_from_status(v),
    }
}

/// The last answer about the version's use, as status recorded it.
fn usage_from_status(v: &crate::api::VersionStatus) -> Option<super::Usage> {
    Some(super::Usage {
        last_used_at: v.last_used_at.as_ref().map(crate::time::from_time),
        checked_at: crate::time::from_time(v.usage_checked_at.as_ref()?),
    })
}
