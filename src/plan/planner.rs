//! The planner's walk through one WorkspaceToken: deletion, or the lifecycle of its versions
//! (which is current, adopt or rotate, verify, retire the others, write `S`, restart, revoke,
//! metadata, the next rotation).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::metadata::{desired_metadata, metadata_current};
use super::versions::{new_record, record_from_status};
use super::warnings::{Warning, secret_conflict, warnings};
use super::{
    MountedWrite, Observed, Plan, Readiness, RevokeReason, RotationReason, SecretRef, Step,
    USAGE_POLL_SECONDS, VersionRecord,
};
use crate::api::{DeletionPolicy, VersionState};
use crate::contract::{REVOKE_VERSION_ANNOTATION, ROTATE_ANNOTATION};
use crate::schedule::Schedule;

pub(super) struct Planner<'o, 'a> {
    pub(super) o: &'o Observed<'a>,
    pub(super) now: DateTime<Utc>,
    pub(super) steps: Vec<Step>,
    pub(super) versions: BTreeMap<u32, VersionRecord>,
    pub(super) current: Option<u32>,
    /// A version whose record `RestoreVersioned` recreates in this pass.
    pub(super) restored: Option<u32>,
    pub(super) next_rotation: Option<DateTime<Utc>>,
    pub(super) rotate_request: Option<String>,
    pub(super) revoke_request: Option<String>,
    pub(super) readiness: Option<Readiness>,
    pub(super) spec_error: Option<String>,
    pub(super) wake_at: Option<DateTime<Utc>>,
    /// Warnings about consumers (a hold that ran out), besides those of the spec.
    pub(super) consumer_warnings: Vec<Warning>,
    /// `spec.rotation.windows`, parsed with the schedule.
    pub(super) windows: Vec<crate::window::Window>,
    /// The Retiring version whose use the platform must be asked about (`holdUntil.idleFor`).
    pub(super) usage_query: Option<u32>,
    pub(super) consumers: Vec<crate::api::ConsumerStatus>,
    pub(super) after_cutover: Vec<Warning>,
    /// The served version the platform no longer accepts, and how that showed.
    pub(super) gone_at_platform: Option<(u32, &'static str)>,
    pub(super) inventory_query: Option<u32>,
    pub(super) unmanaged: Option<Vec<crate::api::UnmanagedTokenStatus>>,
}

impl<'o, 'a> Planner<'o, 'a> {
    pub(super) fn new(o: &'o Observed<'a>, now: DateTime<Utc>) -> Self {
        // Status is the history: revoked versions, and the times of live ones. The Secrets say
        // which versions exist; a live version status lists whose Secret is gone stays here
        // (as Pending until planned) so that it is revoked, never silently forgotten while its
        // token may still be valid at the issuer.
        let mut versions = BTreeMap::new();
        for v in o.status.map(|s| s.versions.as_slice()).unwrap_or_default() {
            let mut record = record_from_status(v);
            if record.state != VersionState::Revoked {
                record.state = VersionState::Pending;
            }
            versions.insert(v.version, record);
        }
        for (n, secret) in &o.versioned {
            let kept = match versions.remove(n) {
                // Revoked is final: a Secret back from a backup (or a stale cache) does not
                // make the version live again.
                Some(revoked) if revoked.state == VersionState::Revoked => {
                    versions.insert(*n, revoked);
                    continue;
                }
                kept => kept,
            };
            // Who minted the version is a fact of its number, whatever its Secret now holds.
            let issuer = kept.as_ref().and_then(|k| k.issuer.clone());
            // What status knew of this version, as long as it is about the same token.
            let kept =
                kept.filter(|k| k.token_sha256.is_none() || k.token_sha256 == secret.token_sha256);
            let kept = kept.as_ref();
            versions.insert(
                *n,
                VersionRecord {
                    state: VersionState::Pending,
                    token_prefix: secret
                        .token_prefix
                        .clone()
                        .or_else(|| kept.and_then(|k| k.token_prefix.clone())),
                    token_sha256: secret.token_sha256.clone(),
                    // A restored record is younger than its version.
                    created_at: kept.and_then(|k| k.created_at).or(secret.created_at),
                    activated_at: kept.and_then(|k| k.activated_at),
                    retire_at: kept.and_then(|k| k.retire_at),
                    revoked_at: None,
                    trace_id: secret
                        .trace_id
                        .clone()
                        .or_else(|| kept.and_then(|k| k.trace_id.clone())),
                    // Learned when the platform verified the token; never from the Secret's
                    // annotations, which anyone who may edit Secrets can change.
                    issuer_token_id: kept.and_then(|k| k.issuer_token_id.clone()),
                    issuer,
                    retire_held_by: Vec::new(),
                    usage: kept.and_then(|k| k.usage),
                },
            );
        }
        Planner {
            o,
            now,
            steps: Vec::new(),
            versions,
            current: None,
            restored: None,
            next_rotation: None,
            rotate_request: None,
            revoke_request: None,
            readiness: None,
            spec_error: None,
            wake_at: None,
            consumer_warnings: Vec::new(),
            windows: Vec::new(),
            usage_query: None,
            consumers: Vec::new(),
            after_cutover: Vec::new(),
            gone_at_platform: None,
            inventory_query: None,
            unmanaged: None,
        }
    }

    pub(super) fn live(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.versions
            .iter()
            .filter(|(_, v)| v.state != VersionState::Revoked)
            .map(|(n, _)| *n)
    }

    pub(super) fn plan_deletion(&mut self) {
        if !self.o.has_finalizer {
            return;
        }
        self.current = self.recorded_current();
        match self.o.spec.deletion_policy {
            DeletionPolicy::Retain => self.steps.push(Step::ReleaseSecrets),
            DeletionPolicy::Revoke => {
                // Every token goes at the issuer (also one whose Secret is already gone), then
                // the Secrets: each revocation deletes its `S-vN`, and `S` goes last. Oldest
                // first: an old version whose `S-vN` is gone authenticates its revocation with
                // the current token, so the current one must still be there.
                let live: Vec<u32> = self.live().collect();
                for version in live {
                    let step = self.revoke(version, RevokeReason::Deleted);
                    self.steps.push(step);
                }
                if self.o.mounted.is_some() {
                    self.steps.push(Step::DeleteMounted);
                }
            }
        }
        self.steps.push(Step::RemoveFinalizer);
        self.readiness = Some(not_ready("Deleting", "the WorkspaceToken is being deleted"));
    }

    /// Whether deleting the WorkspaceToken needs a pass of ours first (`deletion.rs`), also
    /// by the records the planner merged from status and Secrets. A local token under `Revoke`
    /// needs none, which saves the finalizer's write, a fifth of a new token's cost at the API
    /// server.
    fn needs_finalizer(&self) -> bool {
        super::deletion::needs_a_pass(self.o.spec, self.o.status)
            || self.o.mint_intent.is_some()
            || (self.versions.values()).any(|v| {
                v.state != VersionState::Revoked
                    && (v.issuer.is_some() || v.issuer_token_id.is_some())
            })
    }

    pub(super) fn plan_lifecycle(&mut self) {
        if self.frozen() {
            return;
        }
        if !self.o.has_finalizer && self.needs_finalizer() {
            self.steps.push(Step::AddFinalizer);
        }
        let schedule = self.schedule();
        let grace = self.grace();
        let jitter = self.jitter();
        let status_current = self.o.status.and_then(|s| s.current_version);
        // Secrets of versions status already records as revoked: they only need deleting.
        let leftovers: Vec<u32> = self
            .o
            .versioned
            .keys()
            .rev()
            .copied()
            .filter(|n| self.revoked(*n))
            .collect();

        // 1. Which version is current, and does S need repair?
        let mut mounted_ok = self.find_current(status_current);
        self.gone_at_platform = self.served_gone();
        // 2.-3. A pending version is adopted, else a new one minted when due; neither while
        //    the issuer may not be used (nothing is sent to it, nothing minted).
        let floor = self.current.max(status_current);
        let rotated = match &self.o.issuer_problem {
            Some(problem) if self.current.is_none() => {
                self.mark_states();
                self.readiness = Some(not_ready(problem.reason, &problem.message));
                return;
            }
            Some(_) => false,
            None => self.adopt_or_rotate(floor, schedule.as_ref(), jitter),
        };
        if rotated {
            mounted_ok = false;
        }
        let current = self
            .current
            .expect("a current version after planning a mint");
        self.check_at_issuer(current, rotated);
        self.answer_requests();

        // 4. The other live versions: at most one Retiring, revoked when its grace ends.
        let (previous, mut revocations) = self.retire_others(current, floor, rotated, grace);
        for leftover in leftovers {
            revocations.push(self.revoke(leftover, RevokeReason::Orphaned));
        }

        // 5. S says exactly (current, previous).
        self.write_mounted(current, previous, rotated, mounted_ok);

        // 6. Restart targets once per cutover: whenever current is not what status recorded,
        //    which is a cutover in this pass or one whose status write was lost (also on a
        //    first pass that died after its cutover, when there is no status at all). Right
        //    after the cutover, so a failing later step doesn't withhold or repeat it.
        if !self.o.spec.restart_targets.is_empty() && status_current != Some(current) {
            self.steps.push(Step::RestartTargets { version: current });
        }

        // 7. Revocations come after S moved on: the token pods read is never revoked under
        //    them, and a failed cutover (apply stops at the first failure) revokes nothing.
        self.steps.extend(revocations);

        // 8. Metadata of the Secrets that stay.
        self.sync_metadata();

        // 9. The next rotation.
        self.schedule_next(schedule.as_ref(), current, jitter);
    }

    /// A conflict over a Secret name, or `suspend`: nothing is written, status says why.
    fn frozen(&mut self) -> bool {
        let o = self.o;
        let readiness = if !o.foreign.is_empty() {
            let names = o.foreign.join(", ");
            not_ready("SecretConflict", &secret_conflict(&names))
        } else if o.spec.suspend {
            not_ready(
                "Suspended",
                "spec.suspend is true: no writes and no rotation",
            )
        } else {
            return false;
        };
        self.current = self.recorded_current();
        self.mark_states();
        self.readiness = Some(readiness);
        true
    }

    /// Sets the current version from what the cluster shows; plans the restore of its record
    /// when only `S` still holds it. Returns whether `S` is intact. Without a status that
    /// recorded a current version, a record S does not serve never went live: it is pending,
    /// and adopted later like one a crashed pass minted (not rotated over in the same pass).
    fn find_current(&mut self, status_current: Option<u32>) -> bool {
        let o = self.o;
        let held = o.mounted.as_ref().and_then(|m| m.version);
        let observed = self
            .observed_current()
            .filter(|(n, intact)| *intact || status_current.is_some() || held == Some(*n));
        if let Some((n, true)) = observed
            && !o.versioned.contains_key(&n)
        {
            // S holds a version whose record was deleted: rebuild the record from S, keeping
            // what status knew of it (times, issuer token id).
            self.steps.push(Step::RestoreVersioned { version: n });
            self.restored = Some(n);
            let sha = o.mounted.as_ref().and_then(|m| m.token_sha256.clone());
            let now = self.now;
            let record = self.versions.entry(n).or_insert_with(|| new_record(now));
            record.token_sha256 = sha;
        }
        self.current = observed.map(|(n, _)| n);
        if let Some(record) = self.current.and_then(|n| self.versions.get_mut(&n)) {
            record.state = VersionState::Active;
            record.retire_at = None;
            // Status may be lost (restored from a backup without it): the record's creation is
            // the best lower bound for when it became current.
            if record.activated_at.is_none() {
                record.activated_at = record.created_at.or(Some(self.now));
            }
        }
        matches!(observed, Some((_, true)))
    }

    /// A minted version newer than anything that was current is pending: the newest one with
    /// a token is adopted, never minted again (the others are orphans, revoked later). Else a
    /// new version is minted when one is due. Returns whether current changed.
    fn adopt_or_rotate(
        &mut self,
        floor: Option<u32>,
        schedule: Option<&Schedule>,
        jitter: TimeDelta,
    ) -> bool {
        let pending = self
            .live()
            .filter(|n| Some(*n) > floor && self.usable(*n))
            .max();
        if let Some(adopt) = pending {
            self.activate(adopt);
            return true;
        }
        let reason = match self.current {
            None if self.has_history() => Some(RotationReason::TokenLost),
            None => Some(RotationReason::Initial),
            Some(current) => self.rotation_due(current, schedule, jitter),
        };
        let Some(reason) = reason else {
            return false;
        };
        let version = self.next_version();
        self.steps.push(Step::Mint { version, reason });
        self.versions.insert(version, new_record(self.now));
        self.activate(version);
        true
    }

    /// HTTP issuer: verify a new token before its cutover, and reclaim a cut-short mint.
    fn check_at_issuer(&mut self, current: u32, rotated: bool) {
        let o = self.o;
        if o.spec.issuer_ref.is_none() {
            return;
        }
        // An HTTP token is activated only once the platform accepted it; a failed
        // verification stops the pass here, so nothing older is revoked either.
        let verified = o.versioned.get(&current).is_some_and(|v| v.verified);
        if rotated && !verified {
            self.steps.push(Step::Verify { version: current });
        }
        if let Some(intent) = o
            .mint_intent
            .as_ref()
            .filter(|_| o.issuer_problem.is_none())
        {
            // Before a new mint when a token to authenticate with exists (so a mint that
            // keeps failing can't pile up unreclaimed windows), else right after it.
            let reclaim = Step::ReclaimOrphans {
                since: intent.since,
            };
            let before_mint = self
                .steps
                .iter()
                .position(|s| matches!(s, Step::Mint { .. }))
                .filter(|_| self.live().any(|n| n != current && self.usable(n)));
            match before_mint {
                Some(at) => self.steps.insert(at, reclaim),
                None => self.steps.push(reclaim),
            }
        }
    }

    /// New rotate and revoke-version values are answered by this pass: by its rotation, by a
    /// cutover status has not recorded yet, on a new object by its first version (see
    /// `rotation_due`), or because they name no live version.
    fn answer_requests(&mut self) {
        let o = self.o;
        let requested = o.annotations.get(ROTATE_ANNOTATION);
        if requested.is_some() && requested != o.status.and_then(|s| s.last_rotate_request.as_ref())
        {
            self.rotate_request = requested.cloned();
        }
        let revoke_value = o.annotations.get(REVOKE_VERSION_ANNOTATION);
        if revoke_value.is_some()
            && revoke_value != o.status.and_then(|s| s.last_revoke_request.as_ref())
        {
            self.revoke_request = revoke_value.cloned();
        }
    }

    /// Decides each live version other than `current`: the newest older one stays Retiring
    /// until its grace period ends (returned as `previous`), the rest are revoked.
    fn retire_others(
        &mut self,
        current: u32,
        floor: Option<u32>,
        rotated: bool,
        grace: Option<TimeDelta>,
    ) -> (Option<u32>, Vec<Step>) {
        let o = self.o;
        let activated = self.versions[&current].activated_at.unwrap_or(self.now);
        let retire_at = grace.and_then(|g| activated.checked_add_signed(g));
        if grace.is_some() && retire_at.is_none() {
            self.spec_problem(format!(
                "spec.rotation.gracePeriod {:?} ends beyond the supported time range",
                o.spec.rotation.grace_period
            ));
        }
        let revoke_requested = self.revoke_requested();
        let held_by = self.held_by(activated);
        let others: Vec<u32> = self.live().filter(|n| *n != current).collect();
        let newest_old = others.iter().copied().filter(|n| *n < current).max();
        let mut previous = None;
        let mut revocations = Vec::new();
        for &old in others.iter().rev() {
            if old > current && o.issuer_problem.is_some() {
                // Minted, not yet verified: it waits for its issuer rather than being revoked.
                continue;
            }
            let reason = if old > current || floor.is_some_and(|f| old > f) {
                // Minted but never current: a newer version won, or its record is gone.
                Some(RevokeReason::Orphaned)
            } else if Some(old) != newest_old {
                Some(RevokeReason::Superseded)
            } else if revoke_requested == Some(old) {
                Some(RevokeReason::Requested)
            } else if self.gone_at_platform.is_some_and(|(gone, _)| gone == old) {
                Some(RevokeReason::RevokedAtPlatform)
            } else {
                None
            };
            if reason == Some(RevokeReason::Superseded) {
                self.warn_if_held(old, current);
            }
            let (reason, retire_at, held) = match reason {
                Some(reason) => (Some(reason), retire_at, Vec::new()),
                None => self.grace_or_hold(old, activated, retire_at, &held_by),
            };
            // Without its record the token cannot be served as previous-token.
            let reason = reason.or_else(|| (!self.usable(old)).then_some(RevokeReason::Lost));
            if let Some(reason) = reason {
                revocations.push(self.revoke(old, reason));
                continue;
            }
            let record = self.versions.get_mut(&old).expect("live version");
            record.state = VersionState::Retiring;
            record.retire_at = retire_at;
            record.retire_held_by = held;
            previous = Some(old);
            if let Some(retire_at) = retire_at {
                self.wake(retire_at);
            }
            // One consumer using the new token says nothing of those a hold waits for; and
            // its check (listing with the old token) would mark the token idleFor judges used.
            let after_use = o.spec.issuer_ref.is_some()
                && o.spec.rotation.revoke_after_use
                && o.spec.rotation.hold_until.idle_for.is_none();
            if after_use && !rotated && held_by.is_empty() {
                revocations.push(Step::RevokeIfUsed { version: old });
                self.wake(self.now + TimeDelta::seconds(USAGE_POLL_SECONDS));
            }
        }
        (previous, revocations)
    }

    /// Plans the write of `S` unless it already says exactly (current, previous).
    fn write_mounted(
        &mut self,
        current: u32,
        previous: Option<u32>,
        rotated: bool,
        mounted_ok: bool,
    ) {
        let mounted = self.o.mounted.as_ref();
        let previous_sha = previous.and_then(|p| self.versions[&p].token_sha256.as_ref());
        let mounted_matches = mounted_ok
            && mounted.and_then(|m| m.previous_version) == previous
            && mounted.and_then(|m| m.previous_sha256.as_ref()) == previous_sha;
        if mounted_matches {
            return;
        }
        let why = if rotated {
            MountedWrite::Cutover
        } else if mounted_ok && previous.is_none() {
            MountedWrite::PreviousRemoved
        } else {
            MountedWrite::DriftRepaired
        };
        self.steps.push(Step::WriteMounted {
            current,
            previous,
            why,
        });
    }

    /// When the next scheduled rotation is, and whether the token is Ready.
    fn schedule_next(&mut self, schedule: Option<&Schedule>, current: u32, jitter: TimeDelta) {
        let issuer_problem = self.o.issuer_problem.as_ref();
        if let Some(schedule) = schedule {
            match self.due_at(schedule, current, jitter) {
                Ok(next) => {
                    self.next_rotation = Some(next);
                    // An overdue rotation waits for its issuer, whose change wakes this token.
                    if issuer_problem.is_none() || next > self.now {
                        self.wake(next);
                    }
                }
                Err(e) => self.spec_problem(e),
            }
        }
        self.readiness = Some(match (&self.spec_error, issuer_problem) {
            (Some(error), _) => not_ready("InvalidSpec", error),
            (None, Some(problem)) => not_ready(problem.reason, &problem.message),
            (None, None) => Readiness {
                ready: true,
                reason: "Active",
                message: format!("version {current} is active"),
            },
        });
    }

    fn sync_metadata(&mut self) {
        let o = self.o;
        let wrote_mounted = self
            .steps
            .iter()
            .any(|s| matches!(s, Step::WriteMounted { .. }));
        if !wrote_mounted
            && let Some(m) = &o.mounted
            && !metadata_current(&m.metadata, &desired_metadata(o.spec, o.name, None))
        {
            self.steps.push(Step::SyncMetadata {
                secret: SecretRef::Mounted,
            });
        }
        for (n, secret) in &o.versioned {
            let live = self
                .versions
                .get(n)
                .is_some_and(|v| v.state != VersionState::Revoked);
            if live
                && !metadata_current(
                    &secret.metadata,
                    &desired_metadata(o.spec, o.name, Some(*n)),
                )
            {
                self.steps.push(Step::SyncMetadata {
                    secret: SecretRef::Versioned(*n),
                });
            }
        }
    }

    pub(super) fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    pub(super) fn finish(self) -> Plan {
        let requeue_after = self.wake_at.map(|at| {
            (at - self.now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1))
        });
        let mut warnings = warnings(self.o, self.spec_error.as_deref());
        warnings.extend(self.consumer_warnings);
        Plan {
            steps: self.steps,
            versions: self.versions,
            current: self.current,
            next_rotation: self.next_rotation,
            rotate_request: self.rotate_request,
            revoke_request: self.revoke_request,
            readiness: self
                .readiness
                .unwrap_or_else(|| not_ready("Pending", "not reconciled yet")),
            requeue_after,
            spec_error: self.spec_error,
            warnings,
            usage_query: self.usage_query,
            consumers: self.consumers,
            after_cutover: self.after_cutover,
            inventory_query: self.inventory_query,
            unmanaged: self.unmanaged,
        }
    }
}

pub(super) fn not_ready(reason: &'static str, message: &str) -> Readiness {
    Readiness {
        ready: false,
        reason,
        message: message.to_string(),
    }
}
