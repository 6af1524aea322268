//! Crashes between any two steps, and random histories of them.

use super::*;

// ----------------------------------------------------------------------------------------------
// Crashes between steps
// ----------------------------------------------------------------------------------------------

/// Situations that plan several steps, each a world and the moment it is reconciled.
pub(super) fn busy_situations() -> Vec<(&'static str, World, DateTime<Utc>)> {
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
    world.has_finalizer = true; // minted at a platform, Retain, or an earlier release's
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
    fresh.crash(t0(), 1);
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
