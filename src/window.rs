//! Rotation windows: a scheduled rotation starts only inside one. A window opens at each time
//! of its cron expression, read in the rotation's time zone (so `0 2 * * 1-5` is 02:00 local
//! on both sides of a DST change), and stays open for its duration.

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::schedule::{ScheduleError, parse_cron, parse_duration};

#[derive(Debug, Clone)]
pub struct Window {
    expr: String,
    cron: Cron,
    tz: Tz,
    open_for: TimeDelta,
}

impl Window {
    /// One window of `spec.rotation.windows`, in `time_zone` (default UTC).
    pub fn parse(
        schedule: &str,
        duration: &str,
        time_zone: Option<&str>,
    ) -> Result<Window, ScheduleError> {
        let cron = parse_cron(schedule)?;
        let invalid = || ScheduleError::InvalidDuration {
            value: duration.to_owned(),
        };
        let open_for = parse_duration(duration)
            .ok()
            .filter(|d| !d.is_zero())
            .and_then(|d| TimeDelta::from_std(d).ok())
            .ok_or_else(invalid)?;
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| ScheduleError::UnknownTimeZone { name: name.into() })?,
        };
        Ok(Window {
            expr: schedule.to_owned(),
            cron,
            tz,
            open_for,
        })
    }

    /// The first instant at or after `t` at which this window is open: `t` itself inside an
    /// opening, else the next opening.
    pub fn first_open_from(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        // The one opening that can contain `t` is the first strictly after `t - open_for`:
        // it opened no earlier than that, so it is still open at `t` if it opened by then.
        // (No 5-field cron is quieter than four years, so a longer window is always open.)
        let since = t
            .checked_sub_signed(self.open_for.min(TimeDelta::days(4 * 366)))
            .ok_or_else(|| self.never())?;
        let opening = self.next_opening_after(since)?;
        Ok(if opening <= t { t } else { opening })
    }

    /// Whether the window is open at `t`.
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        self.first_open_from(t) == Ok(t)
    }

    fn next_opening_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let year = t.year();
        if year <= croner::YEAR_LOWER_LIMIT || year >= croner::YEAR_UPPER_LIMIT {
            return Err(self.never());
        }
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .map(|next| next.with_timezone(&Utc))
            .map_err(|_| self.never())
    }

    fn never(&self) -> ScheduleError {
        ScheduleError::NeverFires {
            expr: self.expr.clone(),
        }
    }
}

/// The first instant at or after `t` inside any of `windows` (`t` itself without windows).
pub fn first_open_from(
    windows: &[Window],
    t: DateTime<Utc>,
) -> Result<DateTime<Utc>, ScheduleError> {
    if windows.is_empty() {
        return Ok(t);
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    let mut last_error = None;
    for window in windows {
        match window.first_open_from(t) {
            Ok(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
            Err(e) => last_error = Some(e),
        }
    }
    earliest.ok_or_else(|| last_error.expect("at least one window"))
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
