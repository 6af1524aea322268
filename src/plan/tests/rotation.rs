//! The first pass, the steady state, rotation, grace and revocation.

use super::*;

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
            mint(1, RotationReason::Initial),
            write(1, None, MountedWrite::Cutover)
        ],
        "a local token under deletionPolicy Revoke needs no finalizer"
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
        "issuerRef": { "kind": "ClusterTokenIssuer", "name": "platform" }
    }));
    assert_eq!(spec_hash(&monthly()), SPEC_HASH_OF_DEFAULTS);
    assert_eq!(spec_hash(&shaped), SPEC_HASH_OF_SHAPED);
    // Spelling the defaults out is the same spec.
    let explicit = spec(json!({ "token": { "bytes": 32, "encoding": "base64url" } }));
    assert_eq!(spec_hash(&explicit), spec_hash(&monthly()));
}

#[test]
fn the_issuer_named_shapes_the_token_and_revoke_after_use_does_not() {
    let issuer = |kind: &str, name: &str, after_use: bool| {
        spec(json!({
            "issuerRef": { "kind": kind, "name": name },
            "rotation": { "revokeAfterUse": after_use }
        }))
    };
    assert_eq!(
        spec_hash(&issuer("TokenIssuer", "platform", false)),
        spec_hash(&issuer("TokenIssuer", "platform", true))
    );
    let defaulted = spec(json!({ "issuerRef": { "name": "platform" } }));
    assert_eq!(
        spec_hash(&defaulted),
        spec_hash(&issuer("TokenIssuer", "platform", false))
    );
    for elsewhere in [
        issuer("TokenIssuer", "other", false),
        issuer("ClusterTokenIssuer", "platform", false),
        monthly(),
    ] {
        assert_ne!(
            spec_hash(&elsewhere),
            spec_hash(&issuer("TokenIssuer", "platform", false)),
            "another issuer is another token"
        );
    }
}

/// sha256(`{"token":{"bytes":32,"encoding":"base64url"}}`), first 16 hex digits.
const SPEC_HASH_OF_DEFAULTS: &str = "635be3b22bf83056";
/// The same over the sorted, null-free JSON of token, the issuerRef (`Kind/name`), userId and
/// environment.
const SPEC_HASH_OF_SHAPED: &str = "328449ced5910f20";

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

/// The Warning event of a spec problem carries the message Ready carries, once: a pass whose
/// status already says it publishes nothing more, a new problem is said again.
#[test]
fn an_invalid_spec_is_warned_once_with_the_message_ready_carries() {
    let mut world = World::steady(monthly(), t0());
    world.spec.rotation.schedule = Some("0 3 * *".into());
    world.spec.rotation.every = None;
    let plan = world.plan(t0() + hours(1));
    let expected = Warning {
        reason: "InvalidSpec",
        message: plan.readiness.message.clone(),
    };
    assert_eq!(plan.warnings, [expected]);
    world.status = Some(world.render_with_conditions(&plan, &Journal::default()));
    assert_eq!(world.plan(t0() + hours(2)).warnings, [], "said once");
    world.spec.rotation.schedule = Some("61 * * * *".into());
    let warnings = world.plan(t0() + hours(3)).warnings;
    assert_eq!(warnings.len(), 1, "a different problem is said again");
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
