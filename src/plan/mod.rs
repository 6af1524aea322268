//! The planner: a pure function from what is observed to the steps that converge it.
//!
//! No client, no clock, no randomness: `now` is an argument, tokens and trace ids are made by
//! the apply side. The cluster is the record: the versioned Secrets say which versions exist,
//! the mounted Secret says which one is current; status only carries times and history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{RestartKind, VersionState, WorkspaceTokenSpec, WorkspaceTokenStatus};
pub use crate::issuer::resolve::IssuerProblem;
pub use crate::rollout::Rollout;

mod consumers;
mod deletion;
mod holds;
mod idle;
mod inventory;
mod listing;
mod metadata;
mod planner;
mod spec_hash;
mod timing;
mod versions;
mod warnings;

pub use deletion::needs_a_pass as deletion_needs_a_pass;
pub use holds::DEFAULT_MAX_GRACE_PERIOD;
pub use listing::{Answer, Failure, InventoryInput, Listing, Reading};
pub use metadata::SecretMetadata;
pub(crate) use metadata::desired_metadata;
pub(crate) use spec_hash::spec_hash;
pub use warnings::Warning;
pub(crate) use warnings::secret_conflict;

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
    /// The HTTP issuer accepted this token in a non-destructive call.
    pub verified: bool,
    /// When it did (the operator's clock, as the verification recorded it).
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub metadata: SecretMetadata,
}

/// `status.mintIntent`: an HTTP mint of `version` started at `since`.
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
    /// Why the issuer `spec.issuerRef` names may not be used now: nothing is minted.
    pub issuer_problem: Option<IssuerProblem>,
    /// The restart targets' rollouts, where watched and seen (absent: not seen yet).
    pub rollouts: BTreeMap<(RestartKind, String), Rollout>,
    /// The platform's answer to the plan's `usage_query`, when this pass asked it.
    pub usage: Option<UsageReading>,
    /// The workloads of the namespace whose pod template reads `S`, sorted; None while the
    /// watches have not listed every kind yet (status keeps what it said).
    pub consumers: Option<Vec<crate::consumers::Consumer>>,
    /// Its (issuer, workspace) group's inventory; None when it mints locally or its issuer
    /// may not be used now (status keeps what it said).
    pub inventory: Option<InventoryInput>,
    /// The highest version this operator saw of this object since it started: a cluster
    /// restored from an older backup must not make it mint a number again.
    pub versions_seen: Option<u32>,
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
    /// The platform no longer accepts the served token (revoked behind tokenwarden's back,
    /// or a restored cluster serves a token revoked after its backup).
    ServedTokenRevoked,
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
            RotationReason::ServedTokenRevoked => "ServedTokenRevoked",
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
    /// A `holdUntil` still held at `maxGracePeriod` after the successor's cutover.
    HoldExpired,
    /// The WorkspaceToken is being deleted with `deletionPolicy: Revoke`.
    Deleted,
    /// Its record `S-vN` is gone (deleted by hand, or a crash after revoking): the token can
    /// no longer be served as previous-token, and must not stay valid unseen.
    Lost,
    /// The platform's inventory shows it revoked already: only its record goes.
    RevokedAtPlatform,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::GraceEnded => "GraceEnded",
            RevokeReason::Superseded => "Superseded",
            RevokeReason::Orphaned => "Orphaned",
            RevokeReason::Requested => "Requested",
            RevokeReason::HoldExpired => "HoldExpired",
            RevokeReason::Deleted => "Deleted",
            RevokeReason::Lost => "Lost",
            RevokeReason::RevokedAtPlatform => "RevokedAtPlatform",
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
    /// `inventory.revokeUnmanagedAfter`: revoke the platform token `id` (listed in this pass,
    /// held by no version anywhere), authenticating with the current token.
    RevokeUnmanaged {
        id: String,
        prefix: String,
        created_at: DateTime<Utc>,
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
    /// The issuer object that minted it, as status recorded (never read from a Secret).
    pub issuer: Option<crate::api::IssuerIdentity>,
    /// Why a Retiring version outlives its grace period (recomputed every pass).
    pub retire_held_by: Vec<String>,
    /// What the platform last said of the token's use (`holdUntil.idleFor`).
    pub usage: Option<Usage>,
}

/// The platform's `last_used_at` of a token, as read at `checked_at` (with another token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub last_used_at: Option<DateTime<Utc>>,
    pub checked_at: DateTime<Utc>,
}

/// What asking the platform about a retiring version's use gave, in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReading {
    pub version: u32,
    /// The use, or why the platform could not tell (said in `retireHeldBy`).
    pub usage: Result<Usage, String>,
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
    /// Warning events this pass publishes: each problem once, when it first appears.
    pub warnings: Vec<Warning>,
    /// `holdUntil.idleFor`: the Retiring version whose use the platform must be asked about
    /// (with the current token) before this plan can say whether it is held; the pass asks,
    /// then plans again with the answer in `Observed::usage`.
    pub usage_query: Option<u32>,
    /// `status.consumers`: who reads `S`, and whether a cutover rolls it.
    pub consumers: Vec<crate::api::ConsumerStatus>,
    /// Warnings `ConsumerNeedsRestart`, published once the cutover this pass plans is done.
    pub after_cutover: Vec<Warning>,
    /// The inventory is due and this token's current one may list: the pass lists its
    /// workspace at the platform with it, then plans again with the answer.
    pub inventory_query: Option<u32>,
    /// `status.unmanagedTokens`; None: status keeps what it said (no listing yet, or the last
    /// one failed or was partial).
    pub unmanaged: Option<Vec<crate::api::UnmanagedTokenStatus>>,
}

impl Plan {
    /// Whether a version stays Retiring after this pass: its restart targets' rollouts are
    /// then worth watching (`holdUntil.rolloutComplete` decides whether they hold it).
    pub fn holds_rollouts(&self) -> bool {
        self.versions
            .values()
            .any(|v| v.state == VersionState::Retiring)
    }
}

/// How often a Retiring version under `revokeAfterUse` checks the platform for use.
pub(crate) const USAGE_POLL_SECONDS: i64 = 15;

/// How soon a `holdUntil.idleFor` check the platform did not answer is tried again.
pub const USAGE_RETRY_SECONDS: i64 = 60;

pub fn plan(o: &Observed<'_>, now: DateTime<Utc>) -> Plan {
    let mut p = planner::Planner::new(o, now);
    if o.deleting {
        p.plan_deletion();
    } else {
        p.plan_lifecycle();
        p.plan_consumers();
        p.plan_inventory();
    }
    p.finish()
}

#[cfg(test)]
mod tests;
