//! `rotation.windows`: a scheduled rotation starts only inside a window; `nextRotationTime`
//! is the real start; manual, spec-change and revoke-now rotations ignore windows.

use super::world::*;
use super::*;

/// Daily at 00:00 UTC (t0 is Monday 2026-01-05 00:00), windows on weekdays 02:00-06:00 Berlin
/// time (01:00-05:00 UTC in January).
fn windowed() -> WorkspaceTokenSpec {
    spec(json!({ "rotation": {
        "schedule": "0 0 * * *",
        "timeZone": "Europe/Berlin",
        "windows": [{ "schedule": "0 2 * * 1-5", "duration": "4h" }],
    } }))
}

fn next_rotation(world: &World) -> Option<DateTime<Utc>> {
    world
        .status()
        .next_rotation_time
        .as_ref()
        .map(crate::time::from_time)
}

#[test]
fn a_scheduled_rotation_waits_for_the_window_and_next_rotation_time_says_when() {
    let mut world = World::steady(windowed(), at("2026-01-05 12:00"));
    // Due at midnight Berlin (23:00 UTC); the window opens at 02:00 Berlin, 01:00 UTC.
    assert_eq!(next_rotation(&world), Some(at("2026-01-06 01:00")));
    let plan = world.pass(at("2026-01-06 00:30"));
    assert!(
        plan.steps.is_empty(),
        "outside the window: {:?}",
        plan.steps
    );
    assert_eq!(
        plan.requeue_after,
        Some(minutes(30).to_std().unwrap()),
        "woken exactly when the window opens"
    );
    let plan = world.plan(at("2026-01-06 01:00"));
    assert_eq!(
        steps_of(&plan).first(),
        Some(&mint(2, RotationReason::Schedule))
    );
}

#[test]
fn an_overdue_rotation_missed_while_the_window_was_open_waits_for_the_next_one() {
    let mut world = World::steady(windowed(), at("2026-01-05 12:00"));
    // The operator was down through Tuesday's window: Tuesday 07:00 UTC is overdue, but closed.
    let plan = world.pass(at("2026-01-06 07:00"));
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(next_rotation(&world), Some(at("2026-01-07 01:00")));
}

#[test]
fn a_friday_rotation_waits_over_the_weekend() {
    let mut world = World::steady(windowed(), at("2026-01-09 12:00"));
    // Due Saturday 00:00 Berlin; no window until Monday 02:00 Berlin.
    assert_eq!(next_rotation(&world), Some(at("2026-01-12 01:00")));
    let plan = world.pass(at("2026-01-10 01:30"));
    assert!(plan.steps.is_empty());
}

#[test]
fn manual_and_spec_change_rotations_ignore_windows() {
    let mut world = World::steady(windowed(), at("2026-01-05 12:00"));
    world.annotate(ROTATE_ANNOTATION, "now");
    let plan = world.plan(at("2026-01-05 13:00"));
    assert_eq!(
        steps_of(&plan).first(),
        Some(&mint(2, RotationReason::Manual))
    );
    world.converge(at("2026-01-05 13:00"));

    let mut value = serde_json::to_value(&world.spec).unwrap();
    merge(&mut value, json!({ "token": { "bytes": 48 } }));
    world.spec = serde_json::from_value(value).unwrap();
    let plan = world.plan(at("2026-01-05 14:00"));
    assert_eq!(
        steps_of(&plan).first(),
        Some(&mint(3, RotationReason::SpecChanged))
    );
}

#[test]
fn an_unusable_window_stops_scheduled_rotation_and_says_which() {
    let spec = spec(json!({ "rotation": { "every": "1h",
        "windows": [{ "schedule": "0 2 * * 1-5", "duration": "4h" },
                    { "schedule": "61 2 * * *", "duration": "1h" }] } }));
    let mut world = World::steady(spec, t0());
    let plan = world.pass(t0() + hours(3));
    assert!(
        plan.steps.is_empty(),
        "no scheduled rotation: {:?}",
        plan.steps
    );
    let error = plan.spec_error.unwrap_or_default();
    assert!(error.starts_with("spec.rotation.windows[1]"), "{error}");
}
