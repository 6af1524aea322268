//! When a workspace token is due for rotation: `every` intervals, cron schedules in an
//! IANA time zone, and a stable per-object jitter that keeps rotations from stampeding.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use sha2::{Digest, Sha256};

/// Regex the CRD schema uses for every duration field; parse_duration accepts exactly the strings it matches.
pub(crate) const DURATION_PATTERN: &str = r"^(0|([0-9]+(s|m|h|d))+)$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid duration {value:?}: use a number with s, m, h or d units, like 90s, 10m, 720h or 1h30m"
    )]
    InvalidDuration { value: String },
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron { expr: String, reason: String },
    #[error("unknown time zone {name:?}: use an IANA name like Europe/Berlin")]
    UnknownTimeZone { name: String },
    #[error("cron expression {expr:?} never fires")]
    NeverFires { expr: String },
}

/// Parses `0` or a sequence of `<digits><unit>` terms (units s, m, h, d) and sums them.
/// Only values too large for a `Duration` are rejected beyond what `DURATION_PATTERN` rejects.
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    let invalid = || ScheduleError::InvalidDuration {
        value: s.to_owned(),
    };
    // A bare "0" is the only unitless value the pattern allows.
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for byte in s.bytes() {
        let unit_secs: u64 = match byte {
            b'0'..=b'9' => {
                let digit = u64::from(byte - b'0');
                let n = number.unwrap_or(0).checked_mul(10);
                number = Some(n.and_then(|n| n.checked_add(digit)).ok_or_else(invalid)?);
                continue;
            }
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            _ => return Err(invalid()),
        };
        let n = number.take().ok_or_else(invalid)?;
        let secs = n.checked_mul(unit_secs).ok_or_else(invalid)?;
        total = total.checked_add(secs).ok_or_else(invalid)?;
    }
    // Trailing digits lack a unit, and an empty string never entered the loop.
    if number.is_some() || s.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "the public API exposes croner::Cron by value, and there is one Schedule per object"
)]
pub enum Schedule {
    Every(Duration),
    Cron { expr: String, cron: Cron, tz: Tz },
}

impl Schedule {
    /// Builds the schedule from the spec's `every`, `schedule` and `timeZone` fields;
    /// `Ok(None)` means the token is never rotated automatically.
    pub fn parse(
        every: Option<&str>,
        schedule: Option<&str>,
        time_zone: Option<&str>,
    ) -> Result<Option<Schedule>, ScheduleError> {
        match (every, schedule) {
            (None, None) => Ok(None),
            (Some(_), Some(expr)) => Err(ScheduleError::InvalidCron {
                expr: expr.to_owned(),
                reason: "`every` and `schedule` are exclusive".to_owned(),
            }),
            (Some(every), None) => {
                let interval = parse_duration(every)?;
                // Zero would rotate in a hot loop, and an interval chrono cannot add to a
                // timestamp would only surface later, as a schedule that silently never fires.
                if interval.is_zero() || TimeDelta::from_std(interval).is_err() {
                    let value = every.to_owned();
                    return Err(ScheduleError::InvalidDuration { value });
                }
                Ok(Some(Schedule::Every(interval)))
            }
            (None, Some(expr)) => {
                let cron = parse_cron(expr)?;
                let unknown = |name: &str| ScheduleError::UnknownTimeZone { name: name.into() };
                let tz = time_zone
                    .map_or(Ok(Tz::UTC), |name| name.parse().map_err(|_| unknown(name)))?;
                let expr = expr.to_owned();
                Ok(Some(Schedule::Cron { expr, cron, tz }))
            }
        }
    }

    /// The first rotation time strictly after `last`.
    pub fn next_after(&self, last: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        match self {
            Schedule::Every(interval) => TimeDelta::from_std(*interval)
                .ok()
                .and_then(|step| last.checked_add_signed(step))
                .ok_or_else(|| ScheduleError::NeverFires {
                    expr: format!("every {}s", interval.as_secs()),
                }),
            Schedule::Cron { expr, cron, tz } => {
                let never = || ScheduleError::NeverFires { expr: expr.clone() };
                // croner cannot search outside these years, and it reads the wall clock through
                // chrono's naive_local, which panics at the edges of chrono's range.
                let year = last.year();
                if year <= croner::YEAR_LOWER_LIMIT || year >= croner::YEAR_UPPER_LIMIT {
                    return Err(never());
                }
                // Searching in the zone's wall clock is what makes "30 2 * * *" mean 02:30 local
                // on both sides of a DST change; croner resolves gaps and repeated hours.
                cron.find_next_occurrence(&last.with_timezone(tz), false)
                    .map(|next| next.with_timezone(&Utc))
                    .map_err(|_| never())
            }
        }
    }
}

pub(crate) fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidCron {
        expr: expr.to_owned(),
        reason,
    };
    // croner would otherwise read a 6th/7th field as seconds/years, so a Quartz-style
    // expression would quietly mean something else than the user intended.
    let fields = expr.split_whitespace().count();
    if fields != 5 && !expr.trim_start().starts_with('@') {
        return Err(invalid(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|err| invalid(err.to_string()))
}

/// A stable per-object offset in [0, jitter], derived from the object's uid by SHA-256
/// (first 8 bytes as a big-endian u64, modulo jitter in ms + 1).
pub(crate) fn jitter_offset(uid: &str, jitter: Duration) -> Duration {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // u128 because jitter in ms + 1 no longer fits a u64 for absurdly long jitters.
    let offset_ms = u128::from(u64::from_be_bytes(first)) % (jitter.as_millis() + 1);
    // The hash is a u64, so the remainder always fits.
    Duration::from_millis(u64::try_from(offset_ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables separate cases with `|` so that empty and space-padded inputs stay visible.
    fn cases(table: &str) -> impl Iterator<Item = &str> {
        table.split('|')
    }

    fn utc(s: &str) -> DateTime<Utc> {
        let parse = |format| chrono::NaiveDateTime::parse_from_str(s, format);
        let naive = parse("%Y-%m-%d %H:%M").or_else(|_| parse("%Y-%m-%d %H:%M:%S%.f"));
        naive.expect("test timestamp").and_utc()
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        let schedule = Schedule::parse(None, Some(expr), Some(tz));
        schedule.expect("valid").expect("given")
    }

    /// Rows are (cron expression, last rotation in UTC, expected next rotation in UTC).
    fn assert_next(tz: &str, table: &[(&str, &str, &str)]) {
        for (expr, last, want) in table {
            let got = cron(expr, tz).next_after(utc(last));
            assert_eq!(got, Ok(utc(want)), "{expr:?} in {tz} after {last}");
        }
    }

    fn is_never_fires(result: Result<DateTime<Utc>, ScheduleError>) -> bool {
        matches!(result, Err(ScheduleError::NeverFires { .. }))
    }

    #[test]
    fn duration_accepts_zero_single_and_compound_units() {
        let table = "0=0|0s=0|90s=90|10m=600|720h=2592000|1d=86400|1h30m=5400|1d12h=129600|\
                     30m1h1h=9000|007s=7|18446744073709551615s=18446744073709551615";
        for row in cases(table) {
            let (input, secs) = row.split_once('=').expect("row is input=seconds");
            let want = Ok(Duration::from_secs(secs.parse().expect("seconds")));
            assert_eq!(parse_duration(input), want, "{input}");
        }
    }

    const MALFORMED: &str = "|1.5h|-1h|1w|1H| 1h|1h |1 h|h|1|00|1h30|1hm|+1h|\u{ff11}h|1h\n|1s\0";

    #[test]
    fn duration_rejects_malformed_and_overflowing_input() {
        let overflow = "99999999999999999999h|18446744073709551616s|5124095576030432h|\
                        18446744073709551615s1s";
        for input in cases(MALFORMED).chain(cases(overflow)) {
            let value = input.to_owned();
            let want = Err(ScheduleError::InvalidDuration { value });
            assert_eq!(parse_duration(input), want, "{input:?}");
        }
    }

    #[test]
    fn duration_agrees_with_crd_pattern() {
        let pattern = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
        for input in cases(MALFORMED).chain(cases("0|0s|90s|1h30m|1d12h|30m1h|0h0m0s|007s")) {
            let matches = pattern.is_match(input);
            assert_eq!(parse_duration(input).is_ok(), matches, "{input:?}");
        }
    }

    #[test]
    fn schedule_is_every_or_cron_or_nothing_and_ignores_unused_time_zone() {
        let mars = Some("Mars/Olympus");
        assert!(matches!(Schedule::parse(None, None, mars), Ok(None)));
        let every = Schedule::parse(Some("1h"), None, mars);
        assert!(matches!(every, Ok(Some(Schedule::Every(d))) if d.as_secs() == 3600));
        let daily = Schedule::parse(None, Some("0 0 * * *"), None);
        let in_utc = matches!(daily, Ok(Some(Schedule::Cron { tz: Tz::UTC, .. })));
        assert!(in_utc, "{daily:?}");
    }

    #[test]
    fn schedule_rejects_every_together_with_cron() {
        let err = Schedule::parse(Some("1h"), Some("0 0 * * *"), None).map(|_| ());
        let reason = "`every` and `schedule` are exclusive".to_owned();
        let expr = "0 0 * * *".to_owned();
        assert_eq!(err, Err(ScheduleError::InvalidCron { expr, reason }));
    }

    #[test]
    fn every_rejects_zero_malformed_and_unrepresentable_intervals() {
        for every in cases("0|0s|0h0m|1.5h||9999999999999999d") {
            let err = Schedule::parse(Some(every), None, None).map(|_| ());
            let value = every.to_owned();
            let want = Err(ScheduleError::InvalidDuration { value });
            assert_eq!(err, want, "{every:?}");
        }
    }

    #[test]
    fn every_adds_interval_to_last_rotation() {
        let every = Schedule::Every(Duration::from_secs(5_400));
        let next = every.next_after(utc("2026-03-29 00:30"));
        assert_eq!(next, Ok(utc("2026-03-29 02:00")));
    }

    #[test]
    fn cron_rejects_six_seven_or_four_fields_and_bad_values() {
        let table = "0 0 0 * * *|0 0 0 * * * 2030|0 * * *||61 * * * *|* 24 * * *|* * 0 * *|\
                     * * * 13 *|* * * * 8|*/0 * * * *|5/5 * * * *|@reboot|@every 1h|a b c d e";
        for expr in cases(table) {
            let err = Schedule::parse(None, Some(expr), None).map(|_| ());
            let rejected =
                matches!(&err, Err(ScheduleError::InvalidCron { expr: e, .. }) if e == expr);
            assert!(rejected, "{expr:?}: {err:?}");
        }
    }

    #[test]
    fn cron_rejects_unknown_time_zone() {
        for name in cases("Mars/Olympus||CEST+1") {
            let err = Schedule::parse(None, Some("0 0 * * *"), Some(name)).map(|_| ());
            let want = Err(ScheduleError::UnknownTimeZone { name: name.into() });
            assert_eq!(err, want, "{name:?}");
        }
    }

    #[test]
    fn cron_supports_standard_syntax_and_aliases_strictly_after_last() {
        assert_next(
            "UTC",
            &[
                ("0 * * * *", "2026-01-07 10:00", "2026-01-07 11:00"),
                ("0 * * * *", "2026-01-07 09:59:59.999", "2026-01-07 10:00"),
                ("0 * * * *", "2026-01-07 10:00:00.001", "2026-01-07 11:00"),
                ("*/15 * * * *", "2026-01-07 10:07", "2026-01-07 10:15"),
                ("0 9-17/4 * * *", "2026-01-07 13:00", "2026-01-07 17:00"),
                ("0 0 1,15 * *", "2026-01-02 00:00", "2026-01-15 00:00"),
                ("0 0 * * MON", "2026-01-07 00:00", "2026-01-12 00:00"),
                ("0 0 * * sun", "2026-01-07 00:00", "2026-01-11 00:00"),
                ("0 0 * * 7", "2026-01-07 00:00", "2026-01-11 00:00"),
                ("0 0 1 JAN-MAR/2 *", "2026-01-07 00:00", "2026-03-01 00:00"),
                ("0 0 29 2 *", "2026-01-07 00:00", "2028-02-29 00:00"),
                ("@hourly", "2026-01-07 10:07", "2026-01-07 11:00"),
                ("@daily", "2026-01-07 10:07", "2026-01-08 00:00"),
                ("@weekly", "2026-01-07 10:07", "2026-01-11 00:00"),
                ("@monthly", "2026-01-07 10:07", "2026-02-01 00:00"),
                ("@yearly", "2026-01-07 10:07", "2027-01-01 00:00"),
            ],
        );
    }

    #[test]
    fn cron_in_berlin_fires_at_local_time_across_dst() {
        assert_next(
            "Europe/Berlin",
            &[
                ("0 9 * * *", "2026-03-27 12:00", "2026-03-28 08:00"),
                ("0 9 * * *", "2026-03-28 12:00", "2026-03-29 07:00"),
                ("0 9 * * *", "2026-10-24 12:00", "2026-10-25 08:00"),
                ("30 2 * * *", "2026-03-27 12:00", "2026-03-28 01:30"),
                // 02:30 is skipped on 2026-03-29: the run moves to 03:00 CEST, right after the gap.
                ("30 2 * * *", "2026-03-28 12:00", "2026-03-29 01:00"),
                ("30 2 * * *", "2026-03-29 01:00", "2026-03-30 00:30"),
                // 02:30 happens twice on 2026-10-25: a fixed time fires once, at the CEST one,
                ("30 2 * * *", "2026-10-24 12:00", "2026-10-25 00:30"),
                ("30 2 * * *", "2026-10-25 00:30", "2026-10-26 01:30"),
                ("30 2 * * *", "2026-10-25 01:00", "2026-10-26 01:30"),
                // while an interval fires in both halves of the repeated hour.
                ("*/30 * * * *", "2026-10-25 00:30", "2026-10-25 01:00"),
                ("*/30 * * * *", "2026-10-25 01:00", "2026-10-25 01:30"),
            ],
        );
    }

    #[test]
    fn cron_that_never_fires_reports_never_fires() {
        for expr in cases("0 0 30 2 *|0 0 31 4 *|0 0 31 2,4,6,9,11 *|0 0 31 2 +MON") {
            let err = cron(expr, "UTC").next_after(utc("2026-01-07 00:00"));
            assert_eq!(err, Err(ScheduleError::NeverFires { expr: expr.into() }));
        }
    }

    #[test]
    fn next_after_reports_never_fires_instead_of_panicking_at_chrono_limits() {
        let every = Schedule::Every(Duration::from_secs(1));
        assert!(is_never_fires(every.next_after(DateTime::<Utc>::MAX_UTC)));
        for tz in cases("UTC|America/Los_Angeles|Pacific/Kiritimati") {
            for last in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let next = cron("* * * * *", tz).next_after(last);
                assert!(is_never_fires(next), "{tz}");
            }
        }
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let jitters = [1, 600_000, u64::MAX].map(Duration::from_millis);
        for uid in cases("|a|5f0c7d2e-1f5b-4c1e-9a51-0d1c2b3a4f5e|\u{1f511}") {
            for jitter in jitters.into_iter().chain([Duration::MAX]) {
                let offset = jitter_offset(uid, jitter);
                assert!(offset <= jitter, "{uid:?}: {offset:?} > {jitter:?}");
                assert_eq!(offset, jitter_offset(uid, jitter), "{uid:?}");
            }
            // Sub-millisecond jitter truncates to zero milliseconds, so no offset at all.
            for jitter in [Duration::ZERO, Duration::from_micros(999)] {
                assert_eq!(jitter_offset(uid, jitter), Duration::ZERO, "{uid:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_uniformly() {
        let jitter = Duration::from_secs(3_600);
        let mut deciles = [0u32; 10];
        for i in 0..10_000 {
            let offset = jitter_offset(&format!("uid-{i}"), jitter).as_millis();
            let decile = offset * 10 / (jitter.as_millis() + 1);
            deciles[usize::try_from(decile).expect("decile below 10")] += 1;
        }
        for (decile, count) in deciles.iter().enumerate() {
            let share = f64::from(*count) / 100.0;
            assert!((8.0..=12.0).contains(&share), "decile {decile}: {share}%");
        }
    }
}
