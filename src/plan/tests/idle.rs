//! `holdUntil.idleFor`: a Retiring issuer token outlives its grace period while the platform
//! shows it used since the cutover and less than `idleFor` ago; the platform is asked at the
//! grace period's end and then only when the last answer could have become idle.

use super::*;

/// An issuer token, monthly, 1h grace, held until its predecessor is idle for 10m.
fn idle_held(extra: serde_json::Value) -> WorkspaceTokenSpec {
    let mut fields = json!({
        "rotation": { "every": "720h", "gracePeriod": "1h", "holdUntil": { "idleFor": "10m" } },
        "issuerRef": { "name": "platform" },
    });
    merge(&mut fields, extra);
    spec(fields)
}

/// Steady at v1, rotated by hand at `t0 + 1d`: v2 is current, v1 retiring.
fn cut_over(spec: WorkspaceTokenSpec) -> (World, DateTime<Utc>) {
    let mut world = World::steady(spec, t0());
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "r1");
    world.converge(t1);
    assert_eq!(world.state_of(2), Some(VersionState::Active));
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    (world, t1)
}

#[test]
fn the_platform_is_not_asked_before_the_grace_period_ends() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 + minutes(5));
    world.converge(t1 + minutes(30));
    assert!(world.outside.usage_asked.is_empty());
    assert!(world.version_status(1).retire_held_by.is_empty());
}

#[test]
fn a_previous_token_used_recently_is_held_and_status_says_when_it_was_used() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 + minutes(55));
    let plan = world.pass(t1 + hours(1));
    assert!(revocations(&plan).is_empty(), "{:?}", plan.steps);
    assert_eq!(world.outside.usage_asked, [1]);
    let v1 = world.version_status(1);
    assert_eq!(v1.state, VersionState::Retiring);
    assert_eq!(v1.retire_held_by, ["used 5m ago"]);
    assert_eq!(
        v1.last_used_at.as_ref().map(crate::time::from_time),
        Some(t1 + minutes(55))
    );
    assert_eq!(
        v1.retire_at.as_ref().map(crate::time::from_time),
        Some(t1 + hours(24)),
        "retireAt is the latest it is revoked: cutover + maxGracePeriod"
    );
    assert_eq!(
        plan.requeue_after,
        Some(minutes(5).to_std().unwrap()),
        "the next question is when it could have become idle, not a poll"
    );
}

#[test]
fn a_previous_token_idle_for_idle_for_is_revoked_after_one_more_question() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 + minutes(55));
    world.converge(t1 + hours(1));
    world.converge(t1 + hours(1) + minutes(2));
    assert_eq!(
        world.outside.usage_asked,
        [1],
        "nothing could have changed yet"
    );
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    let plan = world.pass(t1 + minutes(65));
    assert_eq!(revocations(&plan), [&revoke(1, RevokeReason::GraceEnded)]);
    assert_eq!(world.outside.usage_asked, [1, 1]);
    world.converge(t1 + minutes(65));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn each_new_use_moves_the_next_question_to_when_it_could_be_idle() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 + minutes(55));
    world.converge(t1 + hours(1));
    world.outside.last_used.insert(1, t1 + minutes(62));
    let plan = world.pass(t1 + minutes(65));
    assert!(revocations(&plan).is_empty());
    assert_eq!(world.version_status(1).retire_held_by, ["used 3m ago"]);
    assert_eq!(plan.requeue_after, Some(minutes(7).to_std().unwrap()));
    world.converge(t1 + minutes(72));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(
        world.outside.usage_asked.len(),
        3,
        "one question at the grace period's end and one per use seen"
    );
}

#[test]
fn a_previous_token_not_used_since_the_cutover_goes_when_the_grace_period_ends() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 - minutes(1));
    let plan = world.pass(t1 + hours(1));
    assert_eq!(revocations(&plan), [&revoke(1, RevokeReason::GraceEnded)]);
}

#[test]
fn a_platform_that_does_not_answer_holds_the_version_and_is_asked_again_a_minute_later() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.usage_unreadable = Some("issuer: list: status 503".into());
    let plan = world.pass(t1 + hours(1));
    assert!(revocations(&plan).is_empty());
    assert_eq!(
        world.version_status(1).retire_held_by,
        ["usage unreadable: issuer: list: status 503"]
    );
    assert_eq!(
        plan.requeue_after,
        Some(std::time::Duration::from_secs(USAGE_RETRY_SECONDS as u64))
    );
    world.outside.usage_unreadable = None;
    world.converge(t1 + hours(1) + minutes(1));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn a_token_in_use_until_max_grace_period_is_revoked_then_with_a_stale_consumer_warning() {
    let (mut world, t1) = cut_over(idle_held(json!({ "rotation": { "maxGracePeriod": "3h" } })));
    world.outside.last_used.insert(1, t1 + minutes(59));
    world.converge(t1 + hours(1));
    world
        .outside
        .last_used
        .insert(1, t1 + hours(2) + minutes(58));
    world.converge(t1 + hours(2) + minutes(59));
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    let asked = world.outside.usage_asked.len();
    let plan = world.pass(t1 + hours(3));
    assert_eq!(revocations(&plan), [&revoke(1, RevokeReason::HoldExpired)]);
    assert_eq!(
        world.outside.usage_asked.len(),
        asked,
        "not asked at the cap"
    );
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.reason == "StaleConsumer")
        .expect("a StaleConsumer warning");
    assert!(
        warning.message.contains("used 1m ago"),
        "{}",
        warning.message
    );
}

#[test]
fn a_restart_asks_nothing_and_writes_nothing_while_a_version_is_held() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    world.outside.last_used.insert(1, t1 + minutes(55));
    world.converge(t1 + hours(1));
    let status = world.status().clone();
    let asked = world.outside.usage_asked.len();
    // A restarted operator plans from status alone: the same answer, no new question.
    let plan = world.pass(t1 + hours(1) + secs(30));
    assert_eq!(world.outside.usage_asked.len(), asked);
    assert!(plan.steps.is_empty());
    assert_eq!(world.status(), &status);
}

#[test]
fn an_idle_for_beyond_the_end_of_time_holds_until_max_grace_period_without_failing() {
    let (mut world, t1) = cut_over(idle_held(json!({ "rotation": {
        "holdUntil": { "idleFor": "100000000d" }, "maxGracePeriod": "3h" } })));
    world.outside.last_used.insert(1, t1 + minutes(30));
    world.converge(t1 + hours(1));
    assert_eq!(world.version_status(1).retire_held_by, ["used 30m ago"]);
    world.converge(t1 + hours(3));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
}

#[test]
fn across_a_change_of_issuer_the_grace_period_alone_decides() {
    let mut world = World::steady(idle_held(json!({})), t0());
    world.spec.issuer_ref = Some(serde_json::from_value(json!({ "name": "other" })).unwrap());
    let t1 = t0() + hours(24);
    world.converge(t1);
    assert_eq!(world.state_of(2), Some(VersionState::Active));
    world.outside.last_used.insert(1, t1 + minutes(59));
    let plan = world.pass(t1 + hours(1));
    assert_eq!(revocations(&plan), [&revoke(1, RevokeReason::GraceEnded)]);
    assert!(
        world.outside.usage_asked.is_empty(),
        "v2's token may not be sent to v1's platform"
    );
}

#[test]
fn a_grace_period_as_long_as_max_grace_period_leaves_no_hold_and_no_false_alarm() {
    let (mut world, t1) = cut_over(idle_held(json!({ "rotation": {
        "gracePeriod": "3h", "maxGracePeriod": "3h" } })));
    world.outside.last_used.insert(1, t1 + minutes(1));
    let plan = world.pass(t1 + hours(3));
    assert_eq!(revocations(&plan), [&revoke(1, RevokeReason::GraceEnded)]);
    assert!(!plan.warnings.iter().any(|w| w.reason == "StaleConsumer"));
}

#[test]
fn with_no_grace_period_the_platform_is_asked_once_the_new_token_is_written() {
    let mut world = World::steady(
        idle_held(json!({ "rotation": { "gracePeriod": "0s" } })),
        t0(),
    );
    let t1 = t0() + hours(24);
    world.annotate(ROTATE_ANNOTATION, "r1");
    let first = world.pass(t1);
    assert!(
        world.outside.usage_asked.is_empty(),
        "the pass that mints v2 cannot ask with it: {:?}",
        first.steps
    );
    assert!(revocations(&first).is_empty());
    world.outside.last_used.insert(1, t1);
    world.converge(t1);
    assert_eq!(world.outside.usage_asked, [1]);
    assert_eq!(
        world.state_of(1),
        Some(VersionState::Revoked),
        "not used after the cutover"
    );
}

#[test]
fn revoke_after_use_never_lists_with_the_token_idle_for_judges() {
    // The schema refuses both together; a status from before that rule must not combine them.
    let (world, t1) = cut_over(idle_held(json!({ "rotation": { "revokeAfterUse": true } })));
    let plan = world.plan(t1 + minutes(1));
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::RevokeIfUsed { .. })),
        "{:?}",
        plan.steps
    );
}

#[test]
fn an_answer_that_turns_idle_while_it_travels_is_asked_again_a_second_later() {
    let (mut world, t1) = cut_over(idle_held(json!({})));
    // Whole-second answers: the question went out at t, the pass plans at t + 0.9 s, and the
    // use it reports becomes idle in between.
    let asked_at = t1 + hours(1);
    world.outside.last_used.insert(
        1,
        asked_at - minutes(10) + chrono::Duration::milliseconds(500),
    );
    let mut observed = world.observed();
    observed.usage = Some(UsageReading {
        version: 1,
        usage: Ok(Usage {
            last_used_at: world.outside.last_used.get(&1).copied(),
            checked_at: asked_at,
        }),
    });
    let plan = super::plan(&observed, asked_at + chrono::Duration::milliseconds(900));
    assert!(revocations(&plan).is_empty());
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(1)));
}
