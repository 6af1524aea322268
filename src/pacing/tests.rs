//! Pacing rules, each as the sequence of passes that shows it.

use super::*;

const KEY: &str = "team-a/agent";

fn t0() -> Instant {
    Instant::now()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A token's cached Secrets: name and resourceVersion.
type Cached = Vec<(String, Option<u64>)>;

fn seen<'a>(rv: &'a str, secrets: &'a [(String, Option<u64>)]) -> Seen<'a> {
    Seen {
        resource_version: Some(rv),
        uid: Some("uid-1"),
        secrets,
    }
}

fn failed(pacer: &mut Pacer<&'static str>, own_rv: &str, now: Instant) -> Next {
    pacer.ended(KEY, Ended::Failed, Some(own_rv.into()), now, 0.0)
}

#[test]
fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
    assert_eq!(backoff(1, 0.0), secs(1));
    assert_eq!(backoff(2, 0.0), secs(2));
    assert_eq!(backoff(5, 0.0), secs(16));
    assert_eq!(backoff(30, 0.0), secs(300));
    assert_eq!(backoff(30, 1.0), secs(330));
}

#[test]
fn failures_in_a_row_back_off_longer_and_a_success_resets_them() {
    let (mut pacer, now) = (Pacer::default(), t0());
    let waits: Vec<Next> = (0..4).map(|_| failed(&mut pacer, "5", now)).collect();
    let expected = [1, 2, 4, 8].map(|s| Next::After(secs(s)));
    assert_eq!(waits, expected);
    assert_eq!(pacer.attempts(&KEY), 4);
    let next = pacer.ended(KEY, Ended::Succeeded(Some(secs(60))), None, now, 0.0);
    assert_eq!(next, Next::After(secs(60)));
    assert_eq!(pacer.attempts(&KEY), 0);
    assert_eq!(failed(&mut pacer, "6", now), Next::After(secs(1)));
}

#[test]
fn a_success_with_nothing_due_waits_for_a_change() {
    let mut pacer = Pacer::default();
    let next = pacer.ended(KEY, Ended::Succeeded(None), None, t0(), 0.5);
    assert_eq!(next, Next::OnChange);
}

#[test]
fn our_own_write_does_not_cut_a_backoff_short() {
    let (mut pacer, now) = (Pacer::default(), t0());
    failed(&mut pacer, "5", now);
    failed(&mut pacer, "5", now); // 2 s
    let hold = pacer.hold(&KEY, &seen("5", &[]), now + Duration::from_millis(500));
    assert_eq!(hold, Some(Duration::from_millis(1500)));
    assert_eq!(pacer.hold(&KEY, &seen("5", &[]), now + secs(2)), None);
}

#[test]
fn someone_elses_edit_retries_at_once() {
    let (mut pacer, now) = (Pacer::default(), t0());
    failed(&mut pacer, "5", now);
    let edited = seen("6", &[]);
    assert_eq!(pacer.hold(&KEY, &edited, now), None);
}

#[test]
fn the_next_pass_waits_until_the_caches_show_our_writes() {
    let (mut pacer, now) = (Pacer::default(), t0());
    let wrote = Wrote {
        resource_version: Some("10".into()),
        secrets: vec![
            ("agent-v2".into(), Some("11".into())),
            ("agent-v1".into(), None),
        ],
    };
    pacer.wrote(KEY, wrote, now);
    let cases: [(&str, Cached, bool); 5] = [
        ("9", vec![("agent-v2".into(), Some(11))], false),
        ("10", vec![], false),
        ("10", vec![("agent-v2".into(), Some(10))], false),
        (
            "10",
            vec![("agent-v1".into(), Some(3)), ("agent-v2".into(), Some(11))],
            false,
        ),
        ("12", vec![("agent-v2".into(), Some(11))], true),
    ];
    for (rv, secrets, go) in cases {
        let hold = pacer.hold(&KEY, &seen(rv, &secrets), now);
        let expected = if go { None } else { Some(EXPECTATION_RECHECK) };
        assert_eq!(hold, expected, "object at {rv}, Secrets {secrets:?}");
    }
    assert_eq!(
        pacer.hold(&KEY, &seen("9", &[]), now),
        None,
        "met once, gone"
    );
}

#[test]
fn caches_that_never_catch_up_are_planned_on_after_the_timeout() {
    let (mut pacer, now) = (Pacer::default(), t0());
    let wrote = Wrote {
        resource_version: Some("10".into()),
        secrets: Vec::new(),
    };
    pacer.wrote(KEY, wrote, now);
    let behind = seen("9", &[]);
    assert_eq!(
        pacer.hold(&KEY, &behind, now + secs(29)),
        Some(EXPECTATION_RECHECK)
    );
    assert_eq!(pacer.hold(&KEY, &behind, now + secs(31)), None);
}

#[test]
fn a_finished_uid_is_skipped_until_the_cache_drops_it() {
    let (mut pacer, now) = (Pacer::default(), t0());
    failed(&mut pacer, "5", now);
    pacer.finished(KEY, "uid-1".into(), now);
    let still_cached = seen("7", &[]);
    assert_eq!(
        pacer.hold(&KEY, &still_cached, now),
        Some(EXPECTATION_RECHECK)
    );
    let recreated = Seen {
        uid: Some("uid-2"),
        ..still_cached
    };
    assert_eq!(
        pacer.hold(&KEY, &recreated, now),
        None,
        "a new object of that name"
    );
    assert_eq!(pacer.attempts(&KEY), 0, "its failures went with it");
}

#[test]
fn conflicts_stay_quiet_up_to_the_limit_then_fail_loudly() {
    let (mut pacer, now) = (Pacer::default(), t0());
    for n in 0..QUIET_RETRIES {
        assert!(pacer.retry_is_quiet(&KEY), "conflict {} is quiet", n + 1);
        let next = pacer.ended(KEY, Ended::QuietRetry, None, now, 1.0);
        assert_eq!(next, Next::After(Duration::from_millis(500)));
        assert_eq!(pacer.attempts(&KEY), 0, "a quiet conflict is no backoff");
    }
    assert!(!pacer.retry_is_quiet(&KEY), "the sixth is loud");
    assert_eq!(failed(&mut pacer, "5", now), Next::After(secs(1)));
    assert!(
        !pacer.retry_is_quiet(&KEY),
        "and stays loud until a success"
    );
    pacer.ended(KEY, Ended::Succeeded(None), None, now, 0.0);
    assert!(pacer.retry_is_quiet(&KEY));
}

#[test]
fn a_quiet_retry_is_redone_soon_but_spread_out() {
    let mut pacer = Pacer::default();
    let early = pacer.ended(KEY, Ended::QuietRetry, None, t0(), 0.0);
    let late = pacer.ended(KEY, Ended::QuietRetry, None, t0(), 1.0);
    assert_eq!(early, Next::After(Duration::from_millis(200)));
    assert_eq!(late, Next::After(Duration::from_millis(500)));
}

#[test]
fn a_changed_issuer_ends_a_backoff_but_keeps_its_count() {
    let (mut pacer, now) = (Pacer::default(), t0());
    let cached: Cached = Vec::new();
    for _ in 0..5 {
        failed(&mut pacer, "5", now);
    }
    assert_eq!(pacer.hold(&KEY, &seen("5", &cached), now), Some(secs(16)));
    pacer.dependency_changed(&KEY);
    assert_eq!(
        pacer.hold(&KEY, &seen("5", &cached), now),
        None,
        "retried now"
    );
    assert_eq!(failed(&mut pacer, "5", now), Next::After(secs(32)));
}
