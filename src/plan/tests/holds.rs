//! `holdUntil.rolloutComplete` and `maxGracePeriod`: a Retiring version outlives its grace
//! period while a restart target has not finished the rollout its cutover started, never
//! past `cutover + maxGracePeriod`, and status says what holds it.

use super::world::*;
use super::*;
use crate::api::RestartKind;

/// Monthly, 1h grace, restart target Deployment/agent whose rollout holds the old version.
fn held(extra: serde_json::Value) -> WorkspaceTokenSpec {
    let mut fields = json!({
        "rotation": { "every": "720h", "gracePeriod": "1h", "holdUntil": { "rolloutComplete": true } },
        "restartTargets": [{ "kind": "Deployment", "name": "agent" }],
    });
    merge(&mut fields, extra);
    spec(fields)
}

fn agent(world: &mut World, rollout: Option<Rollout>) {
    let key = (RestartKind::Deployment, "agent".to_string());
    match rollout {
        Some(r) => world.rollouts.insert(key, r),
        None => world.rollouts.remove(&key),
    };
}

fn seen(restarted_at: DateTime<Utc>, waiting: Option<&str>) -> Option<Rollout> {
    Some(Rollout::Seen {
        restarted_at: Some(restarted_at),
        waiting: waiting.map(str::to_string),
    })
}

/// Steady at v1, rolled out; rotated by hand at `t0 + 1d` to v2 with the rollout under way.
fn cut_over(spec: WorkspaceTokenSpec) -> (World, DateTime<Utc>) {
    let mut world = World::steady(spec, t0());
    agent(&mut world, seen(t0(), None));
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "r1");
    world.converge(t1);
    assert_eq!(world.state_of(2), Some(VersionState::Active));
    agent(&mut world, seen(t1 + secs(1), Some("1/2 updated")));
    (world, t1)
}

#[test]
fn an_unfinished_rollout_holds_the_previous_version_past_its_grace_period_and_says_why() {
    let (mut world, t1) = cut_over(held(json!({})));
    let plan = world.pass(t1 + hours(1) + minutes(1));
    assert!(revocations(&plan).is_empty(), "{:?}", plan.steps);
    let v1 = world.version_status(1);
    assert_eq!(v1.state, VersionState::Retiring);
    assert_eq!(v1.retire_held_by, vec!["Deployment/agent 1/2 updated"]);
    assert_eq!(
        v1.retire_at.as_ref().map(crate::time::from_time),
        Some(t1 + hours(24)),
        "retireAt is the latest it can be revoked: cutover + maxGracePeriod (24h by default)"
    );
    assert_eq!(
        plan.requeue_after,
        Some((hours(23) - minutes(1)).to_std().unwrap()),
        "no polling: the rollout's watch wakes the token; the timer is for the cap"
    );
    assert!(world.version_status(2).retire_held_by.is_empty());
}

#[test]
fn the_rollout_completing_releases_the_hold_at_once() {
    let (mut world, t1) = cut_over(held(json!({})));
    world.converge(t1 + hours(2));
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    agent(&mut world, seen(t1 + secs(1), None));
    let plan = world.pass(t1 + hours(2) + secs(5));
    assert_eq!(
        revocations(&plan),
        vec![&revoke(1, RevokeReason::GraceEnded)]
    );
    world.converge(t1 + hours(2) + secs(5));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn a_finished_rollout_never_shortens_the_grace_period() {
    let (mut world, t1) = cut_over(held(json!({})));
    agent(&mut world, seen(t1 + secs(1), None));
    let plan = world.pass(t1 + minutes(30));
    assert!(revocations(&plan).is_empty());
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    assert!(world.version_status(1).retire_held_by.is_empty());
}

#[test]
fn at_max_grace_period_the_version_is_revoked_anyway_with_a_stale_consumer_warning() {
    let (mut world, t1) = cut_over(held(json!({ "rotation": { "maxGracePeriod": "3h" } })));
    world.converge(t1 + hours(2));
    assert_eq!(
        world
            .version_status(1)
            .retire_at
            .as_ref()
            .map(crate::time::from_time),
        Some(t1 + hours(3))
    );
    let plan = world.pass(t1 + hours(3));
    assert_eq!(
        revocations(&plan),
        vec![&revoke(1, RevokeReason::HoldExpired)]
    );
    let stale: Vec<_> = plan
        .warnings
        .iter()
        .filter(|w| w.reason == "StaleConsumer")
        .collect();
    assert_eq!(stale.len(), 1, "{:?}", plan.warnings);
    assert!(
        stale[0].message.contains("Deployment/agent 1/2 updated"),
        "{}",
        stale[0].message
    );
    world.converge(t1 + hours(3));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn what_holds_a_version_is_each_target_not_yet_rolled_out() {
    let cases: [(&str, Option<Rollout>, Option<&str>); 5] = [
        (
            "never seen (an operator just restarted)",
            None,
            Some("Deployment/agent rollout not observed yet"),
        ),
        (
            "seen before the restart reached it",
            Some(Rollout::Seen {
                restarted_at: Some(at("2026-01-06 00:00") - secs(1)),
                waiting: None,
            }),
            Some("Deployment/agent restart pending"),
        ),
        (
            "never restarted by us",
            Some(Rollout::Seen {
                restarted_at: None,
                waiting: None,
            }),
            Some("Deployment/agent restart pending"),
        ),
        ("gone", Some(Rollout::Missing), None),
        (
            "rolled out",
            seen(at("2026-01-06 00:00") + secs(1), None),
            None,
        ),
    ];
    for (situation, rollout, held_by) in cases {
        let (mut world, t1) = cut_over(held(json!({})));
        assert_eq!(t1, at("2026-01-06 00:00"));
        agent(&mut world, rollout);
        let plan = world.pass(t1 + hours(1));
        let expected: Vec<String> = held_by.into_iter().map(str::to_string).collect();
        assert_eq!(
            world.version_status(1).retire_held_by,
            expected,
            "{situation}"
        );
        assert_eq!(
            revocations(&plan).is_empty(),
            held_by.is_some(),
            "{situation}"
        );
    }
}

#[test]
fn without_hold_until_an_unfinished_rollout_holds_nothing() {
    let (mut world, t1) = cut_over(held(json!({ "rotation": { "holdUntil": null } })));
    let plan = world.pass(t1 + hours(1));
    assert_eq!(
        revocations(&plan),
        vec![&revoke(1, RevokeReason::GraceEnded)]
    );
}

#[test]
fn an_unusable_max_grace_period_holds_nothing_and_says_so() {
    let (mut world, t1) = cut_over(held(
        json!({ "rotation": { "maxGracePeriod": "9999999999999d" } }),
    ));
    let plan = world.pass(t1 + hours(1));
    assert_eq!(
        revocations(&plan),
        vec![&revoke(1, RevokeReason::GraceEnded)]
    );
    assert!(
        plan.spec_error
            .as_deref()
            .is_some_and(|e| e.contains("maxGracePeriod")),
        "{:?}",
        plan.spec_error
    );
}

#[test]
fn a_newer_cutover_revoking_a_held_version_says_what_still_held_it() {
    let (mut world, t1) = cut_over(held(json!({})));
    world.converge(t1 + hours(2));
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    world.annotate(ROTATE_ANNOTATION, "r2");
    let passes = world.converge(t1 + hours(3));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    let stale: Vec<&str> = (passes.iter())
        .flat_map(|p| &p.warnings)
        .filter(|w| w.reason == "StaleConsumer")
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(
        stale,
        [
            "version 1 revoked by the cutover to version 3 while still held by Deployment/agent 1/2 updated"
        ]
    );
}
