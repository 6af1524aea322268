//! Suspend, conflicts over Secret names, deletion.

use super::*;
use crate::api::{IssuerIdentity, IssuerKind};

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

/// A Secret name someone else holds is a Warning once, with the message Ready carries.
#[test]
fn a_foreign_secret_is_warned_once_with_the_message_ready_carries() {
    let mut world = World::steady(monthly(), t0());
    world.foreign = vec!["agent-alpha".into(), "agent-alpha-v2".into()];
    let plan = world.plan(t0() + hours(1));
    let message = "Secret agent-alpha, agent-alpha-v2 exists and is not owned by this \
                   WorkspaceToken; it is left untouched";
    assert_eq!(plan.readiness.message, message);
    let expected = Warning {
        reason: "SecretConflict",
        message: message.into(),
    };
    assert_eq!(plan.warnings, [expected]);
    world.status = Some(world.render_with_conditions(&plan, &Journal::default()));
    assert_eq!(world.plan(t0() + hours(2)).warnings, [], "said once");
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
    world.has_finalizer = true; // minted at a platform, Retain, or an earlier release's
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
    world.has_finalizer = true; // minted at a platform, Retain, or an earlier release's
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
    world.has_finalizer = true; // minted at a platform, Retain, or an earlier release's
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

#[test]
fn a_local_token_under_revoke_gets_no_finalizer_and_goes_with_its_secrets() {
    let mut world = World::new(monthly());
    world.converge(t0());
    assert!(
        !world.has_finalizer,
        "nothing to revoke anywhere but its Secrets"
    );
    world.deleting = true;
    assert_eq!(steps_of(&world.plan(t0() + hours(1))), []);
    world.converge(t0() + hours(1));
    assert!(world.gone, "the garbage collector deletes the Secrets");
}

#[test]
fn retain_a_platform_or_a_version_minted_at_one_needs_the_finalizer() {
    let retain = spec(json!({ "deletionPolicy": "Retain" }));
    assert_eq!(
        steps_of(&World::new(retain).plan(t0())).first(),
        Some(&Step::AddFinalizer),
        "Retain: the Secrets are released before the object goes"
    );
    // Moved from a platform to local minting: v1 is still live at the platform.
    let mut world = World::steady(monthly(), t0());
    let status = world.status.as_mut().expect("status");
    status.versions[0].issuer = Some(IssuerIdentity {
        kind: IssuerKind::TokenIssuer,
        name: "platform".into(),
        uid: "0e6f1c55-1d53-4f4e-8a3e-5ad7d5b4c0d1".into(),
    });
    assert_eq!(
        steps_of(&world.plan(t0() + hours(1))).first(),
        Some(&Step::AddFinalizer),
        "a live platform token is revoked on deletion"
    );
}
