//! The planner: a pure function from what is observed to the steps that converge it.
//!
//! No client, no clock, no randomness: `now` is an argument, tokens and trace ids are made by
//! the apply side. The cluster is the record: the versioned Secrets say which versions exist,
//! the mounted Secret says which one is current; status only carries times and history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{DeletionPolicy, VersionState, WorkspaceTokenSpec, WorkspaceTokenStatus};
use crate::schedule::{Schedule, jitter_offset, parse_duration};

/// A versioned Secret `S-vN` of ours, as the cache shows it (data hashed, never plaintext).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedSecret {
    pub version: u32,
    /// SHA-256 of the `token` key; None when the key is missing.
    pub token_sha256: Option<String>,
    pub token_prefix: Option<String>,
    pub trace_id: Option<String>,
    /// Hash of the token-shaping spec this version was minted for.
    pub spec_hash: Option<String>,
    pub issuer_token_id: Option<String>,
    /// The HTTP issuer accepted this token in a non-destructive call.
    pub verified: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub metadata: SecretMetadata,
}

/// The `tokenwarden.dev/mint-intent` annotation: an HTTP mint of `version` started at `since`.
/// Left behind by a crash between the platform's answer and the versioned Secret, it tells the
/// next pass to revoke tokens of that window that no Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintIntent {
    pub version: u32,
    pub since: DateTime<Utc>,
}

impl MintIntent {
    /// `v3@2026-11-24T01:02:03Z`
    pub fn parse(value: &str) -> Option<MintIntent> {
        let (version, since) = value.split_once('@')?;
        Some(MintIntent {
            version: version.strip_prefix('v')?.parse().ok()?,
            since: DateTime::parse_from_rfc3339(since).ok()?.to_utc(),
        })
    }

    pub fn render(&self) -> String {
        format!(
            "v{}@{}",
            self.version,
            self.since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The mounted Secret `S`, as the cache shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct MountedSecret {
    /// Parsed from the `token-version` key (`vN`).
    pub version: Option<u32>,
    pub token_sha256: Option<String>,
    pub previous_version: Option<u32>,
    pub previous_sha256: Option<String>,
    pub metadata: SecretMetadata,
}

/// The labels and annotations tokenwarden manages on a Secret it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Everything the planner looks at for one WorkspaceToken.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a WorkspaceTokenSpec,
    pub annotations: &'a BTreeMap<String, String>,
    pub status: Option<&'a WorkspaceTokenStatus>,
    pub deleting: bool,
    pub has_finalizer: bool,
    /// Versioned Secrets owned by this WorkspaceToken, by version.
    pub versioned: BTreeMap<u32, VersionedSecret>,
    /// `S`, when it exists and is ours.
    pub mounted: Option<MountedSecret>,
    /// Names this WorkspaceToken would write that exist but belong to someone else.
    pub foreign: Vec<String>,
    /// An HTTP mint that may have been cut short.
    pub mint_intent: Option<MintIntent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    /// The first version.
    Initial,
    Schedule,
    SpecChanged,
    /// A new value of the `tokenwarden.dev/rotate` annotation.
    Manual,
    /// `tokenwarden.dev/revoke-version` named the current version.
    RevokeRequested,
    /// The current version's Secrets are both gone.
    TokenLost,
}

impl RotationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationReason::Initial => "Initial",
            RotationReason::Schedule => "Schedule",
            RotationReason::SpecChanged => "SpecChanged",
            RotationReason::Manual => "Manual",
            RotationReason::RevokeRequested => "RevokeRequested",
            RotationReason::TokenLost => "TokenLost",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The grace period after cutover ended (or was 0).
    GraceEnded,
    /// More than one old version was live: only the newest may be Retiring.
    Superseded,
    /// A version that may not become current: a Pending one that lost to a newer one (or has
    /// no token), or a Secret left over from a version already revoked.
    Orphaned,
    /// `tokenwarden.dev/revoke-version`.
    Requested,
    /// The WorkspaceToken is being deleted with `deletionPolicy: Revoke`.
    Deleted,
    /// Its record `S-vN` is gone (deleted by hand, or a crash after revoking): the token can
    /// no longer be served as previous-token, and must not stay valid unseen.
    Lost,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::GraceEnded => "GraceEnded",
            RevokeReason::Superseded => "Superseded",
            RevokeReason::Orphaned => "Orphaned",
            RevokeReason::Requested => "Requested",
            RevokeReason::Deleted => "Deleted",
            RevokeReason::Lost => "Lost",
        }
    }
}

/// Why `S` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountedWrite {
    /// A new version becomes current.
    Cutover,
    /// `S` was deleted or edited: restored from `S-vN`, no new token.
    DriftRepaired,
    /// The previous token's grace ended: `previous-token` goes.
    PreviousRemoved,
}

/// Which Secret a metadata sync is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Mounted,
    Versioned(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    AddFinalizer,
    /// Mint a new token and create `S-vN` with it (the record; never overwritten).
    Mint {
        version: u32,
        reason: RotationReason,
    },
    /// `S-vN` was deleted while `S` still holds version N: recreate it from `S`.
    RestoreVersioned {
        version: u32,
    },
    /// Write `S` with version `current` and, during grace, `previous`.
    WriteMounted {
        current: u32,
        previous: Option<u32>,
        why: MountedWrite,
    },
    /// Annotate every restart target's pod template.
    RestartTargets {
        version: u32,
    },
    /// Revoke at the issuer, then delete `S-vN`.
    Revoke {
        version: u32,
        reason: RevokeReason,
    },
    /// HTTP issuer: prove the new token works (non-destructive call) before its cutover.
    Verify {
        version: u32,
    },
    /// HTTP issuer: revoke tokens created since `since` that no Secret holds (a mint cut short
    /// by a crash), then clear the mint intent.
    ReclaimOrphans {
        since: DateTime<Utc>,
    },
    /// HTTP issuer with `revokeAfterUse`: revoke this Retiring version now if the platform
    /// shows the current token used by a consumer after the cutover.
    RevokeIfUsed {
        version: u32,
    },
    /// Labels and annotations of a Secret we own differ from the desired ones.
    SyncMetadata {
        secret: SecretRef,
    },
    /// `deletionPolicy: Retain`: drop the ownerReferences so the Secrets outlive us.
    ReleaseSecrets,
    /// Deletion with `Revoke`: delete `S` (versioned ones go with their revocation).
    DeleteMounted,
    RemoveFinalizer,
}

/// One version as status shows it, before and after the planned steps.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRecord {
    pub state: VersionState,
    pub token_prefix: Option<String>,
    pub token_sha256: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retire_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
    pub issuer_token_id: Option<String>,
}

/// Why the WorkspaceToken is or is not Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Versions as they will be once every step succeeded, by version number.
    pub versions: BTreeMap<u32, VersionRecord>,
    pub current: Option<u32>,
    pub next_rotation: Option<DateTime<Utc>>,
    /// Set when a rotation was triggered by a new rotate-annotation value.
    pub rotate_request: Option<String>,
    /// Set when a new revoke-version annotation value was handled in this pass.
    pub revoke_request: Option<String>,
    pub readiness: Readiness,
    /// When to look again even if nothing changes (rotation or retirement due).
    pub requeue_after: Option<Duration>,
    /// A spec problem the schema cannot catch (cron, time zone): Ready=False + Warning event.
    pub spec_error: Option<String>,
}

/// Hash of the token-shaping spec (`token`, `issuer`, `userId`, `environment`): a change
/// rotates when `rotateOnChange` is true.
///
/// Every record carries this hash, so the same spec must hash the same in every release or an
/// upgrade rotates every token: keys are sorted and absent fields left out, whatever
/// serde_json's map order (the `preserve_order` feature) or a new optional field would do.
pub fn spec_hash(spec: &WorkspaceTokenSpec) -> String {
    // The issuer's address shapes the token; its timeout and revokeAfterUse don't.
    let shaping = serde_json::json!({
        "token": spec.token,
        "issuer": spec.issuer.as_ref().map(|i| &i.http.url),
        "userId": spec.user_id,
        "environment": spec.environment,
    });
    let mut canonical = String::new();
    write_canonical(&shaping, &mut canonical);
    crate::token::sha256_hex(canonical.as_bytes())[..16].to_string()
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().filter(|(_, v)| !v.is_null()).collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// How often a Retiring version under `revokeAfterUse` checks the platform for use.
pub const USAGE_POLL_SECONDS: i64 = 15;

pub fn plan(o: &Observed<'_>, now: DateTime<Utc>) -> Plan {
    let mut p = Planner::new(o, now);
    if o.deleting {
        p.plan_deletion();
    } else {
        p.plan_lifecycle();
    }
    p.finish()
}

struct Planner<'o, 'a> {
    o: &'o Observed<'a>,
    now: DateTime<Utc>,
    steps: Vec<Step>,
    versions: BTreeMap<u32, VersionRecord>,
    current: Option<u32>,
    /// A version whose record `RestoreVersioned` recreates in this pass.
    restored: Option<u32>,
    next_rotation: Option<DateTime<Utc>>,
    rotate_request: Option<String>,
    revoke_request: Option<String>,
    readiness: Option<Readiness>,
    spec_error: Option<String>,
    wake_at: Option<DateTime<Utc>>,
}

impl<'o, 'a> Planner<'o, 'a> {
    fn new(o: &'o Observed<'a>, now: DateTime<Utc>) -> Self {
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
                    issuer_token_id: secret
                        .issuer_token_id
                        .clone()
                        .or_else(|| kept.and_then(|k| k.issuer_token_id.clone())),
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
        }
    }

    fn live(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.versions
            .iter()
            .filter(|(_, v)| v.state != VersionState::Revoked)
            .map(|(n, _)| *n)
    }

    fn plan_deletion(&mut self) {
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

    fn plan_lifecycle(&mut self) {
        let o = self.o;
        if !o.foreign.is_empty() {
            let names = o.foreign.join(", ");
            self.current = self.recorded_current();
            self.mark_states();
            self.readiness = Some(not_ready(
                "SecretConflict",
                &format!(
                    "Secret {names} exists and is not owned by this WorkspaceToken; it is left untouched"
                ),
            ));
            return;
        }
        if o.spec.suspend {
            self.current = self.recorded_current();
            self.mark_states();
            self.readiness = Some(Readiness {
                ready: false,
                reason: "Suspended",
                message: "spec.suspend is true: no writes and no rotation".into(),
            });
            return;
        }
        if !o.has_finalizer {
            self.steps.push(Step::AddFinalizer);
        }

        let schedule = self.schedule();
        let grace = self.grace();
        let jitter = self.jitter();
        let status_current = o.status.and_then(|s| s.current_version);
        // Secrets of versions status already records as revoked: they only need deleting.
        let leftovers: Vec<u32> = o
            .versioned
            .keys()
            .rev()
            .copied()
            .filter(|n| self.revoked(*n))
            .collect();

        // 1. Which version is current, and does S need repair? Without a status that recorded
        //    a current version, a record S does not serve never went live: it is pending, and
        //    adopted below like one a crashed pass minted (not rotated over in the same pass).
        let held = o.mounted.as_ref().and_then(|m| m.version);
        let observed = self
            .observed_current()
            .filter(|(n, intact)| *intact || status_current.is_some() || held == Some(*n));
        let mut mounted_ok = matches!(observed, Some((_, true)));
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

        // 2. A minted version newer than anything that was current is pending: the newest one
        //    with a token is adopted, never minted again (the others are orphans, below).
        let floor = self.current.max(status_current);
        let pending = self
            .live()
            .filter(|n| Some(*n) > floor && self.usable(*n))
            .max();
        let mut rotated = false;
        if let Some(adopt) = pending {
            self.activate(adopt);
            rotated = true;
        } else {
            // 3. Rotate when due.
            let reason = match self.current {
                None if self.has_history() => Some(RotationReason::TokenLost),
                None => Some(RotationReason::Initial),
                Some(current) => self.rotation_due(current, schedule.as_ref(), jitter),
            };
            if let Some(reason) = reason {
                let version = self.next_version();
                self.steps.push(Step::Mint { version, reason });
                self.versions.insert(version, new_record(self.now));
                self.activate(version);
                rotated = true;
            }
        }
        if rotated {
            mounted_ok = false;
        }
        let current = self
            .current
            .expect("a current version after planning a mint");
        if o.spec.issuer.is_some() {
            // An HTTP token is activated only once the platform accepted it; a failed
            // verification stops the pass here, so nothing older is revoked either.
            let verified = o.versioned.get(&current).is_some_and(|v| v.verified);
            if rotated && !verified {
                self.steps.push(Step::Verify { version: current });
            }
        }
        if let Some(intent) = o.mint_intent.as_ref().filter(|_| o.spec.issuer.is_some()) {
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
        let requested = o.annotations.get(crate::api::ROTATE_ANNOTATION);
        if requested.is_some() && requested != o.status.and_then(|s| s.last_rotate_request.as_ref())
        {
            // Answered by this pass's rotation, by a cutover status has not recorded yet, or,
            // on a new object, by its first version (see `rotation_due`).
            self.rotate_request = requested.cloned();
        }

        // A new revoke-version value is answered by this pass (or names no live version).
        let revoke_value = o.annotations.get(crate::api::REVOKE_VERSION_ANNOTATION);
        if revoke_value.is_some()
            && revoke_value != o.status.and_then(|s| s.last_revoke_request.as_ref())
        {
            self.revoke_request = revoke_value.cloned();
        }

        // 4. The other live versions: at most one Retiring, revoked when its grace ends.
        let activated = self.versions[&current].activated_at.unwrap_or(self.now);
        let retire_at = grace.and_then(|g| activated.checked_add_signed(g));
        if grace.is_some() && retire_at.is_none() {
            self.spec_problem(format!(
                "spec.rotation.gracePeriod {:?} ends beyond the supported time range",
                o.spec.rotation.grace_period
            ));
        }
        let revoke_requested = self.revoke_requested();
        let others: Vec<u32> = self.live().filter(|n| *n != current).collect();
        let newest_old = others.iter().copied().filter(|n| *n < current).max();
        let mut previous = None;
        let mut revocations = Vec::new();
        for &old in others.iter().rev() {
            let reason = if old > current || floor.is_some_and(|f| old > f) {
                // Minted but never current: a newer version won, or its record is gone.
                Some(RevokeReason::Orphaned)
            } else if Some(old) != newest_old {
                Some(RevokeReason::Superseded)
            } else if revoke_requested == Some(old) {
                Some(RevokeReason::Requested)
            } else if retire_at.is_some_and(|r| self.now >= r) {
                Some(RevokeReason::GraceEnded)
            } else if !self.usable(old) {
                // Without its record the token cannot be served as previous-token.
                Some(RevokeReason::Lost)
            } else {
                None
            };
            match reason {
                Some(reason) => revocations.push(self.revoke(old, reason)),
                None => {
                    let record = self.versions.get_mut(&old).expect("live version");
                    record.state = VersionState::Retiring;
                    record.retire_at = retire_at;
                    previous = Some(old);
                    if let Some(retire_at) = retire_at {
                        self.wake(retire_at);
                    }
                    let after_use = o
                        .spec
                        .issuer
                        .as_ref()
                        .is_some_and(|i| i.http.revoke_after_use);
                    if after_use && !rotated {
                        revocations.push(Step::RevokeIfUsed { version: old });
                        self.wake(self.now + TimeDelta::seconds(USAGE_POLL_SECONDS));
                    }
                }
            }
        }
        for leftover in leftovers {
            revocations.push(self.revoke(leftover, RevokeReason::Orphaned));
        }

        // 5. S says exactly (current, previous).
        let mounted = o.mounted.as_ref();
        let previous_sha = previous.and_then(|p| self.versions[&p].token_sha256.as_ref());
        let mounted_matches = mounted_ok
            && mounted.and_then(|m| m.previous_version) == previous
            && mounted.and_then(|m| m.previous_sha256.as_ref()) == previous_sha;
        if !mounted_matches {
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

        // 6. Restart targets once per cutover: whenever current is not what status recorded,
        //    which is a cutover in this pass or one whose status write was lost (also on a
        //    first pass that died after its cutover, when there is no status at all). Right
        //    after the cutover, so a failing later step doesn't withhold or repeat it.
        if !o.spec.restart_targets.is_empty() && status_current != Some(current) {
            self.steps.push(Step::RestartTargets { version: current });
        }

        // 7. Revocations come after S moved on: the token pods read is never revoked under
        //    them, and a failed cutover (apply stops at the first failure) revokes nothing.
        self.steps.extend(revocations);

        // 8. Metadata of the Secrets that stay.
        self.sync_metadata();

        // 9. The next rotation.
        if let Some(schedule) = &schedule {
            match self.due_at(schedule, current, jitter) {
                Ok(next) => {
                    self.next_rotation = Some(next);
                    self.wake(next);
                }
                Err(e) => self.spec_problem(e),
            }
        }
        self.readiness = Some(match &self.spec_error {
            Some(error) => not_ready("InvalidSpec", error),
            None => Readiness {
                ready: true,
                reason: "Active",
                message: format!("version {current} is active"),
            },
        });
    }

    /// The current version for a pass that changes nothing about it (deletion, conflict,
    /// suspend): what is observed, else what status recorded (a lost current version stays
    /// current until a pass that may act on it), and only a version status can show.
    fn recorded_current(&self) -> Option<u32> {
        self.observed_current()
            .map(|(n, _)| n)
            .or(self.o.status.and_then(|s| s.current_version))
            .filter(|n| self.versions.contains_key(n) && !self.revoked(*n))
    }

    /// The version `S` holds (and whether `S` is intact), or the record status points at when
    /// `S` is gone, edited or behind.
    fn observed_current(&self) -> Option<(u32, bool)> {
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
                None if o.status.is_none() => Some(sha),
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

    fn revoked(&self, n: u32) -> bool {
        self.versions
            .get(&n)
            .is_some_and(|v| v.state == VersionState::Revoked)
    }

    /// Whether `S-vN` holds a token that may be served: the record exists (or is restored in
    /// this pass) and the version is not revoked.
    fn usable(&self, n: u32) -> bool {
        let recorded = self
            .o
            .versioned
            .get(&n)
            .is_some_and(|v| v.token_sha256.is_some());
        (recorded || self.restored == Some(n)) && !self.revoked(n)
    }

    fn has_history(&self) -> bool {
        !self.versions.is_empty() || self.o.status.and_then(|s| s.current_version).is_some()
    }

    /// The first spec problem found wins: one clear message in the Ready condition.
    fn spec_problem(&mut self, message: impl Into<String>) {
        if self.spec_error.is_none() {
            self.spec_error = Some(message.into());
        }
    }

    fn schedule(&mut self) -> Option<Schedule> {
        let r = &self.o.spec.rotation;
        match Schedule::parse(
            r.every.as_deref(),
            r.schedule.as_deref(),
            r.time_zone.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.spec_problem(e.to_string());
                None
            }
        }
    }

    /// The grace period, or None when it cannot be used (a spec error): then no grace period
    /// ever ends, which keeps tokens valid rather than revoking them early.
    fn grace(&mut self) -> Option<TimeDelta> {
        let value = &self.o.spec.rotation.grace_period;
        let grace = parse_duration(value)
            .ok()
            .and_then(|d| TimeDelta::from_std(d).ok());
        if grace.is_none() {
            self.spec_problem(format!(
                "spec.rotation.gracePeriod {value:?} is not a usable duration"
            ));
        }
        grace
    }

    /// The object's jitter offset, in whole seconds: the precision status keeps, so the
    /// nextRotationTime status shows is the instant the rotation happens.
    fn jitter(&mut self) -> TimeDelta {
        let Some(value) = self.o.spec.rotation.jitter.as_deref() else {
            return TimeDelta::zero();
        };
        let offset = parse_duration(value)
            .ok()
            .map(|jitter| jitter_offset(self.o.uid, jitter).as_secs())
            .and_then(|secs| i64::try_from(secs).ok())
            .and_then(TimeDelta::try_seconds);
        offset.unwrap_or_else(|| {
            self.spec_problem(format!(
                "spec.rotation.jitter {value:?} is not a usable duration"
            ));
            TimeDelta::zero()
        })
    }

    /// When `current` is due for its scheduled rotation.
    fn due_at(
        &self,
        schedule: &Schedule,
        current: u32,
        jitter: TimeDelta,
    ) -> Result<DateTime<Utc>, String> {
        let last = self.versions[&current].activated_at.unwrap_or(self.now);
        let next = schedule.next_after(last).map_err(|e| e.to_string())?;
        next.checked_add_signed(jitter).ok_or_else(|| {
            "spec.rotation.jitter pushes the next rotation beyond the supported time range"
                .to_string()
        })
    }

    fn rotation_due(
        &self,
        current: u32,
        schedule: Option<&Schedule>,
        jitter: TimeDelta,
    ) -> Option<RotationReason> {
        let o = self.o;
        if self.revoke_requested() == Some(current) {
            return Some(RotationReason::RevokeRequested);
        }
        let requested = o.annotations.get(crate::api::ROTATE_ANNOTATION);
        if requested.is_some() && requested != o.status.and_then(|s| s.last_rotate_request.as_ref())
        {
            // A value first seen on a brand-new object is not a request to rotate again, nor is
            // one a cutover already answered whose status write was lost (current is newer than
            // what status recorded).
            let recorded = o.status.and_then(|s| s.current_version);
            if recorded.is_some_and(|r| r >= current) {
                return Some(RotationReason::Manual);
            }
        }
        if o.spec.rotation.rotate_on_change {
            let minted_for = o
                .versioned
                .get(&current)
                .and_then(|v| v.spec_hash.as_deref());
            if minted_for.is_some_and(|h| h != spec_hash(o.spec)) {
                return Some(RotationReason::SpecChanged);
            }
        }
        let due = self.due_at(schedule?, current, jitter).ok()?;
        (self.now >= due).then_some(RotationReason::Schedule)
    }

    /// The version a new (not yet handled) revoke-version annotation value names.
    fn revoke_requested(&self) -> Option<u32> {
        let value = self
            .o
            .annotations
            .get(crate::api::REVOKE_VERSION_ANNOTATION)?;
        if Some(value) == self.o.status.and_then(|s| s.last_revoke_request.as_ref()) {
            return None;
        }
        value.trim().trim_start_matches('v').parse().ok()
    }

    fn next_version(&self) -> u32 {
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
            .max()
            .unwrap_or(0)
            + 1
    }

    fn activate(&mut self, version: u32) {
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
    fn revoke(&mut self, version: u32, reason: RevokeReason) -> Step {
        let now = self.now;
        if let Some(record) = self.versions.get_mut(&version) {
            record.state = VersionState::Revoked;
            record.retire_at = None;
            record.revoked_at = record.revoked_at.or(Some(now));
        }
        Step::Revoke { version, reason }
    }

    /// States for a pass that changes nothing (conflict, suspend).
    fn mark_states(&mut self) {
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

    fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn finish(self) -> Plan {
        let requeue_after = self.wake_at.map(|at| {
            (at - self.now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1))
        });
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
        }
    }
}

/// The record of a version minted in this pass.
fn new_record(now: DateTime<Utc>) -> VersionRecord {
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
    }
}

fn not_ready(reason: &'static str, message: &str) -> Readiness {
    Readiness {
        ready: false,
        reason,
        message: message.to_string(),
    }
}

fn record_from_status(v: &crate::api::VersionStatus) -> VersionRecord {
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
    }
}

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const TOKEN_LABEL: &str = "tokenwarden.dev/token";
pub const VERSION_LABEL: &str = "tokenwarden.dev/version";
pub const ENVIRONMENT_LABEL: &str = "tokenwarden.dev/environment";
pub const TOKEN_SHA256_ANNOTATION: &str = "tokenwarden.dev/token-sha256";
pub const TRACE_ID_ANNOTATION: &str = "tokenwarden.dev/trace-id";
pub const SPEC_HASH_ANNOTATION: &str = "tokenwarden.dev/spec-hash";
pub const ISSUER_TOKEN_ID_ANNOTATION: &str = "tokenwarden.dev/issuer-token-id";
/// Which `secretTemplate` keys tokenwarden put on a Secret, so removed ones can be removed.
pub const TEMPLATE_KEYS_ANNOTATION: &str = "tokenwarden.dev/template-keys";

/// The labels and annotations tokenwarden decides (per-token ones like the hash and trace id
/// are set by the apply side and not compared here).
pub fn desired_metadata(
    spec: &WorkspaceTokenSpec,
    name: &str,
    version: Option<u32>,
) -> SecretMetadata {
    let mut labels = spec.secret_template.labels.clone();
    labels.insert(MANAGED_BY.into(), "tokenwarden".into());
    labels.insert(TOKEN_LABEL.into(), name.into());
    if let Some(n) = version {
        labels.insert(VERSION_LABEL.into(), n.to_string());
    }
    if let Some(env) = &spec.environment {
        labels.insert(ENVIRONMENT_LABEL.into(), env.clone());
    }
    let mut annotations = spec.secret_template.annotations.clone();
    let keys: Vec<String> = spec
        .secret_template
        .labels
        .keys()
        .map(|k| format!("l:{k}"))
        .chain(
            spec.secret_template
                .annotations
                .keys()
                .map(|k| format!("a:{k}")),
        )
        .collect();
    annotations.insert(TEMPLATE_KEYS_ANNOTATION.into(), keys.join(","));
    SecretMetadata {
        labels,
        annotations,
    }
}

/// Every desired key has its value, and no key from an earlier template lingers.
pub fn metadata_current(actual: &SecretMetadata, desired: &SecretMetadata) -> bool {
    let has_all = |a: &BTreeMap<String, String>, d: &BTreeMap<String, String>| {
        d.iter().all(|(k, v)| a.get(k) == Some(v))
    };
    if !has_all(&actual.labels, &desired.labels)
        || !has_all(&actual.annotations, &desired.annotations)
    {
        return false;
    }
    // The environment label goes when spec.environment is unset.
    if !desired.labels.contains_key(ENVIRONMENT_LABEL)
        && actual.labels.contains_key(ENVIRONMENT_LABEL)
    {
        return false;
    }
    true
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
