//! The issuer inventory, as one WorkspaceToken plans it: it lists its workspace with its
//! current token when its group is due (never with a token whose use is being judged),
//! reports the live tokens nobody holds, revokes those unmanaged for `revokeUnmanagedAfter`
//! from a complete listing it just made, and replaces a served token the platform no longer
//! has, at once.

use std::sync::Arc;

use super::*;
use crate::api::{IssuerIdentity, IssuerKind};
use crate::issuer::http::PlatformToken;

/// An issuer token, monthly, 1h grace.
fn issued(extra: serde_json::Value) -> WorkspaceTokenSpec {
    let mut fields = json!({
        "rotation": { "every": "720h", "gracePeriod": "1h" },
        "issuerRef": { "name": "platform" },
    });
    merge(&mut fields, extra);
    spec(fields)
}

fn group(revoke_after: Option<&str>, due_at: DateTime<Utc>) -> InventoryInput {
    InventoryInput {
        issuer: IssuerIdentity {
            kind: IssuerKind::TokenIssuer,
            name: "platform".into(),
            uid: "uid-of-platform".into(),
        },
        revoke_unmanaged_after: revoke_after.map(str::to_string),
        due_at,
        latest: None,
        fresh: false,
    }
}

/// Steady at v1 since `t0`, its group first due at `t0 + 1m`.
fn steady(extra: serde_json::Value, revoke_after: Option<&str>) -> World {
    let mut world = World::steady(issued(extra), t0());
    world.inventory = Some(group(revoke_after, t0() + minutes(1)));
    world
}

fn stranger(id: &str, prefix: &str, created: DateTime<Utc>) -> PlatformToken {
    PlatformToken {
        id: id.into(),
        prefix: prefix.into(),
        created_at: created,
        last_used_at: None,
    }
}

fn unmanaged_prefixes(world: &World) -> Vec<String> {
    let status = world.status();
    status
        .unmanaged_tokens
        .iter()
        .map(|u| u.prefix.clone())
        .collect()
}

fn warnings_named(plan: &Plan, reason: &str) -> Vec<String> {
    (plan.warnings.iter())
        .filter(|w| w.reason == reason)
        .map(|w| w.message.clone())
        .collect()
}

#[test]
fn nothing_is_listed_before_the_group_is_due_and_the_pass_wakes_when_it_is() {
    let mut world = steady(json!({}), None);
    let plan = world.pass(t0() + secs(20));
    assert!(world.outside.inventory_asked.is_empty());
    assert_eq!(plan.requeue_after, Some(secs(40).to_std().unwrap()));
    world.pass(t0() + minutes(1));
    assert_eq!(
        world.outside.inventory_asked,
        [1],
        "listed with the current token"
    );
}

#[test]
fn a_token_no_version_holds_is_reported_with_its_times_and_warned_once() {
    let mut world = steady(json!({}), None);
    let mut registration = stranger("reg", "regtoken", t0() - hours(48));
    registration.last_used_at = Some(t0() - hours(2));
    world.outside.others.push(registration);
    let plan = world.pass(t0() + minutes(1));
    assert_eq!(unmanaged_prefixes(&world), ["regtoken"]);
    let entry = &world.status().unmanaged_tokens[0];
    assert_eq!(crate::time::from_time(&entry.created_at), t0() - hours(48));
    let last_used = entry.last_used_at.as_ref().map(crate::time::from_time);
    assert_eq!(last_used, Some(t0() - hours(2)));
    assert_eq!(
        crate::time::from_time(&entry.unmanaged_since),
        t0() + minutes(1)
    );
    let warned = warnings_named(&plan, "UnmanagedTokens");
    assert_eq!(warned.len(), 1);
    assert!(warned[0].contains("regtoken"), "{warned:?}");
    // The next listing finds the same token: no new Warning, status unchanged.
    let before = world.status().clone();
    let plan = world.pass(t0() + minutes(6));
    assert_eq!(world.outside.inventory_asked, [1, 1]);
    assert!(warnings_named(&plan, "UnmanagedTokens").is_empty());
    assert_eq!(world.status(), &before);
}

#[test]
fn a_newer_use_within_the_hour_of_the_recorded_one_writes_nothing() {
    let mut world = steady(json!({}), None);
    let mut used = stranger("reg", "regtoken", t0() - hours(48));
    used.last_used_at = Some(t0());
    world.outside.others.push(used);
    world.pass(t0() + minutes(1));
    let before = world.status().clone();
    world.outside.others[0].last_used_at = Some(t0() + minutes(50));
    world.pass(t0() + minutes(55));
    assert_eq!(world.status(), &before, "a use 50m newer is not written");
    world.outside.others[0].last_used_at = Some(t0() + minutes(61));
    world.pass(t0() + minutes(62));
    let entry = &world.status().unmanaged_tokens[0];
    let last_used = entry.last_used_at.as_ref().map(crate::time::from_time);
    assert_eq!(last_used, Some(t0() + minutes(61)));
}

#[test]
fn the_tokens_of_this_and_other_workspace_tokens_are_not_unmanaged() {
    let mut world = steady(json!({}), None);
    // The reference listing holds v1 (ours); a token in flight (created 2s before the
    // listing) is not judged yet.
    world
        .outside
        .others
        .push(stranger("fresh", "inflight", t0() + minutes(1) - secs(2)));
    world.pass(t0() + minutes(1));
    assert!(
        world.status().unmanaged_tokens.is_empty(),
        "{:?}",
        world.status()
    );
}

#[test]
fn an_unmanaged_token_is_revoked_only_once_unmanaged_for_revoke_unmanaged_after() {
    let mut world = steady(json!({}), Some("1h"));
    world
        .outside
        .others
        .push(stranger("leak", "leaked00", t0() - hours(500)));
    let plan = world.pass(t0() + minutes(1));
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::RevokeUnmanaged { .. })),
        "counted from when it was first seen unmanaged, not from its creation"
    );
    world.pass(t0() + minutes(56));
    assert!(world.outside.unmanaged_revoked.is_empty());
    world.pass(t0() + minutes(61));
    assert_eq!(world.outside.unmanaged_revoked, ["leak"]);
    assert!(world.status().unmanaged_tokens.is_empty());
}

#[test]
fn without_revoke_unmanaged_after_an_unmanaged_token_is_reported_forever() {
    let mut world = steady(json!({}), None);
    world
        .outside
        .others
        .push(stranger("reg", "regtoken", t0() - hours(500)));
    for minute in [1, 600, 6000] {
        world.pass(t0() + minutes(minute));
    }
    assert!(world.outside.unmanaged_revoked.is_empty());
    assert_eq!(unmanaged_prefixes(&world), ["regtoken"]);
}

#[test]
fn a_partial_or_failed_listing_revokes_nothing_and_status_keeps_what_it_said() {
    for fault in ["partial", "error"] {
        let mut world = steady(json!({}), Some("1h"));
        world
            .outside
            .others
            .push(stranger("leak", "leaked00", t0() - hours(500)));
        world.pass(t0() + minutes(1));
        let before = world.status().clone();
        world.outside.listing_fault = Some(fault);
        let plan = world.pass(t0() + hours(3));
        assert_eq!(world.outside.inventory_asked, [1, 1], "{fault}");
        assert!(world.outside.unmanaged_revoked.is_empty(), "{fault}");
        assert!(
            !plan.steps.iter().any(|s| matches!(s, Step::Mint { .. })),
            "{fault}: a listing that cannot tell says nothing of the served token"
        );
        assert_eq!(
            world.status().unmanaged_tokens,
            before.unmanaged_tokens,
            "{fault}"
        );
    }
}

#[test]
fn a_prefix_any_version_in_the_cluster_holds_is_never_revoked() {
    let mut world = steady(json!({}), Some("1h"));
    world
        .outside
        .others
        .push(stranger("theirs", "sameprfx", t0() - hours(500)));
    world.outside.held_by_others.insert("sameprfx".into());
    for minute in [1, 61, 121] {
        world.pass(t0() + minutes(minute));
    }
    assert!(world.outside.unmanaged_revoked.is_empty());
}

#[test]
fn a_served_token_the_platform_no_longer_lists_is_replaced_at_once_and_its_record_goes() {
    let mut world = steady(json!({}), None);
    // Revoked at the platform by hand.
    world.outside.valid.remove(&1);
    let plan = world.pass(t0() + minutes(1));
    assert!(
        plan.steps.contains(&Step::Mint {
            version: 2,
            reason: RotationReason::ServedTokenRevoked
        }),
        "{:?}",
        plan.steps
    );
    let warned = warnings_named(&plan, "ServedTokenRevoked");
    assert_eq!(warned.len(), 1, "{:?}", plan.warnings);
    assert!(warned[0].contains("version 1"), "{warned:?}");
    world.converge(t0() + minutes(1));
    assert_eq!(world.status().current_version, Some(2));
    assert_eq!(
        world.outside.revoked,
        [(1, RevokeReason::RevokedAtPlatform)],
        "no grace period for a token nobody can use"
    );
}

#[test]
fn a_served_token_refused_as_the_listings_bearer_is_replaced() {
    let mut world = steady(json!({}), None);
    world.outside.listing_fault = Some("refused");
    let plan = world.pass(t0() + minutes(1));
    assert!(plan.steps.contains(&Step::Mint {
        version: 2,
        reason: RotationReason::ServedTokenRevoked
    }));
}

#[test]
fn a_version_newer_than_the_listing_is_not_judged_by_it() {
    let mut world = steady(json!({}), None);
    world.pass(t0() + minutes(1));
    // A manual rotation after the listing: v2 is not in it, and must not look revoked.
    world.annotate(ROTATE_ANNOTATION, "r1");
    world.converge(t0() + minutes(2));
    assert_eq!(world.status().current_version, Some(2));
    let plan = world.plan(t0() + minutes(3));
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
}

#[test]
fn the_listing_never_uses_a_current_token_whose_use_revoke_after_use_judges() {
    let mut world = steady(json!({ "rotation": { "revokeAfterUse": true } }), None);
    world.annotate(ROTATE_ANNOTATION, "r1");
    world.converge(t0() + minutes(1) - secs(30));
    assert_eq!(world.state_of(1), Some(VersionState::Retiring));
    world.pass(t0() + minutes(1));
    assert!(
        world.outside.inventory_asked.is_empty(),
        "a listing with v2 would be the use that releases v1"
    );
    // Once v1 is gone nothing judges v2's use: it lists.
    world.converge(t0() + hours(2));
    assert_eq!(world.state_of(1), Some(VersionState::Revoked));
    assert_eq!(world.outside.inventory_asked, [2]);
}

#[test]
fn without_a_listing_since_the_start_status_keeps_its_unmanaged_tokens() {
    let mut world = steady(json!({}), None);
    world
        .outside
        .others
        .push(stranger("reg", "regtoken", t0() - hours(48)));
    world.pass(t0() + minutes(1));
    // A restart: the group's last listing is forgotten, the next is due later.
    world.inventory = Some(group(None, t0() + hours(1)));
    let plan = world.plan(t0() + minutes(10));
    assert!(plan.steps.is_empty());
    assert_eq!(
        plan.unmanaged, None,
        "no listing: status keeps what it said"
    );
    assert_eq!(world.render(&plan, &Journal::default()), *world.status());
}

#[test]
fn a_listing_by_another_token_of_the_group_is_read_without_listing_again() {
    let mut world = steady(json!({}), None);
    let listing = Listing {
        tokens: vec![stranger("other", "othertkn", t0())],
        complete: true,
        held: ["othertkn".to_string()].into(),
        held_elsewhere: BTreeSet::new(),
        in_flight: vec![(t0() + minutes(1), DateTime::<Utc>::MAX_UTC)],
    };
    let mut input = group(None, t0() + minutes(6));
    input.latest = Some(Arc::new(Reading {
        listed_at: t0() + minutes(1),
        outcome: Ok(listing),
    }));
    world.inventory = Some(input);
    let plan = world.pass(t0() + minutes(2));
    assert!(world.outside.inventory_asked.is_empty());
    assert!(
        plan.steps.contains(&Step::Mint {
            version: 2,
            reason: RotationReason::ServedTokenRevoked
        }),
        "v1 is not in the complete listing another token of the workspace made"
    );
}

#[test]
fn a_cluster_restored_from_an_older_backup_never_mints_a_number_it_has_seen() {
    let mut world = World::steady(issued(json!({})), t0());
    world.versions_seen = Some(4);
    world.annotate(ROTATE_ANNOTATION, "after-restore");
    let plan = world.pass(t0() + hours(1));
    assert!(
        plan.steps.contains(&Step::Mint {
            version: 5,
            reason: RotationReason::Manual
        }),
        "{:?}",
        plan.steps
    );
}
