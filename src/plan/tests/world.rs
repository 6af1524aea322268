//! The simulated world the planner's rules are checked in: one WorkspaceToken, its Secrets,
//! an imaginary issuer, and the apply and status sides played step by step.

use super::*;

pub(super) const NAME: &str = "agent-alpha";
pub(super) const UID: &str = "5f0c7d2e-1f5b-4c1e-9a51-0d1c2b3a4f5e";
/// More passes than this without reaching "nothing to do" is a planner that does not converge.
pub(super) const MAX_PASSES: usize = 4;

// ----------------------------------------------------------------------------------------------
// Fixtures
// ----------------------------------------------------------------------------------------------

/// `2026-01-05 00:00` (a Monday) and friends, in UTC.
pub(super) fn at(s: &str) -> DateTime<Utc> {
    let parse = |format| chrono::NaiveDateTime::parse_from_str(s, format);
    let naive = parse("%Y-%m-%d %H:%M").or_else(|_| parse("%Y-%m-%d %H:%M:%S"));
    naive.expect("test timestamp").and_utc()
}

pub(super) fn t0() -> DateTime<Utc> {
    at("2026-01-05 00:00")
}

pub(super) fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

pub(super) fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

pub(super) fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A spec from the fields a test cares about, with the API's defaults for the rest.
pub(super) fn spec(fields: serde_json::Value) -> WorkspaceTokenSpec {
    let mut value = json!({ "workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b" });
    merge(&mut value, fields);
    serde_json::from_value(value).expect("a valid spec")
}

/// JSON merge patch semantics (RFC 7386): objects merge, `null` removes, the rest replaces.
pub(super) fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
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
pub(super) fn monthly() -> WorkspaceTokenSpec {
    spec(json!({ "rotation": { "every": "720h", "gracePeriod": "1h" } }))
}

/// What the outside world saw: the issuer's valid tokens and the other side effects.
#[derive(Clone, Debug, Default)]
pub(super) struct Outside {
    /// Every Mint, in order (a version minted twice shows up twice).
    pub(super) minted: Vec<u32>,
    /// Versions whose token the issuer still accepts.
    pub(super) valid: BTreeSet<u32>,
    pub(super) revoked: Vec<(u32, RevokeReason)>,
    pub(super) restarts: Vec<u32>,
    pub(super) released: bool,
    pub(super) serial: u32,
    /// The platform shows the current token used by a consumer after its cutover.
    pub(super) used_after_cutover: bool,
    /// The platform's `last_used_at` of each version's token (absent: never used).
    pub(super) last_used: BTreeMap<u32, DateTime<Utc>>,
    /// The platform does not answer a usage listing, for this reason.
    pub(super) usage_unreadable: Option<String>,
    /// Versions whose use the planner asked the platform about, in order.
    pub(super) usage_asked: Vec<u32>,
    /// Live platform tokens of the workspace that no version of this token holds.
    pub(super) others: Vec<crate::issuer::http::PlatformToken>,
    /// Of those, the prefixes some other WorkspaceToken's version holds.
    pub(super) held_by_others: BTreeSet<String>,
    /// How the platform answers an inventory listing: complete unless this says
    /// `partial`, `error` or `refused` (HTTP 401 to the bearer).
    pub(super) listing_fault: Option<&'static str>,
    /// The versions an inventory listed with, in order.
    pub(super) inventory_asked: Vec<u32>,
    /// The platform ids of the unmanaged tokens revoked, in order.
    pub(super) unmanaged_revoked: Vec<String>,
}

/// One WorkspaceToken and the cluster around it, as the planner observes it.
#[derive(Clone, Debug)]
pub(super) struct World {
    pub(super) spec: WorkspaceTokenSpec,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) status: Option<WorkspaceTokenStatus>,
    pub(super) versioned: BTreeMap<u32, VersionedSecret>,
    pub(super) mounted: Option<MountedSecret>,
    pub(super) foreign: Vec<String>,
    pub(super) has_finalizer: bool,
    pub(super) deleting: bool,
    /// The finalizer was removed while deleting: the object is gone.
    pub(super) gone: bool,
    /// An HTTP mint cut short by a crash (the annotation a real pass would have left).
    pub(super) mint_intent: Option<MintIntent>,
    pub(super) issuer_problem: Option<crate::plan::IssuerProblem>,
    /// The restart targets' rollouts as the watches saw them (absent: not seen yet).
    pub(super) rollouts: BTreeMap<(crate::api::RestartKind, String), Rollout>,
    /// The workloads of the namespace that read `S`, as the consumer index lists them.
    pub(super) consumers: Vec<crate::consumers::Consumer>,
    pub(super) inventory: Option<crate::plan::InventoryInput>,
    pub(super) versions_seen: Option<u32>,
    pub(super) outside: Outside,
}

impl World {
    pub(super) fn new(spec: WorkspaceTokenSpec) -> World {
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
            issuer_problem: None,
            rollouts: BTreeMap::new(),
            consumers: Vec::new(),
            inventory: None,
            versions_seen: None,
            outside: Outside::default(),
        }
    }

    /// A WorkspaceToken created at `now` and reconciled until there is nothing left to do.
    pub(super) fn steady(spec: WorkspaceTokenSpec, now: DateTime<Utc>) -> World {
        let mut world = World::new(spec);
        world.converge(now);
        world
    }

    pub(super) fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub(super) fn observed(&self) -> Observed<'_> {
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
            issuer_problem: self.issuer_problem.clone(),
            rollouts: self.rollouts.clone(),
            usage: None,
            consumers: Some(self.consumers.clone()),
            inventory: self.inventory.clone(),
            versions_seen: self.versions_seen,
        }
    }

    /// A pass's plan, with the platform asked when the planner needs its answer (as the
    /// controller does: plan, ask, plan again).
    pub(super) fn plan(&self, now: DateTime<Utc>) -> Plan {
        self.clone().plan_asking(now).0
    }

    /// The plan, and the version whose use the platform was asked about on the way.
    fn plan_asking(&mut self, now: DateTime<Utc>) -> (Plan, Option<u32>) {
        let first = plan(&self.observed(), now);
        let (second, asked) = match first.usage_query {
            None => (first, None),
            Some(version) => {
                let usage = match &self.outside.usage_unreadable {
                    Some(why) => Err(why.clone()),
                    None => Ok(Usage {
                        last_used_at: self.outside.last_used.get(&version).copied(),
                        checked_at: now,
                    }),
                };
                let mut observed = self.observed();
                observed.usage = Some(UsageReading { version, usage });
                (plan(&observed, now), Some(version))
            }
        };
        let Some(bearer) = second.inventory_query else {
            self.check(&second);
            return (second, asked);
        };
        // The inventory: list, keep the listing as the group's, plan again with it.
        self.outside.inventory_asked.push(bearer);
        let reading = std::sync::Arc::new(self.listing(bearer, now));
        let input = self
            .inventory
            .as_mut()
            .expect("an inventory query has a group");
        input.latest = Some(reading);
        input.due_at = now + minutes(5);
        let mut observed = self.observed();
        if let Some(input) = observed.inventory.as_mut() {
            input.fresh = true;
        }
        if let Some(version) = asked {
            let last_used_at = self.outside.last_used.get(&version).copied();
            let usage = Ok(Usage {
                last_used_at,
                checked_at: now,
            });
            observed.usage = Some(UsageReading { version, usage });
        }
        let third = plan(&observed, now);
        self.check(&third);
        (third, asked)
    }

    /// What the platform answers an inventory listing made with `bearer`'s token at `now`.
    fn listing(&self, bearer: u32, now: DateTime<Utc>) -> crate::plan::Reading {
        use crate::plan::{Failure, Listing, Reading};
        let failed = |why: &str, refused| Reading {
            listed_at: now,
            outcome: Err(Failure {
                why: why.into(),
                refused,
            }),
        };
        match self.outside.listing_fault {
            Some("error") => return failed("inventory: platform answered HTTP 500", None),
            Some("refused") => {
                let refused = Some((UID.to_string(), bearer));
                return failed("the platform refused the current token (HTTP 401)", refused);
            }
            _ => {}
        }
        let ours = (self.outside.valid.iter()).filter_map(|v| {
            let record = self.versioned.get(v)?;
            Some(crate::issuer::http::PlatformToken {
                id: format!("tok-v{v}"),
                prefix: record.token_prefix.clone()?,
                created_at: record.created_at?,
                last_used_at: None,
            })
        });
        let tokens: Vec<_> = ours.chain(self.outside.others.iter().cloned()).collect();
        let held: BTreeSet<String> = (self.versioned.values())
            .filter_map(|v| v.token_prefix.clone())
            .collect();
        Reading {
            listed_at: now,
            outcome: Ok(Listing {
                tokens,
                complete: self.outside.listing_fault != Some("partial"),
                held,
                held_elsewhere: self.outside.held_by_others.clone(),
                in_flight: vec![(now - secs(10), DateTime::<Utc>::MAX_UTC)],
            }),
        }
    }

    pub(super) fn status(&self) -> &WorkspaceTokenStatus {
        self.status.as_ref().expect("status was written")
    }

    pub(super) fn state_of(&self, version: u32) -> Option<VersionState> {
        let versions = &self.status().versions;
        versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.state)
    }

    pub(super) fn version_status(&self, version: u32) -> &VersionStatus {
        let versions = &self.status().versions;
        versions
            .iter()
            .find(|v| v.version == version)
            .expect("version in status")
    }

    pub(super) fn sha_of(&self, version: u32) -> Option<String> {
        self.versioned
            .get(&version)
            .and_then(|v| v.token_sha256.clone())
    }

    /// Runs the first `steps` steps of `plan` like the apply side would; returns the pass's
    /// journal (what status learns from it).
    pub(super) fn apply(&mut self, plan: &Plan, now: DateTime<Utc>, steps: usize) -> Journal {
        let mut journal = Journal::default();
        for step in plan.steps.iter().take(steps) {
            let done = self.apply_step(step, now);
            journal.done.extend(done);
        }
        journal
    }

    /// One step, as the apply side does it; what it did.
    pub(super) fn apply_step(&mut self, step: &Step, now: DateTime<Utc>) -> Vec<Done> {
        match step {
            Step::Verify { version } => {
                assert!(
                    self.spec.issuer_ref.is_some(),
                    "Verify with the local issuer"
                );
                let record = self.versioned.get_mut(version).expect("Verify reads S-vN");
                record.verified = true;
                record.verified_at = Some(now);
                vec![Done::Verified {
                    version: *version,
                    issuer_token_id: Some(format!("tok-v{version}")),
                }]
            }
            Step::ReclaimOrphans { .. } => {
                // Tokens the issuer accepts that no Secret holds are the window's orphans.
                let held: BTreeSet<u32> = self.versioned.keys().copied().collect();
                self.outside.valid.retain(|v| held.contains(v));
                self.mint_intent = None;
                vec![Done::OrphansReclaimed]
            }
            Step::RevokeUnmanaged {
                id,
                prefix,
                created_at,
            } => {
                self.outside.others.retain(|t| &t.id != id);
                self.outside.unmanaged_revoked.push(id.clone());
                vec![Done::UnmanagedRevoked {
                    prefix: prefix.clone(),
                    created_at: *created_at,
                }]
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
                    verified: false,
                    verified_at: None,
                    created_at: Some(now),
                    metadata: desired_metadata(&self.spec, NAME, Some(*version)),
                };
                assert!(
                    !self.versioned.contains_key(version),
                    "Mint {{ version: {version} }} over an existing record"
                );
                self.versioned.insert(*version, record.clone());
                // Minted where spec.issuerRef points now, as status then records it.
                let issuer = (self.spec.issuer_ref.as_ref()).map(|r| crate::api::IssuerIdentity {
                    kind: r.kind,
                    name: r.name.clone(),
                    uid: format!("uid-of-{}", r.name),
                });
                vec![Done::Minted {
                    version: *version,
                    token: TokenFacts {
                        issuer,
                        ..facts(&record)
                    },
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
                    verified: true,
                    verified_at: None,
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
    pub(super) fn revoked(&self, version: u32) -> Vec<Done> {
        let at_issuer = self
            .spec
            .issuer_ref
            .is_some()
            .then_some(Done::RevokedAtIssuer {
                version,
                impossible: false,
            });
        at_issuer
            .into_iter()
            .chain([Done::Revoked { version }])
            .collect()
    }

    /// The status a pass writes: `status::render` itself, minus the conditions.
    pub(super) fn render(&self, plan: &Plan, journal: &Journal) -> WorkspaceTokenStatus {
        WorkspaceTokenStatus {
            conditions: Vec::new(),
            ..self.render_with_conditions(plan, journal)
        }
    }

    pub(super) fn render_with_conditions(
        &self,
        plan: &Plan,
        journal: &Journal,
    ) -> WorkspaceTokenStatus {
        let mut wst = crate::api::WorkspaceToken::new(NAME, self.spec.clone());
        wst.metadata.generation = Some(1);
        wst.status = self.status.clone();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        crate::status::render(&wst, plan, journal, now)
    }

    /// One full pass: plan, apply every step, write status.
    pub(super) fn pass(&mut self, now: DateTime<Utc>) -> Plan {
        let (plan, asked) = self.plan_asking(now);
        self.outside.usage_asked.extend(asked);
        let journal = self.apply(&plan, now, plan.steps.len());
        if !self.gone {
            self.status = Some(self.render(&plan, &journal));
        }
        plan
    }

    /// A pass that dies after `steps` steps, before status is written.
    /// Deleted with no finalizer of ours: the garbage collector deletes the Secrets by their
    /// ownerReferences, and a local token was valid only while a Secret held it.
    fn collect_garbage(&mut self) {
        assert!(
            self.spec.issuer_ref.is_none(),
            "a token minted at a platform always has the finalizer"
        );
        self.gone = true;
        self.mounted = None;
        self.versioned.clear();
        self.outside.valid.clear();
    }

    pub(super) fn crash(&mut self, now: DateTime<Utc>, steps: usize) -> Plan {
        let plan = self.plan(now);
        self.apply(&plan, now, steps);
        plan
    }

    /// Passes at `now` until one plans nothing and would leave status as it is. Returns the
    /// plans that had steps.
    pub(super) fn converge(&mut self, now: DateTime<Utc>) -> Vec<Plan> {
        let mut busy = Vec::new();
        for _ in 0..MAX_PASSES {
            if self.gone {
                return busy;
            }
            if self.deleting && !self.has_finalizer {
                self.collect_garbage();
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
    pub(super) fn check(&self, plan: &Plan) {
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
    pub(super) fn check_converged(&self) {
        if self.deleting || !self.foreign.is_empty() || self.spec.suspend {
            return;
        }
        let status = self.status();
        if self.issuer_problem.is_some() && status.current_version.is_none() {
            return; // nothing minted yet, and nothing may be
        }
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
pub(super) fn facts(record: &VersionedSecret) -> TokenFacts {
    TokenFacts {
        token_sha256: record.token_sha256.clone().unwrap_or_default(),
        token_prefix: record.token_prefix.clone().unwrap_or_default(),
        trace_id: record.trace_id.clone().unwrap_or_default(),
        issuer_token_id: None,
        issuer: None,
    }
}

/// When version `n` of a hand-made cluster was minted and went live: a day apart.
pub(super) fn day(n: u32) -> DateTime<Utc> {
    t0() + hours(24 * i64::from(n - 1))
}

pub(super) fn record(version: u32) -> VersionedSecret {
    let spec = monthly();
    VersionedSecret {
        version,
        token_sha256: Some(format!("sha-of-v{version}")),
        token_prefix: Some(format!("wst_{version:04}")),
        trace_id: Some(format!("trace-v{version}")),
        spec_hash: Some(spec_hash(&spec)),
        verified: true,
        verified_at: None,
        created_at: Some(day(version)),
        metadata: desired_metadata(&spec, NAME, Some(version)),
    }
}

/// A hand-made cluster for the `monthly()` spec: the records `S-vN` that exist, what `S`
/// serves as (token, previous-token), and the versions the last status write recorded (the
/// Active one is `currentVersion`; an empty list is no status at all). Every version a status
/// or record mentions was minted at `day(n)` and is still valid at the issuer unless Revoked.
pub(super) fn cluster(
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
                issuer_token_id: Some(format!("tok-v{n}")),
                issuer: None,
                retire_held_by: Vec::new(),
                last_used_at: None,
                usage_checked_at: None,
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

pub(super) fn steps_of(plan: &Plan) -> &[Step] {
    &plan.steps
}

pub(super) fn mint(version: u32, reason: RotationReason) -> Step {
    Step::Mint { version, reason }
}

pub(super) fn write(current: u32, previous: Option<u32>, why: MountedWrite) -> Step {
    Step::WriteMounted {
        current,
        previous,
        why,
    }
}

/// The revocations a plan makes.
pub(super) fn revocations(plan: &Plan) -> Vec<&Step> {
    plan.steps
        .iter()
        .filter(|s| matches!(s, Step::Revoke { .. }))
        .collect()
}

pub(super) fn revoke(version: u32, reason: RevokeReason) -> Step {
    Step::Revoke { version, reason }
}

/// Steady at v1 (t0), then rotated by hand to v2 at `t0 + 1d`: v2 Active, v1 Retiring for 1h.
pub(super) fn rotated_once() -> (World, DateTime<Utc>) {
    let mut world = World::steady(monthly(), t0());
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "first");
    world.converge(t1);
    (world, t1)
}
