//! Window arithmetic, in UTC and across DST changes.

use proptest::prelude::*;

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .expect("test timestamp")
        .and_utc()
}

fn window(expr: &str, duration: &str, tz: &str) -> Window {
    Window::parse(expr, duration, Some(tz)).expect("valid window")
}

#[test]
fn inside_a_window_now_is_the_time_outside_it_is_the_next_opening() {
    let nightly = window("0 2 * * *", "4h", "UTC");
    let table = [
        ("2026-01-05 01:59:59", "2026-01-05 02:00:00"),
        ("2026-01-05 02:00:00", "2026-01-05 02:00:00"),
        ("2026-01-05 05:59:59", "2026-01-05 05:59:59"),
        ("2026-01-05 06:00:00", "2026-01-06 02:00:00"),
        ("2026-01-05 23:00:00", "2026-01-06 02:00:00"),
    ];
    for (t, want) in table {
        assert_eq!(nightly.first_open_from(utc(t)), Ok(utc(want)), "{t}");
    }
}

#[test]
fn the_earliest_of_several_windows_wins() {
    let windows = [
        window("0 2 * * 1-5", "4h", "UTC"),
        window("0 12 * * 6,0", "1h", "UTC"),
    ];
    // Friday 2026-01-09 07:00: the weekday window is closed; Saturday noon comes first.
    assert_eq!(
        first_open_from(&windows, utc("2026-01-09 07:00:00")),
        Ok(utc("2026-01-10 12:00:00"))
    );
    assert_eq!(
        first_open_from(&[], utc("2026-01-09 07:00:00")),
        Ok(utc("2026-01-09 07:00:00"))
    );
}

#[test]
fn a_window_is_read_in_its_time_zone_on_both_sides_of_dst() {
    let berlin = window("0 2 * * *", "4h", "Europe/Berlin");
    // Winter: 02:00 CET is 01:00 UTC. Summer: 02:00 CEST is 00:00 UTC.
    assert_eq!(
        berlin.first_open_from(utc("2026-01-05 00:00:00")),
        Ok(utc("2026-01-05 01:00:00"))
    );
    assert_eq!(
        berlin.first_open_from(utc("2026-07-05 23:00:00")),
        Ok(utc("2026-07-06 00:00:00"))
    );
    // 2026-03-29: clocks jump from 02:00 to 03:00; the window still opens that night, once,
    // and is open four hours later than the jump at the latest.
    let spring = berlin.first_open_from(utc("2026-03-28 23:00:00")).unwrap();
    assert!(
        spring >= utc("2026-03-29 00:00:00") && spring <= utc("2026-03-29 01:00:00"),
        "{spring}"
    );
    assert!(berlin.is_open(utc("2026-03-29 04:30:00")));
    assert!(!berlin.is_open(utc("2026-03-29 06:00:00")));
    // 2026-10-25: 02:00-03:00 happens twice; the window opens at the first 02:00 (00:00 UTC).
    assert_eq!(
        berlin.first_open_from(utc("2026-10-24 22:00:00")),
        Ok(utc("2026-10-25 00:00:00"))
    );
}

#[test]
fn a_window_must_stay_open_for_some_time_and_parse() {
    assert!(matches!(
        Window::parse("0 2 * * *", "0", None),
        Err(ScheduleError::InvalidDuration { .. })
    ));
    assert!(matches!(
        Window::parse("0 2 * *", "1h", None),
        Err(ScheduleError::InvalidCron { .. })
    ));
    assert!(matches!(
        Window::parse("0 2 * * *", "1h", Some("Mars/Olympus")),
        Err(ScheduleError::UnknownTimeZone { .. })
    ));
}

fn zones() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("UTC"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Australia/Lord_Howe"),
    ]
}

fn windows() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("0 2 * * *", "4h")),
        Just(("30 1 * * 0", "2h")),
        Just(("0 3 * * 1-5", "30m")),
        Just(("15 2 1 * *", "1d")),
    ]
}

proptest! {
    /// Whatever the time, zone and window (DST days of 2026 included): the answer is not
    /// before `t`, the window is open then, and it was closed from `t` until then.
    #[test]
    fn the_first_open_instant_is_open_and_nothing_before_it_is(
        offset in 0i64..(366 * 86_400),
        fraction in 0.0f64..1.0,
        zone in zones(),
        (expr, duration) in windows(),
    ) {
        let w = window(expr, duration, zone);
        let t = utc("2026-01-01 00:00:00") + TimeDelta::seconds(offset);
        let open = w.first_open_from(t).unwrap();
        prop_assert!(open >= t);
        prop_assert!(w.is_open(open));
        if open > t {
            prop_assert!(!w.is_open(t));
            prop_assert!(!w.is_open(open - TimeDelta::seconds(1)));
            let gap = (open - t).num_seconds();
            let between = t + TimeDelta::seconds((gap as f64 * fraction) as i64);
            prop_assert!(between == open || !w.is_open(between), "open at {between}");
        }
    }
}
