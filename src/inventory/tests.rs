use std::time::Duration;

use super::*;
use crate::plan::{Failure, Reading};

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn key(workspace: &str) -> GroupKey {
    GroupKey {
        issuer_uid: "issuer-uid".into(),
        workspace: workspace.into(),
    }
}

fn failed_at(at: DateTime<Utc>) -> Reading {
    Reading {
        listed_at: at,
        outcome: Err(Failure {
            why: "down".into(),
            refused: None,
        }),
    }
}

#[test]
fn after_a_start_each_group_is_first_due_at_its_own_offset_within_one_interval() {
    let inventory = Inventory::new(Duration::from_secs(300), start());
    let firsts: Vec<DateTime<Utc>> = (0..50)
        .map(|n| inventory.due_at(&key(&format!("ws-{n}")), None, start()))
        .collect();
    assert!(
        firsts
            .iter()
            .all(|d| *d >= start() && *d < start() + TimeDelta::seconds(300))
    );
    let distinct: BTreeSet<_> = firsts.iter().collect();
    assert!(distinct.len() > 40, "spread, not one burst: {distinct:?}");
    let again = Inventory::new(Duration::from_secs(300), start());
    assert_eq!(
        again.due_at(&key("ws-7"), None, start()),
        firsts[7],
        "the same on every start"
    );
}

#[test]
fn one_token_of_a_group_lists_and_the_group_is_due_again_an_interval_later() {
    let inventory = Inventory::new(Duration::from_secs(300), start());
    let group = key("ws");
    let first = inventory.due_at(&group, None, start());
    assert!(!inventory.claim(&group, first - TimeDelta::milliseconds(1)));
    assert!(inventory.claim(&group, first));
    assert!(
        !inventory.claim(&group, first),
        "another token of the group waits"
    );
    inventory.record(group.clone(), failed_at(first));
    assert_eq!(inventory.due(&group), first + TimeDelta::seconds(300));
    assert!(inventory.claim(&group, first + TimeDelta::seconds(300)));
}

#[test]
fn a_zero_interval_lists_only_at_rotations() {
    let inventory = Inventory::new(Duration::ZERO, start());
    assert_eq!(
        inventory.due_at(&key("ws"), None, start()),
        DateTime::<Utc>::MAX_UTC
    );
}

#[test]
fn a_group_without_a_listing_is_due_at_its_offset_next_after_now_never_in_the_past() {
    let inventory = Inventory::new(Duration::from_secs(300), start());
    let group = key("ws-late");
    let first = inventory.due_at(&group, None, start());
    // Forgotten an hour later (its issuer was not Ready for a moment): not due at once, but
    // at its own point of the current interval.
    let later = start() + TimeDelta::minutes(61);
    let next = inventory.due_at(&group, None, later);
    assert!(
        next >= later && next < later + TimeDelta::seconds(300),
        "{next}"
    );
    assert_eq!((next - first).num_milliseconds() % 300_000, 0);
}

#[test]
fn a_slow_answer_asked_before_the_kept_listing_does_not_replace_it() {
    let inventory = Inventory::new(Duration::from_secs(300), start());
    let group = key("ws");
    let newer = start() + TimeDelta::seconds(10);
    inventory.record(group.clone(), failed_at(newer));
    let kept = inventory.record(group.clone(), failed_at(start()));
    assert_eq!(kept.listed_at, newer);
}
