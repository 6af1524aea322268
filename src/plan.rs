//! The planner: a pure function from what is observed to the steps that converge it.
//!
//! No client, no clock, no randomness: `now` is an argument, tokens and trace ids are made by
//! the apply side. The cluster is the record: the versioned Secrets say which versions exist,
//! the mounted Secret says which one is current; status only carries times and history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    pub created_at: Option<DateTime<Utc>>,
    pub metadata: SecretMetadata,
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
    /// A Pending version that lost to a newer one.
    Orphaned,
    /// `tokenwarden.dev/revoke-version`.
    Requested,
    /// The WorkspaceToken is being deleted with `deletionPolicy: Revoke`.
    Deleted,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::GraceEnded => "GraceEnded",
            RevokeReason::Superseded => "Superseded",
            RevokeReason::Orphaned => "Orphaned",
            RevokeReason::Requested => "Requested",
            RevokeReason::Deleted => "Deleted",
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
    RestoreVersioned { version: u32 },
    /// Write `S` with version `current` and, during grace, `previous`.
    WriteMounted {
        current: u32,
        previous: Option<u32>,
        why: MountedWrite,
    },
    /// Annotate every restart target's pod template.
    RestartTargets { version: u32 },
    /// Revoke at the issuer, then delete `S-vN`.
    Revoke { version: u32, reason: RevokeReason },
    /// Labels and annotations of a Secret we own differ from the desired ones.
    SyncMetadata { secret: SecretRef },
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
    pub readiness: Readiness,
    /// When to look again even if nothing changes (rotation or retirement due).
    pub requeue_after: Option<Duration>,
    /// A spec problem the schema cannot catch (cron, time zone): Ready=False + Warning event.
    pub spec_error: Option<String>,
}

/// Hash of the token-shaping spec (`token`, `issuer`, `userId`, `environment`): a change
/// rotates when `rotateOnChange` is true.
pub fn spec_hash(spec: &WorkspaceTokenSpec) -> String {
    let shaping = serde_json::json!({
        "token": spec.token,
        "issuer": spec.issuer,
        "userId": spec.user_id,
        "environment": spec.environment,
    });
    crate::token::sha256_hex(shaping.to_string().as_bytes())[..16].to_string()
}

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
    next_rotation: Option<DateTime<Utc>>,
    rotate_request: Option<String>,
    readiness: Option<Readiness>,
    spec_error: Option<String>,
    wake_at: Option<DateTime<Utc>>,
}

impl<'o, 'a> Planner<'o, 'a> {
    fn new(o: &'o Observed<'a>, now: DateTime<Utc>) -> Self {
        // Start from history (revoked versions) and the records status kept, then let the
        // Secrets decide which versions are live.
        let mut versions = BTreeMap::new();
        for v in o.status.map(|s| s.versions.as_slice()).unwrap_or_default() {
            if v.state == VersionState::Revoked {
                versions.insert(v.version, record_from_status(v));
            }
        }
        for (n, secret) in &o.versioned {
            let kept = o
                .status
                .and_then(|s| s.versions.iter().find(|v| v.version == *n));
            versions.insert(
                *n,
                VersionRecord {
                    state: VersionState::Pending,
                    token_prefix: secret.token_prefix.clone(),
                    token_sha256: secret.token_sha256.clone(),
                    created_at: secret.created_at,
                    // Status may be lost (restored from a backup without it): the record's
                    // creation is the best lower bound for when it became current.
                    activated_at: kept
                        .and_then(|v| v.activated_at.as_ref())
                        .map(crate::time::from_time)
                        .or(secret.created_at),
                    retire_at: None,
                    revoked_at: None,
                    trace_id: secret.trace_id.clone(),
                    issuer_token_id: secret.issuer_token_id.clone(),
                },
            );
        }
        Planner {
            o,
            now,
            steps: Vec::new(),
            versions,
            current: None,
            next_rotation: None,
            rotate_request: None,
            readiness: None,
            spec_error: None,
            wake_at: None,
        }
    }

    fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions
            .iter()
            .filter(|(_, v)| v.state != VersionState::Revoked)
            .map(|(n, _)| *n)
    }

    fn plan_deletion(&mut self) {
        if !self.o.has_finalizer {
            return;
        }
        self.current = self.observed_current().map(|(n, _)| n);
        match self.o.spec.deletion_policy {
            DeletionPolicy::Retain => self.steps.push(Step::ReleaseSecrets),
            DeletionPolicy::Revoke => {
                if self.o.mounted.is_some() {
                    self.steps.push(Step::DeleteMounted);
                }
                let live: Vec<u32> = self.live().collect();
                for version in live.into_iter().rev() {
                    self.revoke(version, RevokeReason::Deleted);
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
            self.current = self.observed_current().map(|(n, _)| n);
            self.mark_states();
            self.readiness = Some(not_ready(
                "SecretConflict",
                &format!("Secret {names} exists and is not owned by this WorkspaceToken; it is left untouched"),
            ));
            return;
        }
        if o.spec.suspend {
            self.current = self.observed_current().map(|(n, _)| n);
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
        let grace = parse_duration(&o.spec.rotation.grace_period).unwrap_or(Duration::ZERO);
        let status_current = o.status.and_then(|s| s.current_version);

        // 1. Which version is current, and does S need repair?
        let observed = self.observed_current();
        let mut mounted_ok = observed.map(|(_, ok)| ok).unwrap_or(false);
        if let Some((n, _)) = observed {
            if !o.versioned.contains_key(&n) {
                // S holds a version whose record was deleted: rebuild the record from S.
                self.steps.push(Step::RestoreVersioned { version: n });
                let mounted = o.mounted.as_ref().expect("current from S");
                self.versions.insert(
                    n,
                    VersionRecord {
                        state: VersionState::Active,
                        token_prefix: None,
                        token_sha256: mounted.token_sha256.clone(),
                        created_at: Some(self.now),
                        activated_at: None,
                        retire_at: None,
                        revoked_at: None,
                        trace_id: None,
                        issuer_token_id: None,
                    },
                );
            }
        }
        self.current = observed.map(|(n, _)| n);
        if let Some(record) = self.current.and_then(|n| self.versions.get_mut(&n)) {
            record.state = VersionState::Active;
        }

        // 2. A Pending version (minted, not yet current) is adopted: never mint twice.
        let pending: Vec<u32> = self
            .live()
            .filter(|n| Some(*n) > self.current)
            .collect();
        let mut cutover_reason = None;
        if let Some(&adopt) = pending.last() {
            for &orphan in &pending[..pending.len() - 1] {
                self.revoke(orphan, RevokeReason::Orphaned);
            }
            cutover_reason = Some(if self.current.is_none() && status_current.is_none() {
                RotationReason::Initial
            } else {
                RotationReason::Schedule
            });
            self.activate(adopt);
            mounted_ok = false;
        } else {
            // 3. Rotate when due.
            let reason = match self.current {
                None if self.has_history() => Some(RotationReason::TokenLost),
                None => Some(RotationReason::Initial),
                Some(current) => self.rotation_due(current, schedule.as_ref()),
            };
            if let Some(reason) = reason {
                let version = self.next_version();
                self.steps.push(Step::Mint { version, reason });
                self.versions.insert(
                    version,
                    VersionRecord {
                        state: VersionState::Pending,
                        token_prefix: None,
                        token_sha256: None,
                        created_at: Some(self.now),
                        activated_at: None,
                        retire_at: None,
                        revoked_at: None,
                        trace_id: None,
                        issuer_token_id: None,
                    },
                );
                self.activate(version);
                mounted_ok = false;
                cutover_reason = Some(reason);
            }
        }
        let current = self.current.expect("a current version after planning a mint");
        if o.annotations.get(crate::api::ROTATE_ANNOTATION) != o.status.and_then(|s| s.last_rotate_request.as_ref())
        {
            self.rotate_request = o.annotations.get(crate::api::ROTATE_ANNOTATION).cloned();
        }

        // 4. Old versions: at most one Retiring, revoked when its grace ends.
        let activated = self.versions[&current].activated_at.unwrap_or(self.now);
        let retire_at = activated + chrono::Duration::from_std(grace).unwrap_or_default();
        let older: Vec<u32> = self.live().filter(|n| *n < current).collect();
        let revoke_requested = self.revoke_requested();
        let mut previous = None;
        for (i, &old) in older.iter().enumerate().rev() {
            let newest_old = i == older.len() - 1;
            if !newest_old {
                self.revoke(old, RevokeReason::Superseded);
            } else if revoke_requested == Some(old) {
                self.revoke(old, RevokeReason::Requested);
            } else if self.now >= retire_at {
                self.revoke(old, RevokeReason::GraceEnded);
            } else {
                let record = self.versions.get_mut(&old).expect("live version");
                record.state = VersionState::Retiring;
                record.retire_at = Some(retire_at);
                previous = Some(old);
                self.wake(retire_at);
            }
        }

        // 5. S says exactly (current, previous).
        let mounted = o.mounted.as_ref();
        let mounted_matches = mounted_ok
            && mounted.and_then(|m| m.previous_version) == previous
            && previous.is_none_or(|p| {
                mounted.and_then(|m| m.previous_sha256.as_ref())
                    == self.versions[&p].token_sha256.as_ref()
            });
        if !mounted_matches {
            let why = if cutover_reason.is_some() {
                MountedWrite::Cutover
            } else if mounted_ok {
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

        // 6. Restart targets once per cutover; also after a crash that left status behind.
        if !o.spec.restart_targets.is_empty()
            && (cutover_reason.is_some() || (status_current.is_some() && status_current != Some(current)))
        {
            self.steps.push(Step::RestartTargets { version: current });
        }

        // 7. Metadata of the Secrets that stay.
        self.sync_metadata(current);

        // 8. The next rotation.
        if let Some(schedule) = &schedule {
            let last = self.versions[&current].activated_at.unwrap_or(self.now);
            match schedule.next_after(last) {
                Ok(next) => {
                    let next = next + chrono::Duration::from_std(self.jitter()).unwrap_or_default();
                    self.next_rotation = Some(next);
                    self.wake(next);
                }
                Err(e) => self.spec_error = Some(e.to_string()),
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

    /// The version `S` holds (and whether `S` is intact), or the best record when `S` is gone.
    fn observed_current(&self) -> Option<(u32, bool)> {
        let o = self.o;
        if let Some(m) = &o.mounted {
            if let Some(n) = m.version {
                match o.versioned.get(&n) {
                    Some(v) if v.token_sha256.is_some() && v.token_sha256 == m.token_sha256 => {
                        return Some((n, true));
                    }
                    None if m.token_sha256.is_some() && !self.revoked(n) => return Some((n, true)),
                    _ => {}
                }
            }
        }
        // S is missing or edited: the record status points at, else the newest record.
        let status_current = o.status.and_then(|s| s.current_version);
        let usable = |n: &u32| o.versioned.get(n).is_some_and(|v| v.token_sha256.is_some());
        status_current
            .filter(usable)
            .or_else(|| {
                o.versioned
                    .keys()
                    .copied()
                    .filter(usable)
                    .filter(|n| status_current.is_none_or(|c| *n <= c))
                    .max()
            })
            .map(|n| (n, false))
    }

    fn revoked(&self, n: u32) -> bool {
        self.versions
            .get(&n)
            .is_some_and(|v| v.state == VersionState::Revoked)
    }

    fn has_history(&self) -> bool {
        !self.versions.is_empty() || self.o.status.and_then(|s| s.current_version).is_some()
    }

    fn schedule(&mut self) -> Option<Schedule> {
        let r = &self.o.spec.rotation;
        match Schedule::parse(r.every.as_deref(), r.schedule.as_deref(), r.time_zone.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                self.spec_error = Some(e.to_string());
                None
            }
        }
    }

    fn jitter(&self) -> Duration {
        let jitter = self
            .o
            .spec
            .rotation
            .jitter
            .as_deref()
            .and_then(|j| parse_duration(j).ok())
            .unwrap_or(Duration::ZERO);
        jitter_offset(self.o.uid, jitter)
    }

    fn rotation_due(&self, current: u32, schedule: Option<&Schedule>) -> Option<RotationReason> {
        let o = self.o;
        if self.revoke_requested() == Some(current) {
            return Some(RotationReason::RevokeRequested);
        }
        let requested = o.annotations.get(crate::api::ROTATE_ANNOTATION);
        if requested.is_some() && requested != o.status.and_then(|s| s.last_rotate_request.as_ref()) {
            // The first value seen on a brand-new object is not a request to rotate again.
            if o.status.and_then(|s| s.current_version).is_some() {
                return Some(RotationReason::Manual);
            }
        }
        if o.spec.rotation.rotate_on_change {
            let minted_for = o.versioned.get(&current).and_then(|v| v.spec_hash.as_deref());
            if minted_for.is_some_and(|h| h != spec_hash(o.spec)) {
                return Some(RotationReason::SpecChanged);
            }
        }
        let schedule = schedule?;
        let last = self.versions[&current].activated_at.unwrap_or(self.now);
        let due = schedule.next_after(last).ok()? + chrono::Duration::from_std(self.jitter()).unwrap_or_default();
        (self.now >= due).then_some(RotationReason::Schedule)
    }

    fn revoke_requested(&self) -> Option<u32> {
        self.o
            .annotations
            .get(crate::api::REVOKE_VERSION_ANNOTATION)
            .and_then(|v| v.trim().trim_start_matches('v').parse().ok())
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
        if let Some(old) = self.current {
            if let Some(record) = self.versions.get_mut(&old) {
                record.state = VersionState::Retiring;
            }
        }
        let now = self.now;
        let record = self.versions.get_mut(&version).expect("activated version exists");
        record.state = VersionState::Active;
        record.activated_at = Some(now);
        self.current = Some(version);
    }

    fn revoke(&mut self, version: u32, reason: RevokeReason) {
        self.steps.push(Step::Revoke { version, reason });
        if let Some(record) = self.versions.get_mut(&version) {
            record.state = VersionState::Revoked;
            record.retire_at = None;
            record.revoked_at = Some(self.now);
        }
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

    fn sync_metadata(&mut self, current: u32) {
        let o = self.o;
        let wrote_mounted = self
            .steps
            .iter()
            .any(|s| matches!(s, Step::WriteMounted { .. }));
        if !wrote_mounted {
            if let Some(m) = &o.mounted {
                if !metadata_current(&m.metadata, &desired_metadata(o.spec, o.name, None)) {
                    self.steps.push(Step::SyncMetadata {
                        secret: SecretRef::Mounted,
                    });
                }
            }
        }
        for (n, secret) in &o.versioned {
            let live = self.versions.get(n).is_some_and(|v| v.state != VersionState::Revoked);
            if live && !metadata_current(&secret.metadata, &desired_metadata(o.spec, o.name, Some(*n))) {
                self.steps.push(Step::SyncMetadata {
                    secret: SecretRef::Versioned(*n),
                });
            }
        }
        let _ = current;
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
            readiness: self
                .readiness
                .unwrap_or_else(|| not_ready("Pending", "not reconciled yet")),
            requeue_after,
            spec_error: self.spec_error,
        }
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
pub fn desired_metadata(spec: &WorkspaceTokenSpec, name: &str, version: Option<u32>) -> SecretMetadata {
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
        .chain(spec.secret_template.annotations.keys().map(|k| format!("a:{k}")))
        .collect();
    annotations.insert(TEMPLATE_KEYS_ANNOTATION.into(), keys.join(","));
    SecretMetadata { labels, annotations }
}

/// Every desired key has its value, and no key from an earlier template lingers.
pub fn metadata_current(actual: &SecretMetadata, desired: &SecretMetadata) -> bool {
    let has_all = |a: &BTreeMap<String, String>, d: &BTreeMap<String, String>| {
        d.iter().all(|(k, v)| a.get(k) == Some(v))
    };
    if !has_all(&actual.labels, &desired.labels) || !has_all(&actual.annotations, &desired.annotations) {
        return false;
    }
    // The environment label goes when spec.environment is unset.
    if !desired.labels.contains_key(ENVIRONMENT_LABEL) && actual.labels.contains_key(ENVIRONMENT_LABEL) {
        return false;
    }
    true
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
