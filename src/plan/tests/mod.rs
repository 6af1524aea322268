//! The planner's rules from `shared/design/api.md`, as tables of situations and the steps they
//! plan. A small simulator plays the apply side (steps change the observed Secrets and an
//! imaginary issuer) and the status side (status rendered from the plan, as `status::render`
//! does), so crashes between any two steps and multi-pass convergence can be checked too.

use std::collections::BTreeSet;

use serde_json::json;

use super::metadata::metadata_current;
use super::*;
use crate::api::{DeletionPolicy, VersionStatus, versioned_secret_name};
use crate::contract::{
    ENVIRONMENT_LABEL, MANAGED_BY_LABEL, REVOKE_VERSION_ANNOTATION, ROTATE_ANNOTATION,
    TEMPLATE_KEYS_ANNOTATION, TOKEN_LABEL, TOKEN_SHA256_ANNOTATION, VERSION_LABEL,
};
use crate::journal::{Done, Journal, TokenFacts};
use crate::schedule::jitter_offset;

const NAME: &str = "agent-alpha";
const UID: &str = "5f0c7d2e-1f5b-4c1e-9a51-0d1c2b3a4f5e";
/// More passes than this without reaching "nothing to do" is a planner that does not converge.
const MAX_PASSES: usize = 4;

// ----------------------------------------------------------------------------------------------
// Fixtures
// ----------------------------------------------------------------------------------------------

/// `2026-01-05 00:00` (a Monday) and friends, in UTC.
fn at(s: &str) -> DateTime<Utc> {
    let parse = |format| chrono::NaiveDateTime::parse_from_str(s, format);
    let naive = parse("%Y-%m-%d %H:%M").or_else(|_| parse("%Y-%m-%d %H:%M:%S"));
    naive.expect("test timestamp").and_utc()
}

fn t0() -> DateTime<Utc> {
    at("2026-01-05 00:00")
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A spec from the fields a test cares about, with the API's defaults for the rest.
fn spec(fields: serde_json::Value) -> WorkspaceTokenSpec {
    let mut value = json!({ "workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b" });
    merge(&mut value, fields);
    serde_json::from_value(value).expect("a valid spec")
}

/// JSON merge patch semantics (RFC 7386): objects merge, `null` removes, the rest replaces.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// Rotates every 30 days with a 1h grace period: the shape most tests start from.
fn monthly() -> WorkspaceTokenSpec {
    spec(json!({ "rotation": { "every": "720h", "gracePeriod": "1h" } }))
}

/// What the outside world saw: the issuer's valid tokens and the other side effects.
#[derive(Clone, Debug, Default)]
struct Outside {
    /// Every Mint, in order (a version minted twice shows up twice).
    minted: Vec<u32>,
    /// Versions whose token the issuer still accepts.
    valid: BTreeSet<u32>,
    revoked: Vec<(u32, RevokeReason)>,
    restarts: Vec<u32>,
    released: bool,
    serial: u32,
    /// The platform shows the current token used by a consumer after its cutover.
    used_after_cutover: bool,
}

/// One WorkspaceToken and the cluster around it, as the planner observes it.
#[derive(Clone, Debug)]
struct World {
    spec: WorkspaceTokenSpec,
    annotations: BTreeMap<String, String>,
    status: Option<WorkspaceTokenStatus>,
    versioned: BTreeMap<u32, VersionedSecret>,
    mounted: Option<MountedSecret>,
    foreign: Vec<String>,
    has_finalizer: bool,
    deleting: bool,
    /// The finalizer was removed while deleting: the object is gone.
    gone: bool,
    /// An HTTP mint cut short by a crash (the annotation a real pass would have left).
    mint_intent: Option<MintIntent>,
    outside: Outside,
}

impl World {
    fn new(spec: WorkspaceTokenSpec) -> World {
        World {
            spec,
            annotations: BTreeMap::new(),
            status: None,
            versioned: BTreeMap::new(),
            mounted: None,
            foreign: Vec::new(),
            has_finalizer: false,
            deleting: false,
            gone: false,
            mint_intent: None,
            outside: Outside::default(),
        }
    }

    /// A WorkspaceToken created at `now` and reconciled until there is nothing left to do.
    fn steady(spec: WorkspaceTokenSpec, now: DateTime<Utc>) -> World {
        let mut world = World::new(spec);
        world.converge(now);
        world
    }

    fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            name: NAME,
            uid: UID,
            generation: Some(1),
            spec: &self.spec,
            annotations: &self.annotations,
            status: self.status.as_ref(),
            deleting: self.deleting,
            has_finalizer: self.has_finalizer,
            versioned: self.versioned.clone(),
            mounted: self.mounted.clone(),
            foreign: self.foreign.clone(),
            mint_intent: self.mint_intent.clone(),
        }
    }

    fn plan(&self, now: DateTime<Utc>) -> Plan {
        let plan = plan(&self.observed(), now);
        self.check(&plan);
        plan
    }

    fn status(&self) -> &WorkspaceTokenStatus {
        self.status.as_ref().expect("status was written")
    }

    fn state_of(&self, version: u32) -> Option<VersionState> {
        let versions = &self.status().versions;
        versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.state)
    }

    fn version_status(&self, version: u32) -> &VersionStatus {
        let versions = &self.status().versions;
        versions
            .iter()
            .find(|v| v.version == version)
            .expect("version in status")
    }

    fn sha_of(&self, version: u32) -> Option<String> {
        self.versioned
            .get(&version)
            .and_then(|v| v.token_sha256.clone())
    }

    /// Runs the first `steps` steps of `plan` like the apply side would; returns the pass's
    /// journal (what status learns from it).
    fn apply(&mut self, plan: &Plan, now: DateTime<Utc>, steps: usize) -> Journal {
        let mut journal = Journal::default();
        for step in plan.steps.iter().take(steps) {
            let done = self.apply_step(step, now);
            journal.done.extend(done);
        }
        journal
    }

    /// One step, as the apply side does it; what it did.
    fn apply_step(&mut self, step: &Step, now: DateTime<Utc>) -> Vec<Done> {
        match step {
            Step::Verify { version } => {
                assert!(self.spec.issuer.is_some(), "Verify with the local issuer");
                let record = self.versioned.get_mut(version).expect("Verify reads S-vN");
                record.verified = true;
                let issuer_token_id = record.issuer_token_id.clone();
                vec![Done::Verified {
                    version: *version,
                    issuer_token_id,
                }]
            }
            Step::ReclaimOrphans { .. } => {
                // Tokens the issuer accepts that no Secret holds are the window's orphans.
                let held: BTreeSet<u32> = self.versioned.keys().copied().collect();
                self.outside.valid.retain(|v| held.contains(v));
                self.mint_intent = None;
                vec![Done::OrphansReclaimed]
            }
            Step::RevokeIfUsed { version } => {
                if !self.outside.used_after_cutover {
                    return Vec::new();
                }
                self.outside.valid.remove(version);
                self.versioned.remove(version);
                self.revoked(*version)
            }
            Step::AddFinalizer => {
                self.has_finalizer = true;
                vec![Done::FinalizerAdded]
            }
            Step::Mint { version, .. } => {
                self.outside.serial += 1;
                let serial = self.outside.serial;
                self.outside.minted.push(*version);
                self.outside.valid.insert(*version);
                let record = VersionedSecret {
                    version: *version,
                    token_sha256: Some(format!("sha-of-v{version}-mint{serial}")),
                    token_prefix: Some(format!("wst_{version:04}")),
                    trace_id: Some(format!("trace-{serial}")),
                    spec_hash: Some(spec_hash(&self.spec)),
                    issuer_token_id: Some(format!("tok-{serial}")),
                    verified: false,
                    created_at: Some(now),
                    metadata: desired_metadata(&self.spec, NAME, Some(*version)),
                };
                assert!(
                    !self.versioned.contains_key(version),
                    "Mint {{ version: {version} }} over an existing record"
                );
                self.versioned.insert(*version, record.clone());
                vec![Done::Minted {
                    version: *version,
                    token: facts(&record),
                }]
            }
            Step::RestoreVersioned { version } => {
                let mounted = self.mounted.as_ref().expect("RestoreVersioned reads S");
                assert_eq!(
                    mounted.version,
                    Some(*version),
                    "S holds the restored version"
                );
                let record = VersionedSecret {
                    version: *version,
                    token_sha256: mounted.token_sha256.clone(),
                    token_prefix: None,
                    trace_id: None,
                    spec_hash: Some(spec_hash(&self.spec)),
                    issuer_token_id: None,
                    verified: true,
                    created_at: Some(now),
                    metadata: desired_metadata(&self.spec, NAME, Some(*version)),
                };
                self.versioned.insert(*version, record.clone());
                vec![Done::Restored {
                    version: *version,
                    token: facts(&record),
                }]
            }
            Step::WriteMounted {
                current,
                previous,
                why,
            } => {
                let sha = self.sha_of(*current);
                assert!(
                    sha.is_some(),
                    "WriteMounted reads S-v{current}, which has no token"
                );
                let previous_sha = previous.map(|p| self.sha_of(p));
                assert!(
                    previous_sha.as_ref().is_none_or(Option::is_some),
                    "WriteMounted reads S-v{previous:?}, which has no token"
                );
                self.mounted = Some(MountedSecret {
                    version: Some(*current),
                    token_sha256: sha,
                    previous_version: *previous,
                    previous_sha256: previous_sha.flatten(),
                    metadata: desired_metadata(&self.spec, NAME, None),
                });
                vec![match why {
                    MountedWrite::Cutover => Done::CutOver { version: *current },
                    _ => Done::MountedRepaired { version: *current },
                }]
            }
            Step::RestartTargets { version } => {
                self.outside.restarts.push(*version);
                vec![Done::Restarted { version: *version }]
            }
            Step::Revoke { version, reason } => {
                self.outside.valid.remove(version);
                self.outside.revoked.push((*version, *reason));
                self.versioned.remove(version);
                self.revoked(*version)
            }
            Step::SyncMetadata { secret } => {
                match secret {
                    SecretRef::Mounted => {
                        let mounted = self.mounted.as_mut().expect("SyncMetadata of S");
                        mounted.metadata = desired_metadata(&self.spec, NAME, None);
                    }
                    SecretRef::Versioned(n) => {
                        let record = self.versioned.get_mut(n).expect("SyncMetadata of S-vN");
                        record.metadata = desired_metadata(&self.spec, NAME, Some(*n));
                    }
                }
                vec![Done::MetadataSynced]
            }
            Step::ReleaseSecrets => {
                self.outside.released = true;
                vec![Done::SecretsReleased]
            }
            Step::DeleteMounted => {
                self.mounted = None;
                vec![Done::MountedDeleted]
            }
            Step::RemoveFinalizer => {
                self.has_finalizer = false;
                self.gone = self.deleting;
                vec![Done::FinalizerRemoved]
            }
        }
    }

    /// What a revocation did: at the platform first when an HTTP issuer minted it.
    fn revoked(&self, version: u32) -> Vec<Done> {
        let at_issuer = self.spec.issuer.is_some().then_some(Done::RevokedAtIssuer {
            version,
            impossible: false,
        });
        at_issuer
            .into_iter()
            .chain([Done::Revoked { version }])
            .collect()
    }

    /// The status a pass writes: `status::render` itself, minus the conditions.
    fn render(&self, plan: &Plan, journal: &Journal) -> WorkspaceTokenStatus {
        WorkspaceTokenStatus {
            conditions: Vec::new(),
            ..self.render_with_conditions(plan, journal)
        }
    }

    fn render_with_conditions(&self, plan: &Plan, journal: &Journal) -> WorkspaceTokenStatus {
        let mut wst = crate::api::WorkspaceToken::new(NAME, self.spec.clone());
        wst.metadata.generation = Some(1);
        wst.status = self.status.clone();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        crate::status::render(&wst, plan, journal, now)
    }

    /// One full pass: plan, apply every step, write status.
    fn pass(&mut self, now: DateTime<Utc>) -> Plan {
        let plan = self.plan(now);
        let journal = self.apply(&plan, now, plan.steps.len());
        if !self.gone {
            self.status = Some(self.render(&plan, &journal));
        }
        plan
    }

    /// A pass that dies after `steps` steps, before status is written.
    fn crash(&mut self, now: DateTime<Utc>, steps: usize) -> Plan {
        let plan = self.plan(now);
        self.apply(&plan, now, steps);
        plan
    }

    /// Passes at `now` until one plans nothing and would leave status as it is. Returns the
    /// plans that had steps.
    fn converge(&mut self, now: DateTime<Utc>) -> Vec<Plan> {
        let mut busy = Vec::new();
        for _ in 0..MAX_PASSES {
            if self.gone {
                return busy;
            }
            let plan = self.plan(now);
            let unchanged = self.status.as_ref() == Some(&self.render(&plan, &Journal::default()));
            // A usage poll that finds no use writes nothing: that is a steady state too.
            let polls_only = plan.steps.is_empty()
                || (plan
                    .steps
                    .iter()
                    .all(|s| matches!(s, Step::RevokeIfUsed { .. }))
                    && !self.outside.used_after_cutover);
            if polls_only && unchanged {
                assert_eq!(
                    plan,
                    self.plan(now),
                    "re-planning the same inputs gives the same plan"
                );
                self.check_converged();
                return busy;
            }
            self.pass(now);
            busy.push(plan);
        }
        panic!(
            "no convergence in {MAX_PASSES} passes; last plans: {:#?}\nworld: {self:#?}",
            busy.iter().map(|p| &p.steps).collect::<Vec<_>>()
        );
    }

    /// Rules every plan obeys, whatever the situation.
    fn check(&self, plan: &Plan) {
        let live: Vec<_> = plan
            .versions
            .iter()
            .filter(|(_, v)| v.state != VersionState::Revoked)
            .collect();
        let count = |state| live.iter().filter(|(_, v)| v.state == state).count();
        if let Some(current) = plan.current
            && !self.deleting
        {
            let state = plan.versions.get(&current).map(|v| v.state);
            let state =
                state.unwrap_or_else(|| panic!("current has a record: {plan:#?}\n{self:#?}"));
            assert_eq!(state, VersionState::Active, "current is Active: {plan:#?}");
            let active = count(VersionState::Active);
            assert_eq!(active, 1, "exactly one Active: {plan:#?}");
        }
        if !self.foreign.is_empty() || self.spec.suspend {
            return;
        }
        assert!(
            count(VersionState::Retiring) <= 1,
            "at most one Retiring: {plan:#?}"
        );

        // Never mint while a minted, not yet current version exists.
        let held = self.mounted.as_ref().and_then(|m| m.version);
        let recorded = self.status.as_ref().and_then(|s| s.current_version);
        let was_revoked = |n: &u32| {
            let versions = self
                .status
                .as_ref()
                .map(|s| s.versions.as_slice())
                .unwrap_or_default();
            versions
                .iter()
                .any(|v| v.version == *n && v.state == VersionState::Revoked)
        };
        let pending: Vec<u32> = self
            .versioned
            .keys()
            .copied()
            .filter(|n| Some(*n) > held.max(recorded) && !was_revoked(n))
            .collect();
        for step in &plan.steps {
            if let Step::Mint { version, .. } = step {
                assert!(
                    pending.is_empty(),
                    "minted v{version} while {pending:?} is pending: {plan:#?}"
                );
                let seen = self
                    .outside
                    .minted
                    .iter()
                    .chain(self.versioned.keys())
                    .max();
                assert!(
                    seen.is_none_or(|s| version > s),
                    "version {version} repeats: {plan:#?}"
                );
            }
        }
        // The version pods read from S is revoked only once S has moved on.
        for (i, step) in plan.steps.iter().enumerate() {
            if let Step::Revoke { version, .. } = step {
                assert!(
                    self.deleting || Some(*version) != plan.current,
                    "revokes the current version: {plan:#?}"
                );
                let moved = plan.steps[..i]
                    .iter()
                    .any(|s| matches!(s, Step::WriteMounted { .. }));
                assert!(
                    self.deleting || held != Some(*version) || moved,
                    "revokes v{version} while S still serves it: {plan:#?}"
                );
            }
        }
    }

    /// What a converged WorkspaceToken looks like.
    fn check_converged(&self) {
        if self.deleting || !self.foreign.is_empty() || self.spec.suspend {
            return;
        }
        let status = self.status();
        let current = status.current_version.expect("a current version");
        let mounted = self.mounted.as_ref().expect("S exists");
        assert_eq!(
            mounted.version,
            Some(current),
            "S serves the current version"
        );
        assert_eq!(
            mounted.token_sha256,
            self.sha_of(current),
            "S holds the current token"
        );
        let active: Vec<_> = status
            .versions
            .iter()
            .filter(|v| v.state == VersionState::Active)
            .collect();
        assert_eq!(active.len(), 1, "one Active version in status: {status:#?}");
        // The issuer accepts exactly the tokens that have a record: none leaks.
        let records: BTreeSet<u32> = self.versioned.keys().copied().collect();
        assert_eq!(
            self.outside.valid, records,
            "valid tokens are the recorded ones"
        );
        let mut minted = self.outside.minted.clone();
        minted.dedup();
        assert_eq!(minted, self.outside.minted, "no version minted twice");
        assert!(
            minted.windows(2).all(|w| w[0] < w[1]),
            "versions only grow: {minted:?}"
        );
    }
}

/// What the apply side learns of a token it wrote into `record`.
fn facts(record: &VersionedSecret) -> TokenFacts {
    TokenFacts {
        token_sha256: record.token_sha256.clone().unwrap_or_default(),
        token_prefix: record.token_prefix.clone().unwrap_or_default(),
        trace_id: record.trace_id.clone().unwrap_or_default(),
        issuer_token_id: record.issuer_token_id.clone(),
    }
}

/// When version `n` of a hand-made cluster was minted and went live: a day apart.
fn day(n: u32) -> DateTime<Utc> {
    t0() + hours(24 * i64::from(n - 1))
}

fn record(version: u32) -> VersionedSecret {
    let spec = monthly();
    VersionedSecret {
        version,
        token_sha256: Some(format!("sha-of-v{version}")),
        token_prefix: Some(format!("wst_{version:04}")),
        trace_id: Some(format!("trace-v{version}")),
        spec_hash: Some(spec_hash(&spec)),
        issuer_token_id: Some(format!("tok-v{version}")),
        verified: true,
        created_at: Some(day(version)),
        metadata: desired_metadata(&spec, NAME, Some(version)),
    }
}

/// A hand-made cluster for the `monthly()` spec: the records `S-vN` that exist, what `S`
/// serves as (token, previous-token), and the versions the last status write recorded (the
/// Active one is `currentVersion`; an empty list is no status at all). Every version a status
/// or record mentions was minted at `day(n)` and is still valid at the issuer unless Revoked.
fn cluster(
    records: &[u32],
    mounted: Option<(u32, Option<u32>)>,
    status: &[(u32, VersionState)],
) -> World {
    let mut world = World::new(monthly());
    world.has_finalizer = true;
    world.versioned = records.iter().map(|n| (*n, record(*n))).collect();
    world.mounted = mounted.map(|(current, previous)| MountedSecret {
        version: Some(current),
        token_sha256: Some(format!("sha-of-v{current}")),
        previous_version: previous,
        previous_sha256: previous.map(|p| format!("sha-of-v{p}")),
        metadata: desired_metadata(&world.spec, NAME, None),
    });
    let current = status
        .iter()
        .find(|(_, s)| *s == VersionState::Active)
        .map(|(n, _)| *n);
    let versions: Vec<VersionStatus> = status
        .iter()
        .map(|(n, state)| {
            let r = record(*n);
            let time = |at: DateTime<Utc>| Some(crate::time::to_time(at));
            VersionStatus {
                version: *n,
                secret_name: versioned_secret_name(NAME, *n),
                state: *state,
                token_prefix: r.token_prefix,
                token_sha256: r.token_sha256,
                created_at: time(day(*n)),
                activated_at: time(day(*n)),
                retire_at: (*state == VersionState::Retiring).then(|| {
                    crate::time::to_time(day(current.expect("an Active version")) + hours(1))
                }),
                revoked_at: (*state == VersionState::Revoked)
                    .then(|| crate::time::to_time(day(*n + 1) + hours(1))),
                trace_id: r.trace_id,
                issuer_token_id: r.issuer_token_id,
            }
        })
        .collect();
    if !status.is_empty() {
        world.status = Some(WorkspaceTokenStatus {
            observed_generation: Some(1),
            current_version: current,
            versions,
            ..WorkspaceTokenStatus::default()
        });
    }
    let known: BTreeSet<u32> = records
        .iter()
        .chain(status.iter().map(|(n, _)| n))
        .copied()
        .collect();
    world.outside.minted = known.iter().copied().collect();
    world.outside.valid = known
        .into_iter()
        .filter(|n| !status.contains(&(*n, VersionState::Revoked)))
        .collect();
    world.outside.serial = 100;
    world
}

fn steps_of(plan: &Plan) -> &[Step] {
    &plan.steps
}

fn mint(version: u32, reason: RotationReason) -> Step {
    Step::Mint { version, reason }
}

fn write(current: u32, previous: Option<u32>, why: MountedWrite) -> Step {
    Step::WriteMounted {
        current,
        previous,
        why,
    }
}

fn revoke(version: u32, reason: RevokeReason) -> Step {
    Step::Revoke { version, reason }
}

/// Steady at v1 (t0), then rotated by hand to v2 at `t0 + 1d`: v2 Active, v1 Retiring for 1h.
fn rotated_once() -> (World, DateTime<Utc>) {
    let mut world = World::steady(monthly(), t0());
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "first");
    world.converge(t1);
    (world, t1)
}

// ----------------------------------------------------------------------------------------------
// The first pass and the steady state
// ----------------------------------------------------------------------------------------------

#[test]
fn first_pass_mints_version_one_and_activates_it() {
    let world = World::new(monthly());
    let plan = world.plan(t0());
    assert_eq!(
        steps_of(&plan),
        [
            Step::AddFinalizer,
            mint(1, RotationReason::Initial),
            write(1, None, MountedWrite::Cutover)
        ]
    );
    assert_eq!(plan.current, Some(1));
    let v1 = &plan.versions[&1];
    assert_eq!(
        (v1.state, v1.activated_at),
        (VersionState::Active, Some(t0()))
    );
    assert_eq!(plan.next_rotation, Some(t0() + hours(720)));
    assert!(plan.readiness.ready, "{:?}", plan.readiness);
    assert_eq!(plan.spec_error, None);

    let mut world = world;
    let passes = world.converge(t0());
    assert_eq!(passes.len(), 1, "one pass does it all");
    assert_eq!(world.status().current_version, Some(1));
    assert_eq!(world.outside.minted, [1]);
}

#[test]
fn nothing_due_plans_no_steps() {
    let world = World::steady(monthly(), t0());
    for now in [
        t0(),
        t0() + secs(1),
        t0() + hours(24),
        t0() + hours(720) - secs(1),
    ] {
        let plan = world.plan(now);
        assert_eq!(steps_of(&plan), [], "at {now}");
        assert_eq!(plan, world.plan(now), "same inputs, same plan");
        assert_eq!(
            world.render(&plan, &Journal::default()),
            *world.status(),
            "status is stable at {now}"
        );
        let until_rotation = (t0() + hours(720) - now).to_std().expect("in the future");
        assert_eq!(
            plan.requeue_after,
            Some(until_rotation.max(Duration::from_secs(1)))
        );
    }
}

#[test]
fn without_a_schedule_nothing_is_requeued() {
    let world = World::steady(spec(json!({})), t0());
    let plan = world.plan(t0() + hours(10_000));
    assert_eq!(steps_of(&plan), []);
    assert_eq!((plan.next_rotation, plan.requeue_after), (None, None));
}

#[test]
fn restart_after_operator_upgrade_plans_nothing() {
    let (world, t1) = rotated_once();
    // A restarted operator has no memory: all it has is the cluster. Later, but before any
    // deadline, it plans nothing; records written by an older version without the spec-hash
    // annotation don't count as a spec change either.
    let mut upgraded = world.clone();
    for record in upgraded.versioned.values_mut() {
        record.spec_hash = None;
    }
    for world in [&world, &upgraded] {
        let plan = world.plan(t1 + minutes(30));
        assert_eq!(steps_of(&plan), [], "{plan:#?}");
        assert_eq!(world.render(&plan, &Journal::default()), *world.status());
    }
}

#[test]
fn spec_hash_is_pinned_so_upgrades_do_not_rotate() {
    // Every record carries this hash: if it changes between releases, every token rotates on
    // upgrade. Change it only on purpose.
    let shaped = spec(json!({
        "userId": "19047492-ea90-4138-9afc-d2df61de2b06",
        "environment": "staging",
        "token": { "bytes": 48, "encoding": "hex", "prefix": "wst_" },
        "issuer": { "http": {
            "url": "http://platform.team-a.svc:8080",
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
        } }
    }));
    assert_eq!(spec_hash(&monthly()), SPEC_HASH_OF_DEFAULTS);
    assert_eq!(spec_hash(&shaped), SPEC_HASH_OF_SHAPED);
    // Spelling the defaults out is the same spec.
    let explicit = spec(json!({ "token": { "bytes": 32, "encoding": "base64url" } }));
    assert_eq!(spec_hash(&explicit), spec_hash(&monthly()));
}

#[test]
fn issuer_timeout_and_revoke_after_use_do_not_shape_the_token() {
    let issuer = |timeout: u32, after_use: bool| {
        spec(json!({ "issuer": { "http": {
            "url": "http://platform:8080", "timeoutSeconds": timeout, "revokeAfterUse": after_use,
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
        } } }))
    };
    assert_eq!(spec_hash(&issuer(45, false)), spec_hash(&issuer(5, true)));
    let elsewhere = spec(json!({ "issuer": { "http": {
        "url": "http://other-platform:8080",
        "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
    } } }));
    assert_ne!(
        spec_hash(&elsewhere),
        spec_hash(&issuer(45, false)),
        "another platform is another token"
    );
}

/// sha256(`{"token":{"bytes":32,"encoding":"base64url"}}`), first 16 hex digits.
const SPEC_HASH_OF_DEFAULTS: &str = "635be3b22bf83056";
/// The same over the sorted, null-free JSON of token, the issuer's url, userId and environment.
const SPEC_HASH_OF_SHAPED: &str = "75865ca057441684";

// ----------------------------------------------------------------------------------------------
// Rotation, grace and revocation
// ----------------------------------------------------------------------------------------------

#[test]
fn grace_period_keeps_previous_token_in_mounted_secret() {
    let mut world = World::steady(monthly(), t0());
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "first");
    let plan = world.plan(t1);
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::Manual),
            write(2, Some(1), MountedWrite::Cutover)
        ]
    );
    world.converge(t1);
    let mounted = world.mounted.clone().expect("S");
    assert_eq!(
        (mounted.version, mounted.previous_version),
        (Some(2), Some(1))
    );
    assert_eq!(
        mounted.previous_sha256,
        world.sha_of(1),
        "previous-token is v1's token"
    );
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    assert_eq!(
        world.version_status(1).retire_at,
        Some(crate::time::to_time(t1 + hours(1)))
    );
    assert_eq!(world.state_of(2), Some(VersionState::Active));
    assert!(
        world.outside.valid.contains(&1),
        "v1 still works during grace"
    );
}

#[test]
fn retiring_version_is_revoked_when_grace_ends() {
    let (mut world, t1) = rotated_once();
    assert_eq!(steps_of(&world.plan(t1 + hours(1) - secs(1))), []);
    let retire_at = t1 + hours(1);
    let plan = world.plan(retire_at);
    assert_eq!(
        steps_of(&plan),
        [
            write(2, None, MountedWrite::PreviousRemoved),
            revoke(1, RevokeReason::GraceEnded)
        ]
    );
    world.converge(retire_at);
    assert_eq!(world.outside.revoked, [(1, RevokeReason::GraceEnded)]);
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(
        world.version_status(1).revoked_at,
        Some(crate::time::to_time(retire_at))
    );
    assert_eq!(world.version_status(1).retire_at, None);
    let mounted = world.mounted.clone().expect("S");
    assert_eq!(
        (mounted.previous_version, mounted.previous_sha256),
        (None, None)
    );
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn zero_grace_revokes_at_cutover_once_the_mounted_secret_moved() {
    let mut world = World::steady(
        spec(json!({ "rotation": { "every": "24h", "gracePeriod": "0" } })),
        t0(),
    );
    let plan = world.plan(t0() + hours(24));
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::Schedule),
            write(2, None, MountedWrite::Cutover),
            revoke(1, RevokeReason::GraceEnded),
        ]
    );
    world.converge(t0() + hours(24));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn at_most_one_retiring_version() {
    let (mut world, t1) = rotated_once();
    let t2 = t1 + minutes(10);
    world.annotate(ROTATE_ANNOTATION, "second");
    let plan = world.plan(t2);
    assert_eq!(
        steps_of(&plan),
        [
            mint(3, RotationReason::Manual),
            write(3, Some(2), MountedWrite::Cutover),
            revoke(1, RevokeReason::Superseded),
        ]
    );
    world.converge(t2);
    let states: Vec<_> = world
        .status()
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        [
            (3, VersionState::Active),
            (2, VersionState::Retiring),
            (1, VersionState::Revoked)
        ]
    );
    assert_eq!(
        world.version_status(2).retire_at,
        Some(crate::time::to_time(t2 + hours(1)))
    );
}

#[test]
fn scheduled_rotation_is_due_after_every_plus_jitter() {
    let every_day = spec(json!({ "rotation": { "every": "24h", "jitter": "10m" } }));
    // Whole seconds, the precision status keeps, so status shows the instant it happens.
    let offset = jitter_offset(UID, Duration::from_secs(600)).as_secs();
    let offset = secs(i64::try_from(offset).expect("small"));
    assert!(
        offset > chrono::Duration::zero(),
        "this uid has a non-zero offset"
    );
    let mut world = World::steady(every_day, t0());
    let due = t0() + hours(24) + offset;
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(due))
    );
    assert_eq!(
        steps_of(&world.plan(t0() + hours(24))),
        [],
        "jitter delays the rotation"
    );
    assert_eq!(steps_of(&world.plan(due - secs(1))), []);
    let plan = world.plan(due);
    assert_eq!(steps_of(&plan)[0], mint(2, RotationReason::Schedule));
    world.converge(due);
    // The next one counts from this rotation.
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(due + hours(24) + offset))
    );
}

#[test]
fn cron_schedule_in_time_zone() {
    // Mondays 03:00 in Berlin (CET, UTC+1 in January): 02:00 UTC.
    let weekly =
        spec(json!({ "rotation": { "schedule": "0 3 * * 1", "timeZone": "Europe/Berlin" } }));
    let mut world = World::steady(weekly, t0());
    let due = at("2026-01-05 02:00");
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(due))
    );
    assert_eq!(
        world.plan(due - secs(1)).requeue_after,
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        steps_of(&world.plan(due))[0],
        mint(2, RotationReason::Schedule)
    );
    world.converge(due);
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(at("2026-01-12 02:00"))),
        "a week later"
    );
    // In July Berlin is on CEST (UTC+2).
    let summer = World::steady(
        spec(json!({ "rotation": { "schedule": "0 3 * * 1", "timeZone": "Europe/Berlin" } })),
        at("2026-07-01 12:00"),
    );
    assert_eq!(
        summer.status().next_rotation_time,
        Some(crate::time::to_time(at("2026-07-06 01:00")))
    );
}

#[test]
fn invalid_cron_is_a_spec_error_not_a_panic() {
    let table = [
        json!({ "schedule": "0 3 * *" }),
        json!({ "schedule": "61 * * * *" }),
        json!({ "schedule": "0 0 0 * * *" }),
        json!({ "schedule": "0 3 * * 1", "timeZone": "Mars/Olympus" }),
        json!({ "schedule": "0 0 30 2 *" }),
        json!({ "every": "0s" }),
        json!({ "every": "99999999999999999999h" }),
    ];
    for rotation in table {
        let world = World::new(spec(json!({ "rotation": rotation.clone() })));
        let plan = world.plan(t0());
        assert!(plan.spec_error.is_some(), "{rotation}: {plan:#?}");
        assert!(!plan.readiness.ready, "{rotation}");
        assert_eq!(plan.readiness.reason, "InvalidSpec", "{rotation}");
        assert_eq!(
            plan.readiness.message,
            *plan.spec_error.as_ref().expect("error"),
            "{rotation}"
        );
        assert_eq!(plan.next_rotation, None, "{rotation}");
        // The token itself is still minted and kept: only the schedule is unusable.
        let mut world = world;
        world.converge(t0());
        let later = world.plan(t0() + hours(100_000));
        assert_eq!(steps_of(&later), [], "{rotation}: no scheduled rotation");
        assert!(later.spec_error.is_some(), "{rotation}");
    }
}

#[test]
fn durations_too_large_for_a_timestamp_are_spec_errors_not_panics() {
    // The schema accepts any number of units; chrono cannot add all of them to a date.
    let table = [
        json!({ "every": "90000000d", "jitter": "10000000d" }),
        json!({ "every": "24h", "gracePeriod": "100000000d" }),
        json!({ "every": "24h", "gracePeriod": "99999999999999999999h" }),
        json!({ "every": "24h", "jitter": "99999999999999999999h" }),
    ];
    for rotation in table {
        let mut world = World::steady(spec(json!({ "rotation": rotation.clone() })), t0());
        let plan = world.plan(t0() + hours(48));
        assert!(plan.spec_error.is_some(), "{rotation}: {plan:#?}");
        // A grace period that cannot end is not one that has ended: nothing is revoked early.
        world.annotate(ROTATE_ANNOTATION, "now");
        let plan = world.plan(t0() + hours(48));
        assert!(
            !plan.steps.iter().any(|s| matches!(s, Step::Revoke { .. })),
            "{rotation}: {plan:#?}"
        );
    }
}

#[test]
fn requeue_is_the_earliest_of_next_rotation_and_retire_at() {
    let (mut world, t1) = rotated_once();
    // v1 retires at t1+1h, v2 rotates at t1+720h.
    let plan = world.plan(t1 + minutes(15));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(45 * 60)));
    assert_eq!(plan.next_rotation, Some(t1 + hours(720)));
    world.converge(t1 + hours(1));
    let plan = world.plan(t1 + hours(2));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(718 * 3600)));
    // A retire_at past due (operator was down) asks to come back at once, not never.
    let (world, t1) = rotated_once();
    let late = world.plan(t1 + hours(5));
    assert!(!late.steps.is_empty());
    assert_eq!(late.requeue_after, Some(Duration::from_secs(715 * 3600)));
    // Without a schedule the retirement alone decides.
    let mut world = World::steady(spec(json!({ "rotation": { "gracePeriod": "2h" } })), t0());
    world.annotate(ROTATE_ANNOTATION, "x");
    world.converge(t0() + hours(1));
    assert_eq!(
        world.plan(t0() + hours(2)).requeue_after,
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn version_numbers_never_repeat_after_revocation() {
    // No history kept, no grace: every older version is revoked and forgotten at once.
    let mut world = World::steady(
        spec(json!({ "historyLimit": 0, "rotation": { "gracePeriod": "0" } })),
        t0(),
    );
    for (i, value) in ["a", "b", "c"].into_iter().enumerate() {
        world.annotate(ROTATE_ANNOTATION, value);
        world.converge(t0() + hours(i as i64 + 1));
    }
    assert_eq!(world.outside.minted, [1, 2, 3, 4]);
    assert_eq!(world.status().versions.len(), 1, "revoked versions trimmed");
    // Even with every Secret gone, the next number comes after everything status remembers.
    world.versioned.clear();
    world.mounted = None;
    let plan = world.plan(t0() + hours(10));
    assert_eq!(steps_of(&plan)[0], mint(5, RotationReason::TokenLost));
    world.converge(t0() + hours(10));
    assert_eq!(world.outside.minted, [1, 2, 3, 4, 5]);
}

// ----------------------------------------------------------------------------------------------
// Why a rotation happens
// ----------------------------------------------------------------------------------------------

#[test]
fn spec_change_rotates_when_rotate_on_change() {
    // The token-shaping fields: token, issuer, userId, environment.
    let shaping = [
        json!({ "token": { "bytes": 48 } }),
        json!({ "token": { "encoding": "hex" } }),
        json!({ "token": { "prefix": "wst_" } }),
        json!({ "userId": "19047492-ea90-4138-9afc-d2df61de2b06" }),
        json!({ "environment": "production" }),
        json!({ "issuer": { "http": {
            "url": "http://platform.team-a.svc:8080",
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
        } } }),
    ];
    for change in shaping {
        let mut world = World::steady(monthly(), t0());
        let mut value = serde_json::to_value(&world.spec).expect("spec");
        merge(&mut value, change.clone());
        world.spec = serde_json::from_value(value).expect("spec");
        let plan = world.plan(t0() + hours(1));
        assert_eq!(
            steps_of(&plan).first(),
            Some(&mint(2, RotationReason::SpecChanged)),
            "{change}: {plan:#?}"
        );
        world.converge(t0() + hours(1));
        assert_eq!(world.outside.minted, [1, 2], "{change}: once");
    }
}

#[test]
fn changes_outside_the_token_shape_never_rotate() {
    let table = [
        json!({ "profileId": "p-002" }),
        json!({ "rotation": { "every": "1000h", "gracePeriod": "2h", "jitter": "5m" } }),
        json!({ "restartTargets": [ { "kind": "Deployment", "name": "agent" } ] }),
        json!({ "historyLimit": 3 }),
        json!({ "secretTemplate": { "labels": { "team": "a" } } }),
    ];
    for change in table {
        let mut world = World::steady(monthly(), t0());
        let mut value = serde_json::to_value(&world.spec).expect("spec");
        merge(&mut value, change.clone());
        world.spec = serde_json::from_value(value).expect("spec");
        world.converge(t0() + hours(1));
        assert_eq!(world.outside.minted, [1], "{change}");
    }
}

#[test]
fn spec_change_does_not_rotate_when_rotate_on_change_is_false() {
    let mut world = World::steady(
        spec(json!({ "rotation": { "every": "720h", "rotateOnChange": false } })),
        t0(),
    );
    world.spec.token.bytes = 64;
    world.spec.environment = Some("production".into());
    let plan = world.plan(t0() + hours(1));
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })),
        "{plan:#?}"
    );
    world.converge(t0() + hours(1));
    assert_eq!(world.outside.minted, [1]);
    // The next scheduled rotation picks up the new shape.
    let plan = world.plan(t0() + hours(720));
    assert_eq!(steps_of(&plan)[0], mint(2, RotationReason::Schedule));
}

#[test]
fn secret_template_change_syncs_metadata_without_minting() {
    let (mut world, t1) = rotated_once();
    let table = [
        json!({ "labels": { "team": "a" } }),
        json!({ "labels": { "team": "b" }, "annotations": { "owner": "platform" } }),
        json!({ "annotations": { "owner": "platform" } }),
        json!({}),
    ];
    for template in table {
        world.spec.secret_template = serde_json::from_value(template.clone()).expect("template");
        let plan = world.plan(t1 + minutes(5));
        assert_eq!(
            steps_of(&plan),
            [
                Step::SyncMetadata {
                    secret: SecretRef::Mounted
                },
                Step::SyncMetadata {
                    secret: SecretRef::Versioned(1)
                },
                Step::SyncMetadata {
                    secret: SecretRef::Versioned(2)
                },
            ],
            "{template}"
        );
        world.converge(t1 + minutes(5));
    }
    // The environment label comes and goes with spec.environment (which also rotates).
    world.spec.environment = Some("staging".into());
    world.converge(t1 + minutes(6));
    let labels = &world.mounted.as_ref().expect("S").metadata.labels;
    assert_eq!(
        labels.get(ENVIRONMENT_LABEL).map(String::as_str),
        Some("staging")
    );
    assert_eq!(world.outside.minted, [1, 2, 3]);
}

#[test]
fn new_rotate_annotation_value_rotates_once() {
    let mut world = World::steady(monthly(), t0());
    world.annotate(ROTATE_ANNOTATION, "2026-01-05T10:00:00Z");
    let plan = world.plan(t0() + hours(10));
    assert_eq!(steps_of(&plan)[0], mint(2, RotationReason::Manual));
    assert_eq!(plan.rotate_request.as_deref(), Some("2026-01-05T10:00:00Z"));
    world.converge(t0() + hours(10));
    assert_eq!(
        world.status().last_rotate_request.as_deref(),
        Some("2026-01-05T10:00:00Z")
    );
    let same_again = world.plan(t0() + hours(10) + minutes(30));
    assert_eq!(
        steps_of(&same_again),
        [],
        "the same value again is not a request"
    );
    world.annotate(ROTATE_ANNOTATION, "again");
    world.converge(t0() + hours(12));
    assert_eq!(world.outside.minted, [1, 2, 3]);
    // Removing the annotation is not a request either, and status keeps the last one.
    world.annotations.clear();
    let cleared = t0() + hours(12) + minutes(30);
    assert_eq!(steps_of(&world.plan(cleared)), []);
    world.converge(cleared);
    assert_eq!(world.status().last_rotate_request.as_deref(), Some("again"));
}

#[test]
fn rotate_annotation_on_new_object_does_not_rotate_twice() {
    let mut world = World::new(monthly());
    world.annotate(ROTATE_ANNOTATION, "at-creation");
    let plan = world.plan(t0());
    assert_eq!(steps_of(&plan)[1], mint(1, RotationReason::Initial));
    world.converge(t0());
    assert_eq!(world.outside.minted, [1]);
    assert_eq!(
        world.status().last_rotate_request.as_deref(),
        Some("at-creation")
    );
}

#[test]
fn revoke_version_annotation_on_current_rotates_then_revokes() {
    let mut world = World::steady(monthly(), t0());
    world.annotate(REVOKE_VERSION_ANNOTATION, "1");
    let plan = world.plan(t0() + hours(1));
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::RevokeRequested),
            write(2, None, MountedWrite::Cutover),
            revoke(1, RevokeReason::Requested),
        ],
        "no grace for a version asked to go"
    );
    world.converge(t0() + hours(1));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
    assert_eq!(
        world.outside.minted,
        [1, 2],
        "the annotation left in place does not rotate again"
    );
}

#[test]
fn a_revoke_version_value_is_acted_on_once_and_never_later() {
    // Asked to revoke version 2 while version 1 is current: nothing to revoke, but the request
    // is answered, so when version 2 becomes current it is not revoked by the stale value.
    let mut world = World::steady(monthly(), t0());
    world.annotate(REVOKE_VERSION_ANNOTATION, "2");
    let plan = world.plan(t0() + hours(1));
    assert_eq!(steps_of(&plan), [], "no live version 2");
    assert_eq!(plan.revoke_request.as_deref(), Some("2"));
    world.converge(t0() + hours(1));
    world.annotate(crate::contract::ROTATE_ANNOTATION, "r1");
    world.converge(t0() + hours(2));
    assert!(world.outside.valid.contains(&2), "v2 current and valid");
    let plan = world.plan(t0() + hours(2) + minutes(1));
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })
            || matches!(s, Step::Revoke { version: 2, .. })),
        "the stale value does not revoke v2: {:?}",
        plan.steps
    );
}

#[test]
fn revoke_version_annotation_on_retiring_revokes_now() {
    for value in ["1", "v1", " 1 "] {
        let (mut world, t1) = rotated_once();
        world.annotate(REVOKE_VERSION_ANNOTATION, value);
        let plan = world.plan(t1 + minutes(1));
        assert_eq!(
            steps_of(&plan),
            [
                write(2, None, MountedWrite::PreviousRemoved),
                revoke(1, RevokeReason::Requested)
            ],
            "{value:?}"
        );
        world.converge(t1 + minutes(1));
        assert_eq!(world.outside.valid, BTreeSet::from([2]));
    }
}

#[test]
fn revoke_version_annotation_naming_a_revoked_or_unknown_version_does_nothing() {
    let (mut world, t1) = rotated_once();
    world.converge(t1 + hours(2));
    for value in ["1", "7", "v", "latest"] {
        world.annotate(REVOKE_VERSION_ANNOTATION, value);
        assert_eq!(steps_of(&world.plan(t1 + hours(3))), [], "{value:?}");
    }
}

// ----------------------------------------------------------------------------------------------
// What the cluster shows
// ----------------------------------------------------------------------------------------------

#[test]
fn what_the_cluster_shows_decides_the_steps() {
    use MountedWrite::{Cutover, DriftRepaired, PreviousRemoved};
    use VersionState::{Active, Retiring, Revoked};
    let in_grace = day(2) + minutes(10);
    let after_grace = day(2) + hours(2);
    let table: Vec<(&str, World, DateTime<Utc>, Vec<Step>)> = vec![
        (
            "at rest: v2 current, v1 in its grace period",
            cluster(&[1, 2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![],
        ),
        (
            "crash after mint: S-v3 exists, S and status at v2",
            cluster(
                &[1, 2, 3],
                Some((2, Some(1))),
                &[(2, Active), (1, Retiring)],
            ),
            in_grace,
            vec![
                write(3, Some(2), Cutover),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "crash after cutover: S at v3, status still at v2",
            cluster(
                &[1, 2, 3],
                Some((3, Some(2))),
                &[(2, Active), (1, Retiring)],
            ),
            in_grace,
            vec![revoke(1, RevokeReason::Superseded)],
        ),
        (
            "crash after revoke: S-v1 gone, status still says Retiring",
            cluster(&[2], Some((2, None)), &[(2, Active), (1, Retiring)]),
            after_grace,
            vec![revoke(1, RevokeReason::GraceEnded)],
        ),
        (
            "crash after the grace-end revoke, before S lost previous-token",
            cluster(&[2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            after_grace,
            vec![
                write(2, None, PreviousRemoved),
                revoke(1, RevokeReason::GraceEnded),
            ],
        ),
        (
            "after status write",
            cluster(&[2], Some((2, None)), &[(2, Active), (1, Revoked)]),
            after_grace,
            vec![],
        ),
        (
            "S deleted",
            cluster(&[1, 2], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "S-v2 deleted",
            cluster(&[1], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![Step::RestoreVersioned { version: 2 }],
        ),
        (
            "S-v1 deleted during grace",
            cluster(&[2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                write(2, None, PreviousRemoved),
                revoke(1, RevokeReason::Lost),
            ],
        ),
        (
            "every Secret deleted",
            cluster(&[], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S and S-v2 deleted, v1 still retiring",
            cluster(&[1], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S rolled back to v1",
            cluster(&[1, 2], Some((1, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "S rolled back to v1, and S-v2 deleted",
            cluster(&[1], Some((1, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S edited to name a version nobody minted",
            cluster(&[1, 2], Some((9, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "status lost (restored from a backup without it)",
            cluster(&[1, 2], Some((2, Some(1))), &[]),
            in_grace,
            vec![],
        ),
        (
            "status lost and S deleted",
            cluster(&[1, 2], None, &[]),
            in_grace,
            vec![write(2, Some(1), Cutover)],
        ),
        (
            "a record of a revoked version came back",
            cluster(
                &[1, 2, 3],
                Some((3, None)),
                &[(3, Active), (2, Revoked), (1, Revoked)],
            ),
            day(3) + hours(2),
            vec![
                revoke(2, RevokeReason::Orphaned),
                revoke(1, RevokeReason::Orphaned),
            ],
        ),
    ];
    for (situation, mut world, now, steps) in table {
        let plan = world.plan(now);
        assert_eq!(plan.steps, steps, "{situation}");
        world.converge(now);
        assert_eq!(
            steps_of(&world.plan(now + secs(1))),
            [],
            "{situation}: converged"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Drift
// ----------------------------------------------------------------------------------------------

#[test]
fn edited_mounted_secret_is_repaired_without_minting() {
    type Edit = fn(&mut MountedSecret);
    let table: [(&str, Edit); 5] = [
        ("token replaced", |m| {
            m.token_sha256 = Some("sha-of-something-else".into())
        }),
        ("token removed", |m| m.token_sha256 = None),
        ("token-version removed", |m| m.version = None),
        ("previous-token removed during grace", |m| {
            m.previous_version = None;
            m.previous_sha256 = None;
        }),
        ("previous-token replaced", |m| {
            m.previous_sha256 = Some("sha-of-something-else".into())
        }),
    ];
    for (what, edit) in table {
        let (mut world, t1) = rotated_once();
        edit(world.mounted.as_mut().expect("S"));
        let plan = world.plan(t1 + minutes(5));
        assert_eq!(
            steps_of(&plan),
            [write(2, Some(1), MountedWrite::DriftRepaired)],
            "{what}"
        );
        world.converge(t1 + minutes(5));
        assert_eq!(world.outside.minted, [1, 2], "{what}");
    }
}

#[test]
fn mounted_secret_rolled_back_to_an_older_version_is_repaired() {
    // Someone re-applied an old copy of S: it serves v1 (still valid, retiring) instead of v2.
    let (mut world, t1) = rotated_once();
    world.spec.restart_targets =
        spec(json!({ "restartTargets": [ { "kind": "Deployment", "name": "agent" } ] }))
            .restart_targets;
    world.mounted = Some(MountedSecret {
        version: Some(1),
        token_sha256: world.sha_of(1),
        previous_version: None,
        previous_sha256: None,
        metadata: desired_metadata(&world.spec, NAME, None),
    });
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [write(2, Some(1), MountedWrite::DriftRepaired)],
        "a repair, not a cutover: no restart either"
    );
    let activated = world.version_status(2).activated_at.clone();
    world.converge(t1 + minutes(5));
    assert_eq!(
        world.version_status(2).activated_at,
        activated,
        "not a new cutover"
    );
    assert!(
        world.outside.restarts.is_empty(),
        "{:?}",
        world.outside.restarts
    );
}

#[test]
fn deleted_mounted_secret_is_restored_from_versioned() {
    let (mut world, t1) = rotated_once();
    world.mounted = None;
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [write(2, Some(1), MountedWrite::DriftRepaired)]
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.minted, [1, 2]);
}

#[test]
fn deleted_versioned_secret_is_restored_from_mounted() {
    let (mut world, t1) = rotated_once();
    let before = world.version_status(2).clone();
    world.versioned.remove(&2);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(steps_of(&plan), [Step::RestoreVersioned { version: 2 }]);
    // The restored record keeps its history: it did not become current now.
    let record = &plan.versions[&2];
    assert_eq!(record.activated_at, Some(t1));
    assert_eq!(
        record.issuer_token_id, before.issuer_token_id,
        "still revocable at the issuer"
    );
    assert_eq!(plan.next_rotation, Some(t1 + hours(720)));
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.minted, [1, 2]);
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(t1 + hours(720)))
    );
    assert_eq!(
        world.version_status(2).issuer_token_id,
        before.issuer_token_id
    );
}

#[test]
fn deleted_retiring_record_is_revoked_not_forgotten() {
    // Without S-v1 the planner cannot keep v1 as previous-token, and a token nobody can see
    // must not stay valid at the issuer.
    let (mut world, t1) = rotated_once();
    world.versioned.remove(&1);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [
            write(2, None, MountedWrite::PreviousRemoved),
            revoke(1, RevokeReason::Lost)
        ]
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn lost_current_version_rotates_with_reason_token_lost() {
    let mut world = World::steady(monthly(), t0());
    world.mounted = None;
    world.versioned.clear();
    let plan = world.plan(t0() + hours(1));
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::TokenLost),
            write(2, None, MountedWrite::Cutover),
            revoke(1, RevokeReason::Lost),
        ]
    );
    world.converge(t0() + hours(1));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn lost_current_version_is_not_replaced_by_the_retiring_one() {
    // S and S-v2 gone while v1 is still retiring: v1 is older than what was current, so it
    // does not come back; a new token does.
    let (mut world, t1) = rotated_once();
    world.mounted = None;
    world.versioned.remove(&2);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan)[0],
        mint(3, RotationReason::TokenLost),
        "{plan:#?}"
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.valid, BTreeSet::from([3]));
}

#[test]
fn revoked_version_is_never_adopted_again() {
    // A backup restore brings back S-v3 after v3 was revoked: it must not become current.
    let (mut world, t1) = rotated_once();
    world.annotate(ROTATE_ANNOTATION, "second");
    world.converge(t1 + minutes(10));
    world.annotate(REVOKE_VERSION_ANNOTATION, "3");
    world.converge(t1 + minutes(20));
    assert_eq!(world.state_of(3), Some(VersionState::Revoked));
    let current = world.status().current_version.expect("current");
    assert_eq!(current, 4);
    let ghost = VersionedSecret {
        version: 3,
        token_sha256: Some("sha-of-v3-from-backup".into()),
        token_prefix: Some("wst_0003".into()),
        trace_id: None,
        spec_hash: Some(spec_hash(&world.spec)),
        issuer_token_id: None,
        verified: true,
        created_at: Some(t1),
        metadata: desired_metadata(&world.spec, NAME, Some(3)),
    };
    world.versioned.insert(3, ghost);
    world.outside.valid.insert(3);
    let plan = world.plan(t1 + minutes(30));
    assert_eq!(plan.current, Some(4));
    assert_eq!(plan.versions[&3].state, VersionState::Revoked);
    assert_eq!(
        steps_of(&plan),
        [revoke(3, RevokeReason::Orphaned)],
        "the leftover goes"
    );
    world.converge(t1 + minutes(30));
    assert_eq!(world.outside.minted, [1, 2, 3, 4]);
}

// ----------------------------------------------------------------------------------------------
// Suspend, conflicts, deletion
// ----------------------------------------------------------------------------------------------

#[test]
fn suspend_plans_no_steps() {
    let (mut world, t1) = rotated_once();
    world.spec.suspend = true;
    world.annotate(ROTATE_ANNOTATION, "please");
    world.annotate(REVOKE_VERSION_ANNOTATION, "2");
    world.spec.token.bytes = 64;
    world.mounted = None;
    // Long after every deadline.
    let plan = world.plan(t1 + hours(10_000));
    assert_eq!(steps_of(&plan), []);
    assert_eq!(
        (plan.readiness.ready, plan.readiness.reason),
        (false, "Suspended")
    );
    assert_eq!(plan.current, Some(2));
    assert_eq!(plan.requeue_after, None);
    // A new suspended object does not even get a finalizer.
    let mut fresh = World::new(monthly());
    fresh.spec.suspend = true;
    assert_eq!(steps_of(&fresh.plan(t0())), []);
    // Resuming picks up where it was.
    world.spec.suspend = false;
    world.converge(t1 + hours(10_000));
    assert!(world.outside.minted.len() > 2);
}

#[test]
fn foreign_secret_is_a_conflict_with_no_steps() {
    for (world, foreign) in [
        (World::new(monthly()), NAME.to_string()),
        (World::steady(monthly(), t0()), "agent-alpha-v2".to_string()),
    ] {
        let mut world = world;
        world.foreign = vec![foreign.clone()];
        world.annotate(ROTATE_ANNOTATION, "please");
        let plan = world.plan(t0() + hours(1000));
        assert_eq!(steps_of(&plan), [], "{foreign}");
        assert!(!plan.readiness.ready);
        assert_eq!(plan.readiness.reason, "SecretConflict");
        assert!(
            plan.readiness.message.contains(&foreign),
            "{}",
            plan.readiness.message
        );
    }
}

#[test]
fn deletion_with_revoke_policy_revokes_every_live_version_oldest_first_then_removes_finalizer() {
    let (mut world, t1) = rotated_once();
    world.deleting = true;
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [
            revoke(1, RevokeReason::Deleted),
            revoke(2, RevokeReason::Deleted),
            Step::DeleteMounted,
            Step::RemoveFinalizer,
        ]
    );
    assert!(!plan.readiness.ready);
    world.converge(t1 + minutes(5));
    assert!(world.gone);
    // Oldest first: the current token is still there to authenticate an older revocation.
    let revoked = [(1, RevokeReason::Deleted), (2, RevokeReason::Deleted)];
    assert_eq!(world.outside.revoked, revoked);
    assert_eq!(
        world.outside.valid,
        BTreeSet::new(),
        "nothing stays valid at the issuer"
    );
    assert_eq!(world.mounted, None);
    assert_eq!(world.versioned, BTreeMap::new());
}

#[test]
fn deletion_revokes_versions_whose_records_are_already_gone() {
    let (mut world, t1) = rotated_once();
    world.versioned.clear();
    world.deleting = true;
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [
            revoke(1, RevokeReason::Deleted),
            revoke(2, RevokeReason::Deleted),
            Step::DeleteMounted,
            Step::RemoveFinalizer,
        ]
    );
}

#[test]
fn deletion_with_retain_policy_releases_secrets() {
    let (mut world, t1) = rotated_once();
    world.spec.deletion_policy = DeletionPolicy::Retain;
    world.deleting = true;
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [Step::ReleaseSecrets, Step::RemoveFinalizer]
    );
    world.converge(t1 + minutes(5));
    assert!(world.gone && world.outside.released);
    assert_eq!(
        world.outside.valid,
        BTreeSet::from([1, 2]),
        "issuer tokens stay"
    );
    assert!(
        world.mounted.is_some() && world.versioned.len() == 2,
        "Secrets stay"
    );
}

#[test]
fn deletion_without_our_finalizer_plans_nothing() {
    let mut world = World::steady(monthly(), t0());
    world.has_finalizer = false;
    world.deleting = true;
    assert_eq!(steps_of(&world.plan(t0())), []);
}

// ----------------------------------------------------------------------------------------------
// Crashes between steps
// ----------------------------------------------------------------------------------------------

/// Situations that plan several steps, each a world and the moment it is reconciled.
fn busy_situations() -> Vec<(&'static str, World, DateTime<Utc>)> {
    let mut out = Vec::new();
    let with_targets = || {
        spec(json!({
            "rotation": { "every": "720h", "gracePeriod": "1h" },
            "restartTargets": [ { "kind": "Deployment", "name": "agent" } ],
        }))
    };
    out.push(("first pass", World::new(with_targets()), t0()));
    let mut world = World::new(with_targets());
    world.annotate(ROTATE_ANNOTATION, "at-creation");
    out.push(("first pass with a rotate annotation", world, t0()));

    out.push((
        "scheduled rotation",
        World::steady(with_targets(), t0()),
        t0() + hours(720),
    ));

    let mut world = World::steady(with_targets(), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    out.push(("manual rotation", world, t0() + hours(1)));

    let mut world = World::steady(with_targets(), t0());
    world.spec.token.bytes = 48;
    out.push(("spec change", world, t0() + hours(1)));

    let mut world = World::steady(with_targets(), t0());
    world.annotate(REVOKE_VERSION_ANNOTATION, "1");
    out.push(("revoke the current version", world, t0() + hours(1)));

    let (mut world, t1) = rotated_once();
    world.spec.restart_targets = with_targets().restart_targets;
    world.annotate(ROTATE_ANNOTATION, "second");
    out.push(("rotation during grace", world, t1 + minutes(10)));

    let (world, t1) = rotated_once();
    out.push(("grace ends", world, t1 + hours(1)));

    let (mut world, t1) = rotated_once();
    world.spec.rotation.grace_period = "0".into();
    world.annotate(ROTATE_ANNOTATION, "second");
    out.push(("rotation without grace", world, t1 + minutes(10)));

    let mut world = World::steady(with_targets(), t0());
    world.mounted = None;
    world.versioned.clear();
    out.push(("token lost", world, t0() + hours(1)));

    let (mut world, t1) = rotated_once();
    world.versioned.remove(&2);
    world.annotate(ROTATE_ANNOTATION, "second");
    out.push(("record deleted, then a rotation", world, t1 + minutes(10)));

    let (mut world, t1) = rotated_once();
    world
        .spec
        .secret_template
        .labels
        .insert("team".into(), "a".into());
    world.spec.environment = Some("staging".into());
    out.push(("environment and template change", world, t1 + minutes(10)));

    let (mut world, t1) = rotated_once();
    world.deleting = true;
    out.push(("deletion", world, t1 + minutes(10)));
    out
}

#[test]
fn every_crash_point_converges_without_minting_twice() {
    for (name, world, now) in busy_situations() {
        let mut clean = world.clone();
        clean.converge(now);
        let plan = world.plan(now);
        for crash_after in 0..=plan.steps.len() {
            let mut crashed = world.clone();
            crashed.crash(now, crash_after);
            // The operator comes back a little later.
            crashed.converge(now + secs(5));
            let context = format!("{name}, crash after {crash_after} of {:?}", plan.steps);
            assert_eq!(crashed.outside.minted, clean.outside.minted, "{context}");
            assert_eq!(crashed.outside.valid, clean.outside.valid, "{context}");
            assert_eq!(crashed.mounted, clean.mounted, "{context}");
            assert_eq!(
                crashed.versioned.keys().collect::<Vec<_>>(),
                clean.versioned.keys().collect::<Vec<_>>(),
                "{context}"
            );
            let restarted = |w: &World| w.outside.restarts.iter().copied().collect::<BTreeSet<_>>();
            assert_eq!(
                restarted(&crashed),
                restarted(&clean),
                "{context}: every cutover restarts"
            );
            assert_eq!(crashed.gone, clean.gone, "{context}");
            if let (Some(a), Some(b), false) = (&crashed.status, &clean.status, clean.gone) {
                let states = |s: &WorkspaceTokenStatus| {
                    s.versions
                        .iter()
                        .map(|v| (v.version, v.state))
                        .collect::<Vec<_>>()
                };
                assert_eq!(states(a), states(b), "{context}");
                assert_eq!(a.current_version, b.current_version, "{context}");
                assert_eq!(a.last_rotate_request, b.last_rotate_request, "{context}");
            }
        }
    }
}

#[test]
fn every_situation_settles_in_one_pass_then_plans_nothing() {
    for (name, mut world, now) in busy_situations() {
        let busy = world.converge(now);
        let steps: Vec<_> = busy.iter().map(|p| &p.steps).collect();
        assert_eq!(busy.len(), 1, "{name}: {steps:#?}");
    }
}

#[test]
fn crash_after_mint_adopts_pending_version_without_minting() {
    let mut world = World::steady(monthly(), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    let now = t0() + hours(1);
    world.crash(now, 1); // S-v2 exists, S still at v1, status says v1
    assert!(world.versioned.contains_key(&2));
    assert_eq!(world.mounted.as_ref().and_then(|m| m.version), Some(1));
    let plan = world.plan(now);
    assert_eq!(steps_of(&plan), [write(2, Some(1), MountedWrite::Cutover)]);
    assert_eq!(
        plan.rotate_request.as_deref(),
        Some("now"),
        "the request is answered by v2"
    );
    // Adopted later (the operator was down), the grace period counts from the adoption.
    let later = world.plan(now + hours(3));
    assert_eq!(steps_of(&later), [write(2, Some(1), MountedWrite::Cutover)]);
    assert_eq!(later.versions[&1].retire_at, Some(now + hours(4)));
    world.converge(now);
    assert_eq!(world.outside.minted, [1, 2]);
    assert_eq!(world.status().current_version, Some(2));

    // A first pass that dies after minting: no status at all, no S.
    let mut fresh = World::new(monthly());
    fresh.crash(t0(), 2);
    assert_eq!(
        (fresh.status.as_ref(), fresh.mounted.as_ref()),
        (None, None)
    );
    let plan = fresh.plan(t0() + secs(5));
    assert_eq!(steps_of(&plan), [write(1, None, MountedWrite::Cutover)]);
}

#[test]
fn crash_after_cutover_before_status_write_does_not_rotate_again() {
    let mut world = World::steady(monthly(), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    let now = t0() + hours(1);
    world.crash(now, 2); // S at v2, status still says v1 and has not seen the request
    assert_eq!(world.status().current_version, Some(1));
    let plan = world.plan(now + secs(1));
    assert_eq!(
        steps_of(&plan),
        [],
        "the cutover already answered the rotate request"
    );
    assert_eq!(plan.current, Some(2));
    assert_eq!(plan.versions[&1].state, VersionState::Retiring);
    assert_eq!(plan.rotate_request.as_deref(), Some("now"));
    world.converge(now + secs(1));
    assert_eq!(world.outside.minted, [1, 2]);
}

#[test]
fn crash_after_revoke_before_status_write_converges() {
    let (mut world, t1) = rotated_once();
    let retire_at = t1 + hours(1);
    let plan = world.plan(retire_at);
    let revoked_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::Revoke { .. }))
        .expect("a revoke");
    world.crash(retire_at, revoked_at + 1);
    assert_eq!(
        world.state_of(1),
        Some(VersionState::Retiring),
        "status did not see it"
    );
    let plan = world.plan(retire_at + secs(5));
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })));
    assert_eq!(plan.current, Some(2));
    assert_eq!(
        plan.versions[&1].state,
        VersionState::Revoked,
        "history keeps v1"
    );
    world.converge(retire_at + secs(5));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn crash_after_status_write_plans_nothing() {
    for (name, mut world, now) in busy_situations() {
        world.pass(now);
        if world.gone {
            continue;
        }
        // Another pass may tidy up (metadata, a finalizer), but never rotates again.
        let rest = world.converge(now);
        assert!(
            rest.len() <= 1,
            "{name}: {:#?}",
            rest.iter().map(|p| &p.steps).collect::<Vec<_>>()
        );
        for plan in rest {
            assert!(
                !plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })),
                "{name}: {plan:#?}"
            );
        }
        let plan = world.plan(now + secs(1));
        assert_eq!(steps_of(&plan), [], "{name}");
    }
}

#[test]
fn restart_targets_restarted_at_cutover_and_after_a_crash_before_status() {
    let targets = || {
        spec(json!({
            "rotation": { "every": "720h" },
            "restartTargets": [ { "kind": "Deployment", "name": "agent" }, { "kind": "StatefulSet", "name": "db" } ],
        }))
    };
    let mut world = World::steady(targets(), t0());
    assert_eq!(world.outside.restarts, [1], "the first cutover restarts");
    let plan = world.plan(t0() + hours(720));
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::Schedule),
            write(2, Some(1), MountedWrite::Cutover),
            Step::RestartTargets { version: 2 },
        ]
    );
    world.converge(t0() + hours(720));
    assert_eq!(world.outside.restarts, [1, 2]);
    // Drift repair is not a cutover: no restart.
    world.mounted = None;
    world.converge(t0() + hours(721));
    assert_eq!(world.outside.restarts, [1, 2]);

    // A crash right after S moved, before the restart and status: the next pass restarts.
    let mut world = World::steady(targets(), t0());
    let plan = world.plan(t0() + hours(720));
    let cutover = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::WriteMounted { .. }))
        .expect("cutover");
    world.crash(t0() + hours(720), cutover + 1);
    let plan = world.plan(t0() + hours(720) + secs(1));
    assert_eq!(steps_of(&plan), [Step::RestartTargets { version: 2 }]);
    world.converge(t0() + hours(720) + secs(1));
    assert_eq!(world.outside.restarts, [1, 2]);
}

// ----------------------------------------------------------------------------------------------
// Metadata
// ----------------------------------------------------------------------------------------------

#[test]
fn desired_metadata_carries_ownership_version_environment_and_template() {
    let spec = spec(json!({
        "environment": "staging",
        "secretTemplate": { "labels": { "team": "a" }, "annotations": { "owner": "platform" } },
    }));
    let versioned = desired_metadata(&spec, NAME, Some(3));
    let labels: Vec<_> = versioned
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            (MANAGED_BY_LABEL, "tokenwarden"),
            ("team", "a"),
            (ENVIRONMENT_LABEL, "staging"),
            (TOKEN_LABEL, NAME),
            (VERSION_LABEL, "3"),
        ]
    );
    assert_eq!(
        versioned.annotations.get("owner").map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        versioned
            .annotations
            .get(TEMPLATE_KEYS_ANNOTATION)
            .map(String::as_str),
        Some("l:team,a:owner")
    );
    let mounted = desired_metadata(&spec, NAME, None);
    assert!(!mounted.labels.contains_key(VERSION_LABEL));
}

#[test]
fn metadata_is_current_when_every_desired_key_matches_and_no_stale_environment_lingers() {
    let desired = desired_metadata(
        &spec(json!({ "secretTemplate": { "labels": { "team": "a" } } })),
        NAME,
        None,
    );
    let with = |f: fn(&mut SecretMetadata)| {
        let mut m = desired.clone();
        f(&mut m);
        m
    };
    let table: [(&str, SecretMetadata, bool); 5] = [
        ("exactly desired", desired.clone(), true),
        (
            "extra keys of others",
            with(|m| {
                m.labels
                    .insert("kubectl.kubernetes.io/x".into(), "y".into());
                m.annotations
                    .insert(TOKEN_SHA256_ANNOTATION.into(), "abc".into());
            }),
            true,
        ),
        (
            "a template label changed",
            with(|m| {
                m.labels.insert("team".into(), "b".into());
            }),
            false,
        ),
        (
            "ownership label missing",
            with(|m| {
                m.labels.remove(MANAGED_BY_LABEL);
            }),
            false,
        ),
        (
            "environment label no longer wanted",
            with(|m| {
                m.labels.insert(ENVIRONMENT_LABEL.into(), "staging".into());
            }),
            false,
        ),
    ];
    for (what, actual, current) in table {
        assert_eq!(metadata_current(&actual, &desired), current, "{what}");
    }
}

// ----------------------------------------------------------------------------------------------
// Random histories
// ----------------------------------------------------------------------------------------------

/// xorshift64: deterministic, so a failing history can be replayed from its seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

#[test]
fn random_histories_keep_the_invariants() {
    for seed in 1..=1000u64 {
        let mut history = Vec::new();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            random_history(seed, &mut history)
        }));
        if let Err(panic) = run {
            eprintln!("seed {seed}, events {history:?}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Time passing, requests, spec edits, Secrets edited or deleted by hand, suspends and crashes
/// in a random order; then the WorkspaceToken must settle in a converged state.
fn random_history(seed: u64, history: &mut Vec<u64>) {
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut world = World::new(spec(json!({
        "rotation": { "every": "24h", "gracePeriod": "1h" },
        "restartTargets": [ { "kind": "Deployment", "name": "agent" } ],
    })));
    let mut now = t0();
    let mut status_lost = false;
    let small = |n: u64| i64::try_from(n).expect("small");
    for _ in 0..60 {
        let event = dice.roll(15);
        history.push(event);
        match event {
            0 => now += minutes(small(dice.roll(180))),
            1 => now += hours(small(dice.roll(48))),
            2 => {
                let value = format!("r{}", dice.roll(1000));
                world.annotate(ROTATE_ANNOTATION, &value);
            }
            3 => {
                let newest = world.outside.minted.last().copied().unwrap_or(0);
                let version = dice.roll(u64::from(newest) + 2).to_string();
                world.annotate(REVOKE_VERSION_ANNOTATION, &version);
            }
            4 => world.spec.token.bytes = 16 + u32::try_from(dice.roll(49)).expect("small"),
            5 => {
                let grace = ["0", "10m", "1h"][usize::try_from(dice.roll(3)).expect("small")];
                world.spec.rotation.grace_period = grace.into();
            }
            6 => world.mounted = None,
            7 if !status_lost => {
                // A record deleted by hand. (One deleted before any status recorded it leaves
                // nothing that knows its version: the planner cannot do better than mint over
                // the number, so that double fault is not part of the game.)
                let known: Vec<u32> = world
                    .versioned
                    .keys()
                    .copied()
                    .filter(|n| {
                        let versions = world.status.as_ref().map(|s| s.versions.as_slice());
                        versions.unwrap_or_default().iter().any(|v| v.version == *n)
                    })
                    .collect();
                if !known.is_empty() {
                    let i = usize::try_from(dice.roll(known.len() as u64)).expect("small");
                    world.versioned.remove(&known[i]);
                }
            }
            8 if !status_lost => {
                if let Some(m) = world.mounted.as_mut() {
                    m.token_sha256 = Some(format!("sha-edited-{}", dice.roll(1000)));
                }
            }
            9 => world.spec.suspend = !world.spec.suspend,
            10 => {
                let steps = world.plan(now).steps.len() as u64;
                let after = usize::try_from(dice.roll(steps + 1)).expect("small");
                world.crash(now, after);
            }
            // historyLimit 0 would let status forget an orphan newer than the current version
            // (status trims every revoked one), and with it that its number was used.
            11 => world.spec.history_limit = 1 + u32::try_from(dice.roll(2)).expect("small"),
            12 if dice.roll(4) == 0 && !world.spec.suspend && world.foreign.is_empty() => {
                // Restored from a backup without status, taken at rest. From then on, records
                // deleted or S edited by hand would leave nothing that knows the truth: not
                // part of the game.
                world.converge(now);
                // Only while the newest version ever minted is still live: a backup without
                // status taken after that (e.g. a newer one was orphaned) forgets its number.
                if world.outside.minted.last() == world.versioned.keys().last() {
                    world.status = None;
                    status_lost = true;
                }
            }
            13 if dice.roll(3) == 0 => {
                // Someone else's Secret under one of our names, for a while.
                world.foreign = match world.foreign.is_empty() {
                    true => vec![NAME.to_string()],
                    false => Vec::new(),
                };
            }
            _ => {
                world.pass(now);
            }
        }
    }
    world.spec.suspend = false;
    world.foreign.clear();
    world.converge(now);
    if dice.roll(2) == 0 {
        world.deleting = true;
        world.converge(now + secs(1));
        assert!(world.gone);
        assert_eq!(
            world.outside.valid,
            BTreeSet::new(),
            "deletion revokes everything"
        );
        assert_eq!((world.mounted.as_ref(), world.versioned.len()), (None, 0));
    }
}

// ----------------------------------------------------------------------------------------------
// The HTTP issuer: verify before cutover, reclaim a cut-short mint, revoke after use
// ----------------------------------------------------------------------------------------------

fn platform(after_use: bool) -> WorkspaceTokenSpec {
    spec(json!({
        "rotation": { "every": "720h", "gracePeriod": "1h" },
        "issuer": { "http": {
            "url": "http://platform:8080", "revokeAfterUse": after_use,
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
        } }
    }))
}

#[test]
fn http_token_is_verified_before_its_cutover() {
    let world = World::new(platform(false));
    let plan = world.plan(t0());
    assert_eq!(
        steps_of(&plan),
        [
            Step::AddFinalizer,
            mint(1, RotationReason::Initial),
            Step::Verify { version: 1 },
            write(1, None, MountedWrite::Cutover),
        ]
    );
}

#[test]
fn local_tokens_need_no_verification() {
    let plan = World::new(monthly()).plan(t0());
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Verify { .. })));
}

#[test]
fn a_pending_http_version_is_verified_then_adopted_and_a_verified_one_just_adopted() {
    let mut world = World::steady(platform(false), t0());
    // What a pass that died after the mint left: S-v2 unverified, S at v1.
    let mut pending = record(2);
    pending.verified = false;
    pending.spec_hash = Some(spec_hash(&world.spec));
    world.versioned.insert(2, pending);
    world.outside.valid.insert(2);
    let plan = world.plan(t0() + hours(1));
    assert_eq!(
        steps_of(&plan)[..2],
        [
            Step::Verify { version: 2 },
            write(2, Some(1), MountedWrite::Cutover)
        ]
    );
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })),
        "adopted, not minted"
    );

    // Verified already (the pass died after verification): straight to the cutover.
    let mut world = World::steady(platform(false), t0());
    let mut pending = record(2);
    pending.spec_hash = Some(spec_hash(&world.spec));
    world.versioned.insert(2, pending);
    world.outside.valid.insert(2);
    let plan = world.plan(t0() + hours(1));
    assert_eq!(steps_of(&plan)[0], write(2, Some(1), MountedWrite::Cutover));
}

#[test]
fn a_failed_verification_revokes_nothing_and_keeps_the_current_token() {
    let mut world = World::steady(platform(false), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    let plan = world.plan(t0() + hours(1));
    // Apply dies at Verify (the platform refused): only the mint happened.
    let verify_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::Verify { .. }))
        .expect("Verify");
    world.apply(&plan, t0() + hours(1), verify_at);
    assert_eq!(
        world.mounted.as_ref().unwrap().version,
        Some(1),
        "S still serves v1"
    );
    assert!(
        world.outside.valid.contains(&1),
        "v1 not revoked under an unverified v2"
    );
    // The next pass retries the verification of the same v2 and mints nothing new.
    let plan = world.plan(t0() + hours(1) + minutes(1));
    assert_eq!(steps_of(&plan)[0], Step::Verify { version: 2 });
}

#[test]
fn a_mint_cut_short_by_a_crash_revokes_the_tokens_no_secret_holds() {
    let mut world = World::steady(platform(false), t0());
    // The platform minted v2, the operator died before S-v2 was written.
    world.outside.valid.insert(2);
    world.mint_intent = Some(MintIntent {
        version: 2,
        since: t0() + hours(1),
    });
    let plan = world.plan(t0() + hours(1) + minutes(1));
    assert!(plan.steps.contains(&Step::ReclaimOrphans {
        since: t0() + hours(1)
    }));
    world.converge(t0() + hours(1) + minutes(1));
    assert_eq!(
        world.outside.valid,
        BTreeSet::from([1]),
        "the unheld token is revoked"
    );
    assert!(world.mint_intent.is_none());
}

#[test]
fn mint_intent_round_trips_through_its_annotation() {
    let intent = MintIntent {
        version: 7,
        since: t0(),
    };
    assert_eq!(MintIntent::parse(&intent.render()), Some(intent));
    for bad in [
        "",
        "7@2026-01-01T00:00:00Z",
        "v7",
        "v7@yesterday",
        "vx@2026-01-01T00:00:00Z",
    ] {
        assert_eq!(MintIntent::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn revoke_after_use_polls_and_revokes_once_a_consumer_used_the_new_token() {
    let mut world = World::steady(platform(true), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    let t1 = t0() + hours(1);
    world.converge(t1);
    let plan = world.plan(t1 + minutes(1));
    assert_eq!(steps_of(&plan), [Step::RevokeIfUsed { version: 1 }]);
    assert!(
        plan.requeue_after.unwrap() <= std::time::Duration::from_secs(USAGE_POLL_SECONDS as u64)
    );
    // Not used yet: v1 stays Retiring.
    world.converge(t1 + minutes(1));
    assert!(world.outside.valid.contains(&1));
    // A consumer used v2 after the cutover: v1 goes before its grace ends.
    world.outside.used_after_cutover = true;
    world.converge(t1 + minutes(2));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn revoke_after_use_still_revokes_when_the_grace_period_ends() {
    let mut world = World::steady(platform(true), t0());
    world.annotate(ROTATE_ANNOTATION, "now");
    let t1 = t0() + hours(1);
    world.converge(t1);
    world.converge(t1 + hours(1));
    assert_eq!(
        world.outside.valid,
        BTreeSet::from([2]),
        "unused, but the grace period is over"
    );
}
