//! What the cluster shows decides the steps; drift is repaired, lost versions revoked.

use super::*;

// ----------------------------------------------------------------------------------------------
// What the cluster shows
// ----------------------------------------------------------------------------------------------

#[test]
fn what_the_cluster_shows_decides_the_steps() {
    use MountedWrite::{Cutover, DriftRepaired, PreviousRemoved};
    use VersionState::{Active, Retiring, Revoked};
    let in_grace = day(2) + minutes(10);
    let after_grace = day(2) + hours(2);
    let table: Vec<(&str, World, DateTime<Utc>, Vec<Step>)> = vec![
        (
            "at rest: v2 current, v1 in its grace period",
            cluster(&[1, 2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![],
        ),
        (
            "crash after mint: S-v3 exists, S and status at v2",
            cluster(
                &[1, 2, 3],
                Some((2, Some(1))),
                &[(2, Active), (1, Retiring)],
            ),
            in_grace,
            vec![
                write(3, Some(2), Cutover),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "crash after cutover: S at v3, status still at v2",
            cluster(
                &[1, 2, 3],
                Some((3, Some(2))),
                &[(2, Active), (1, Retiring)],
            ),
            in_grace,
            vec![revoke(1, RevokeReason::Superseded)],
        ),
        (
            "crash after revoke: S-v1 gone, status still says Retiring",
            cluster(&[2], Some((2, None)), &[(2, Active), (1, Retiring)]),
            after_grace,
            vec![revoke(1, RevokeReason::GraceEnded)],
        ),
        (
            "crash after the grace-end revoke, before S lost previous-token",
            cluster(&[2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            after_grace,
            vec![
                write(2, None, PreviousRemoved),
                revoke(1, RevokeReason::GraceEnded),
            ],
        ),
        (
            "after status write",
            cluster(&[2], Some((2, None)), &[(2, Active), (1, Revoked)]),
            after_grace,
            vec![],
        ),
        (
            "S deleted",
            cluster(&[1, 2], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "S-v2 deleted",
            cluster(&[1], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![Step::RestoreVersioned { version: 2 }],
        ),
        (
            "S-v1 deleted during grace",
            cluster(&[2], Some((2, Some(1))), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                write(2, None, PreviousRemoved),
                revoke(1, RevokeReason::Lost),
            ],
        ),
        (
            "every Secret deleted",
            cluster(&[], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S and S-v2 deleted, v1 still retiring",
            cluster(&[1], None, &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S rolled back to v1",
            cluster(&[1, 2], Some((1, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "S rolled back to v1, and S-v2 deleted",
            cluster(&[1], Some((1, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![
                mint(3, RotationReason::TokenLost),
                write(3, None, Cutover),
                revoke(2, RevokeReason::Lost),
                revoke(1, RevokeReason::Superseded),
            ],
        ),
        (
            "S edited to name a version nobody minted",
            cluster(&[1, 2], Some((9, None)), &[(2, Active), (1, Retiring)]),
            in_grace,
            vec![write(2, Some(1), DriftRepaired)],
        ),
        (
            "status lost (restored from a backup without it)",
            cluster(&[1, 2], Some((2, Some(1))), &[]),
            in_grace,
            vec![],
        ),
        (
            "status lost and S deleted",
            cluster(&[1, 2], None, &[]),
            in_grace,
            vec![write(2, Some(1), Cutover)],
        ),
        (
            "a record of a revoked version came back",
            cluster(
                &[1, 2, 3],
                Some((3, None)),
                &[(3, Active), (2, Revoked), (1, Revoked)],
            ),
            day(3) + hours(2),
            vec![
                revoke(2, RevokeReason::Orphaned),
                revoke(1, RevokeReason::Orphaned),
            ],
        ),
    ];
    for (situation, mut world, now, steps) in table {
        let plan = world.plan(now);
        assert_eq!(plan.steps, steps, "{situation}");
        world.converge(now);
        assert_eq!(
            steps_of(&world.plan(now + secs(1))),
            [],
            "{situation}: converged"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Drift
// ----------------------------------------------------------------------------------------------

#[test]
fn edited_mounted_secret_is_repaired_without_minting() {
    type Edit = fn(&mut MountedSecret);
    let table: [(&str, Edit); 5] = [
        ("token replaced", |m| {
            m.token_sha256 = Some("sha-of-something-else".into())
        }),
        ("token removed", |m| m.token_sha256 = None),
        ("token-version removed", |m| m.version = None),
        ("previous-token removed during grace", |m| {
            m.previous_version = None;
            m.previous_sha256 = None;
        }),
        ("previous-token replaced", |m| {
            m.previous_sha256 = Some("sha-of-something-else".into())
        }),
    ];
    for (what, edit) in table {
        let (mut world, t1) = rotated_once();
        edit(world.mounted.as_mut().expect("S"));
        let plan = world.plan(t1 + minutes(5));
        assert_eq!(
            steps_of(&plan),
            [write(2, Some(1), MountedWrite::DriftRepaired)],
            "{what}"
        );
        world.converge(t1 + minutes(5));
        assert_eq!(world.outside.minted, [1, 2], "{what}");
    }
}

#[test]
fn mounted_secret_rolled_back_to_an_older_version_is_repaired() {
    // Someone re-applied an old copy of S: it serves v1 (still valid, retiring) instead of v2.
    let (mut world, t1) = rotated_once();
    world.spec.restart_targets =
        spec(json!({ "restartTargets": [ { "kind": "Deployment", "name": "agent" } ] }))
            .restart_targets;
    world.mounted = Some(MountedSecret {
        version: Some(1),
        token_sha256: world.sha_of(1),
        previous_version: None,
        previous_sha256: None,
        metadata: desired_metadata(&world.spec, NAME, None),
    });
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [write(2, Some(1), MountedWrite::DriftRepaired)],
        "a repair, not a cutover: no restart either"
    );
    let activated = world.version_status(2).activated_at.clone();
    world.converge(t1 + minutes(5));
    assert_eq!(
        world.version_status(2).activated_at,
        activated,
        "not a new cutover"
    );
    assert!(
        world.outside.restarts.is_empty(),
        "{:?}",
        world.outside.restarts
    );
}

#[test]
fn deleted_mounted_secret_is_restored_from_versioned() {
    let (mut world, t1) = rotated_once();
    world.mounted = None;
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [write(2, Some(1), MountedWrite::DriftRepaired)]
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.minted, [1, 2]);
}

#[test]
fn deleted_versioned_secret_is_restored_from_mounted() {
    let (mut world, t1) = rotated_once();
    let before = world.version_status(2).clone();
    world.versioned.remove(&2);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(steps_of(&plan), [Step::RestoreVersioned { version: 2 }]);
    // The restored record keeps its history: it did not become current now.
    let record = &plan.versions[&2];
    assert_eq!(record.activated_at, Some(t1));
    assert_eq!(
        record.issuer_token_id, before.issuer_token_id,
        "still revocable at the issuer"
    );
    assert_eq!(plan.next_rotation, Some(t1 + hours(720)));
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.minted, [1, 2]);
    assert_eq!(
        world.status().next_rotation_time,
        Some(crate::time::to_time(t1 + hours(720)))
    );
    assert_eq!(
        world.version_status(2).issuer_token_id,
        before.issuer_token_id
    );
}

#[test]
fn deleted_retiring_record_is_revoked_not_forgotten() {
    // Without S-v1 the planner cannot keep v1 as previous-token, and a token nobody can see
    // must not stay valid at the issuer.
    let (mut world, t1) = rotated_once();
    world.versioned.remove(&1);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan),
        [
            write(2, None, MountedWrite::PreviousRemoved),
            revoke(1, RevokeReason::Lost)
        ]
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn lost_current_version_rotates_with_reason_token_lost() {
    let mut world = World::steady(monthly(), t0());
    world.mounted = None;
    world.versioned.clear();
    let plan = world.plan(t0() + hours(1));
    assert_eq!(
        steps_of(&plan),
        [
            mint(2, RotationReason::TokenLost),
            write(2, None, MountedWrite::Cutover),
            revoke(1, RevokeReason::Lost),
        ]
    );
    world.converge(t0() + hours(1));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(world.outside.valid, BTreeSet::from([2]));
}

#[test]
fn lost_current_version_is_not_replaced_by_the_retiring_one() {
    // S and S-v2 gone while v1 is still retiring: v1 is older than what was current, so it
    // does not come back; a new token does.
    let (mut world, t1) = rotated_once();
    world.mounted = None;
    world.versioned.remove(&2);
    let plan = world.plan(t1 + minutes(5));
    assert_eq!(
        steps_of(&plan)[0],
        mint(3, RotationReason::TokenLost),
        "{plan:#?}"
    );
    world.converge(t1 + minutes(5));
    assert_eq!(world.outside.valid, BTreeSet::from([3]));
}

#[test]
fn revoked_version_is_never_adopted_again() {
    // A backup restore brings back S-v3 after v3 was revoked: it must not become current.
    let (mut world, t1) = rotated_once();
    world.annotate(ROTATE_ANNOTATION, "second");
    world.converge(t1 + minutes(10));
    world.annotate(REVOKE_VERSION_ANNOTATION, "3");
    world.converge(t1 + minutes(20));
    assert_eq!(world.state_of(3), Some(VersionState::Revoked));
    let current = world.status().current_version.expect("current");
    assert_eq!(current, 4);
    let ghost = VersionedSecret {
        version: 3,
        token_sha256: Some("sha-of-v3-from-backup".into()),
        token_prefix: Some("wst_0003".into()),
        trace_id: None,
        spec_hash: Some(spec_hash(&world.spec)),
        verified: true,
        verified_at: None,
        created_at: Some(t1),
        metadata: desired_metadata(&world.spec, NAME, Some(3)),
    };
    world.versioned.insert(3, ghost);
    world.outside.valid.insert(3);
    let plan = world.plan(t1 + minutes(30));
    assert_eq!(plan.current, Some(4));
    assert_eq!(plan.versions[&3].state, VersionState::Revoked);
    assert_eq!(
        steps_of(&plan),
        [revoke(3, RevokeReason::Orphaned)],
        "the leftover goes"
    );
    world.converge(t1 + minutes(30));
    assert_eq!(world.outside.minted, [1, 2, 3, 4]);
}
