//! The HTTP issuer: verify before cutover, reclaim a cut-short mint, revoke after use.

use super::*;

// ----------------------------------------------------------------------------------------------
// The HTTP issuer: verify before cutover, reclaim a cut-short mint, revoke after use
// ----------------------------------------------------------------------------------------------

fn platform(after_use: bool) -> WorkspaceTokenSpec {
    spec(json!({
        "rotation": { "every": "720h", "gracePeriod": "1h", "revokeAfterUse": after_use },
        "issuerRef": { "name": "platform" }
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

/// What a pass that died after the mint left: `S-v2` unverified, `S` at v1.
fn minted_unverified() -> World {
    let mut world = World::steady(platform(false), t0());
    let mut pending = record(2);
    pending.verified = false;
    pending.spec_hash = Some(spec_hash(&world.spec));
    world.versioned.insert(2, pending);
    world.outside.valid.insert(2);
    world
}

#[test]
fn a_pending_http_version_is_verified_then_adopted_and_a_verified_one_just_adopted() {
    let world = minted_unverified();
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

// ----------------------------------------------------------------------------------------------
// An issuer that may not be used: nothing minted, the served token stays
// ----------------------------------------------------------------------------------------------

fn unusable(reason: &'static str) -> crate::plan::IssuerProblem {
    crate::plan::IssuerProblem {
        reason,
        message: format!("{reason}: nothing is minted"),
    }
}

#[test]
fn a_new_token_whose_issuer_may_not_be_used_mints_nothing_and_says_why() {
    for reason in ["IssuerNotFound", "IssuerNotReady", "IssuerNotAllowed"] {
        let mut world = World::new(platform(false));
        world.issuer_problem = Some(unusable(reason));
        let plan = world.plan(t0());
        assert_eq!(steps_of(&plan), [Step::AddFinalizer], "{reason}");
        assert!(!plan.readiness.ready);
        assert_eq!(plan.readiness.reason, reason);
        assert_eq!(plan.warnings.len(), 1, "said once, in a Warning");
        assert_eq!(plan.warnings[0].reason, reason);
        world.converge(t0());
        assert!(
            world.versioned.is_empty(),
            "{reason}: no version was minted"
        );
        // Status now carries the reason (the world drops conditions: put them back).
        world.status = Some(world.render_with_conditions(&plan, &Journal::default()));
        let again = world.plan(t0());
        assert!(again.warnings.is_empty(), "said once, not every pass");
    }
}

#[test]
fn an_overdue_rotation_waits_for_its_issuer_without_polling_and_the_token_stays_served() {
    let mut world = World::steady(platform(false), t0());
    world.issuer_problem = Some(unusable("IssuerNotReady"));
    let due = t0() + hours(31 * 24);
    let plan = world.plan(due);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Mint { .. } | Step::Verify { .. })),
        "nothing is minted or sent while the issuer is not Ready: {:?}",
        steps_of(&plan)
    );
    assert_eq!(plan.current, Some(1), "the current token stays served");
    assert_eq!(plan.readiness.reason, "IssuerNotReady");
    assert_eq!(
        plan.requeue_after, None,
        "the issuer's change wakes it, not a timer"
    );
    // The issuer is back: the overdue rotation happens at once.
    world.issuer_problem = None;
    let plan = world.plan(due);
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::Mint { version: 2, .. }))
    );
}

#[test]
fn a_minted_version_waits_for_its_issuer_instead_of_being_revoked_as_an_orphan() {
    let mut world = minted_unverified();
    world.issuer_problem = Some(unusable("IssuerNotReady"));
    let plan = world.plan(t0() + hours(1));
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Revoke { version: 2, .. })),
        "{:?}",
        steps_of(&plan)
    );
    world.issuer_problem = None;
    let plan = world.plan(t0() + hours(1));
    assert_eq!(
        steps_of(&plan)[0],
        Step::Verify { version: 2 },
        "adopted once it is back"
    );
}
