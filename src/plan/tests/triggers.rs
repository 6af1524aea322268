//! Why a rotation happens: schedule, spec change, the rotate and revoke-version annotations.

use super::*;

// ----------------------------------------------------------------------------------------------
// Why a rotation happens
// ----------------------------------------------------------------------------------------------

#[test]
fn spec_change_rotates_when_rotate_on_change() {
    // The token-shaping fields: token, issuerRef, userId, environment.
    let shaping = [
        json!({ "token": { "bytes": 48 } }),
        json!({ "token": { "encoding": "hex" } }),
        json!({ "token": { "prefix": "wst_" } }),
        json!({ "userId": "19047492-ea90-4138-9afc-d2df61de2b06" }),
        json!({ "environment": "production" }),
        json!({ "issuerRef": { "name": "platform" } }),
    ];
    for change in shaping {
        let mut world = World::steady(monthly(), t0());
        let mut value = serde_json::to_value(&world.spec).expect("spec");
        merge(&mut value, change.clone());
        world.spec = serde_json::from_value(value).expect("spec");
        let plan = world.plan(t0() + hours(1));
        // A token moving to a platform gets the finalizer before anything is minted there.
        let steps: Vec<&Step> = (steps_of(&plan).iter())
            .filter(|s| **s != Step::AddFinalizer)
            .collect();
        assert_eq!(
            steps.first(),
            Some(&&mint(2, RotationReason::SpecChanged)),
            "{change}: {plan:#?}"
        );
        let finalizer_first = steps_of(&plan).first() == Some(&Step::AddFinalizer);
        assert_eq!(finalizer_first, world.spec.issuer_ref.is_some(), "{change}");
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
    assert_eq!(steps_of(&plan)[0], mint(1, RotationReason::Initial));
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
