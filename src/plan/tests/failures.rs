//! A step that fails: the status and conditions the pass leaves behind, and what the next
//! passes make of them. Beside the crash at every step (`crash.rs`), a failure at every step:
//! the pass stops there, the controller writes status from the journal, and the operator
//! comes back later.

use super::crash::busy_situations;
use super::*;
use crate::Error;

fn platform_down() -> Error {
    Error::Mint("the platform answered 503".into())
}

impl World {
    /// A pass whose step `failing` fails after the steps before it were done; status is
    /// written as the controller writes it, conditions included.
    fn fail_at(&mut self, now: DateTime<Utc>, failing: usize, error: Error) -> (Plan, Journal) {
        let plan = self.plan(now);
        let mut journal = self.apply(&plan, now, failing);
        journal.failure = Some(error);
        self.status = Some(self.render_with_conditions(&plan, &journal));
        (plan, journal)
    }

    /// Status as a pass that found nothing to do at `now` writes it, conditions included:
    /// the token is served and Ready.
    fn ready_at(&mut self, now: DateTime<Utc>) -> &mut Self {
        let plan = self.plan(now);
        assert!(plan.steps.is_empty(), "settled at {now}: {:?}", plan.steps);
        self.status = Some(self.render_with_conditions(&plan, &Journal::default()));
        assert_eq!(self.condition(READY), ("True", "Active"));
        self
    }

    fn condition(&self, type_: &str) -> (&str, &str) {
        let conditions = &self.status().conditions;
        let c = conditions.iter().find(|c| c.type_ == type_);
        let c = c.unwrap_or_else(|| panic!("a {type_} condition: {conditions:#?}"));
        (c.status.as_str(), c.reason.as_str())
    }

    fn states(&self) -> Vec<(u32, VersionState)> {
        let versions = &self.status().versions;
        versions.iter().map(|v| (v.version, v.state)).collect()
    }
}

/// After a failing step: what Ready says, the current version and the versions' states.
type Expected = (
    &'static str,
    (&'static str, &'static str),
    u32,
    &'static [(u32, VersionState)],
);

/// A rotation during the grace period of the last one, with a restart target: the failing
/// step, then what status says (Ready, currentVersion, the versions' states).
#[test]
fn status_after_a_failure_at_each_step_of_a_rotation() {
    use VersionState::{Active, Pending, Retiring};
    let (mut world, t1) = rotated_once();
    world.spec.restart_targets = spec(json!({
        "restartTargets": [ { "kind": "Deployment", "name": "agent" } ],
    }))
    .restart_targets;
    world.ready_at(t1);
    world.annotate(ROTATE_ANNOTATION, "second");
    let now = t1 + minutes(10);
    assert_eq!(
        steps_of(&world.plan(now)),
        [
            mint(3, RotationReason::Manual),
            write(3, Some(2), MountedWrite::Cutover),
            Step::RestartTargets { version: 3 },
            revoke(1, RevokeReason::Superseded),
        ]
    );
    let table: [Expected; 4] = [
        // Nothing changed: the token served before is still served, and Ready.
        (
            "the mint",
            ("True", "Active"),
            2,
            &[(2, Active), (1, Retiring)],
        ),
        // v3 exists as a pending record, adopted by the next pass; status lists it (with who
        // minted it), so no Secret ever has to tell.
        (
            "the cutover",
            ("True", "Active"),
            2,
            &[(3, Pending), (2, Active), (1, Retiring)],
        ),
        // S serves v3, but its restarts are owed: status does not record the cutover, so
        // the next pass restarts the targets.
        (
            "the restart",
            ("True", "Active"),
            2,
            &[(3, Pending), (2, Active), (1, Retiring)],
        ),
        // The new version serves and its pods restarted: status says so, and v1, whose
        // revocation failed, stays live (Retiring) until a later pass revokes it.
        (
            "the revocation",
            ("True", "Active"),
            3,
            &[(3, Active), (2, Retiring), (1, Retiring)],
        ),
    ];
    for (failing, (what, ready, current, states)) in table.into_iter().enumerate() {
        let mut failed = world.clone();
        failed.fail_at(now, failing, platform_down());
        assert_eq!(failed.condition(READY), ready, "failing at {what}");
        assert_eq!(failed.condition(DEGRADED), ("True", "MintFailed"));
        assert_eq!(failed.status().current_version, Some(current), "{what}");
        assert_eq!(failed.states(), states, "failing at {what}");
        assert_eq!(failed.status().observed_generation, Some(1), "{what}");
    }
}

/// Deletion with the HTTP issuer: a revocation the platform did is recorded even when a later
/// step fails, or the next pass would find no token left to authenticate the call with.
#[test]
fn status_after_a_failure_during_deletion_keeps_what_the_platform_revoked() {
    use VersionState::{Active, Retiring, Revoked};
    let mut world = World::steady(http_spec(), t0());
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "first");
    world.converge(t1);
    world.deleting = true;
    let now = t1 + minutes(10);
    assert_eq!(
        steps_of(&world.plan(now)),
        [
            revoke(1, RevokeReason::Deleted),
            revoke(2, RevokeReason::Deleted),
            Step::DeleteMounted,
            Step::RemoveFinalizer,
        ]
    );
    let table: [(&str, &[(u32, VersionState)]); 3] = [
        ("revoking v1", &[(2, Active), (1, Retiring)]),
        ("revoking v2", &[(2, Active), (1, Revoked)]),
        ("deleting S", &[(2, Revoked), (1, Revoked)]),
    ];
    for (failing, (what, states)) in table.into_iter().enumerate() {
        let mut failed = world.clone();
        let (_, journal) = failed.fail_at(now, failing, platform_down());
        assert_eq!(failed.states(), states, "failing at {what}: {journal:?}");
        assert_eq!(failed.condition(DEGRADED), ("True", "MintFailed"));
        for v in &failed.status().versions {
            let revoked_now = v.state == Revoked && journal.revoked(v.version);
            assert!(
                !revoked_now || v.revoked_at.is_some(),
                "{what}: v{} has its revocation time",
                v.version
            );
        }
    }
}

/// A conflict over a Secret name found by a step (not by the planner) makes the token not
/// Ready, whatever it was before; any other failure keeps a Ready token Ready.
#[test]
fn a_secret_conflict_found_by_a_step_is_not_ready_other_failures_keep_ready() {
    let mut world = World::steady(monthly(), t0());
    world.ready_at(t0());
    let mut rotating = world.clone();
    rotating.annotate(ROTATE_ANNOTATION, "now");
    let conflict = Error::SecretConflict {
        name: "agent-alpha-v2".into(),
    };
    let cases = [
        (conflict, ("False", "SecretConflict")),
        (platform_down(), ("True", "Active")),
    ];
    for (error, ready) in cases {
        let mut failed = rotating.clone();
        let reason = error.reason();
        failed.fail_at(t0() + hours(1), 0, error);
        assert_eq!(failed.condition(READY), ready, "{reason}");
        assert_eq!(failed.condition(DEGRADED), ("True", reason));
    }
}

/// Without a token served before, a failure is not Ready, for the failure's reason.
#[test]
fn a_first_pass_that_fails_is_not_ready_for_the_failures_reason() {
    let mut world = World::new(monthly());
    world.fail_at(t0(), 1, platform_down());
    assert_eq!(world.condition(READY), ("False", "MintFailed"));
    assert_eq!(world.condition(DEGRADED), ("True", "MintFailed"));
    assert_eq!(world.status().current_version, None);
}

/// A pass that succeeds after a failure clears Degraded, and keeps Ready's transition time.
#[test]
fn the_next_success_clears_degraded_and_ready_keeps_its_transition_time() {
    let mut world = World::steady(monthly(), t0());
    world.ready_at(t0());
    let ready_since = |w: &World| {
        let conditions = &w.status().conditions;
        let ready = conditions.iter().find(|c| c.type_ == READY).expect("Ready");
        ready.last_transition_time.clone()
    };
    let before = ready_since(&world);
    world.annotate(ROTATE_ANNOTATION, "now");
    world.fail_at(t0() + hours(1), 0, platform_down());
    assert_eq!(world.condition(DEGRADED), ("True", "MintFailed"));
    let plan = world.plan(t0() + hours(2));
    let journal = world.apply(&plan, t0() + hours(2), plan.steps.len());
    world.status = Some(world.render_with_conditions(&plan, &journal));
    assert_eq!(world.condition(DEGRADED), ("False", "AsExpected"));
    assert_eq!(world.condition(READY), ("True", "Active"));
    assert_eq!(ready_since(&world), before, "Ready never flipped");
    assert_eq!(world.status().current_version, Some(2));
}

/// Every busy situation, failing at every step: the conditions always say what failed, and
/// the operator coming back later converges to where a pass without the failure would have.
#[test]
fn every_failure_point_reports_degraded_then_converges_like_a_clean_pass() {
    for (name, world, now) in busy_situations() {
        let mut clean = world.clone();
        clean.converge(now);
        let steps = world.plan(now).steps;
        for failing in 0..steps.len() {
            let context = format!("{name}, failing at {failing} of {steps:?}");
            let mut failed = world.clone();
            let was_ready = world.status.as_ref().is_some_and(|s| {
                let ready = s.conditions.iter().find(|c| c.type_ == READY);
                ready.is_some_and(|c| c.status == "True")
            });
            failed.fail_at(now, failing, platform_down());
            if failed.gone {
                continue;
            }
            assert_eq!(
                failed.condition(DEGRADED),
                ("True", "MintFailed"),
                "{context}"
            );
            if was_ready {
                assert_eq!(failed.condition(READY).0, "True", "{context}");
            }
            failed.converge(now + secs(5));
            assert_eq!(failed.outside.minted, clean.outside.minted, "{context}");
            assert_eq!(failed.outside.valid, clean.outside.valid, "{context}");
            assert_eq!(failed.mounted, clean.mounted, "{context}");
            assert_eq!(failed.gone, clean.gone, "{context}");
            if let (Some(a), Some(b), false) = (&failed.status, &clean.status, clean.gone) {
                assert_eq!(a.current_version, b.current_version, "{context}");
                let states = |s: &WorkspaceTokenStatus| {
                    let versions = s.versions.iter();
                    versions.map(|v| (v.version, v.state)).collect::<Vec<_>>()
                };
                assert_eq!(states(a), states(b), "{context}");
            }
        }
    }
}

fn http_spec() -> WorkspaceTokenSpec {
    spec(json!({
        "rotation": { "every": "720h", "gracePeriod": "1h" },
        "issuerRef": { "name": "platform" }
    }))
}
