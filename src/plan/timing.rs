//! When a rotation is due: the schedule, grace period and jitter of the spec (a value the
//! schema cannot check is a spec problem, never a panic), and the rotate and revoke requests.

use chrono::{DateTime, TimeDelta, Utc};

use super::RotationReason;
use super::planner::Planner;
use super::spec_hash::spec_hash;
use crate::contract::{REVOKE_VERSION_ANNOTATION, ROTATE_ANNOTATION};
use crate::schedule::{Schedule, jitter_offset, parse_duration};
use crate::window::{self, Window};

impl Planner<'_, '_> {
    /// The first spec problem found wins: one clear message in the Ready condition.
    pub(super) fn spec_problem(&mut self, message: impl Into<String>) {
        if self.spec_error.is_none() {
            self.spec_error = Some(message.into());
        }
    }

    /// The schedule and its windows (kept in `self.windows`). None when either cannot be
    /// used: no scheduled rotation then, rather than one outside the windows meant.
    pub(super) fn schedule(&mut self) -> Option<Schedule> {
        let r = &self.o.spec.rotation;
        let windows: Result<Vec<Window>, String> = (r.windows.iter().enumerate())
            .map(|(i, w)| {
                Window::parse(&w.schedule, &w.duration, r.time_zone.as_deref())
                    .map_err(|e| format!("spec.rotation.windows[{i}]: {e}"))
            })
            .collect();
        let schedule = Schedule::parse(
            r.every.as_deref(),
            r.schedule.as_deref(),
            r.time_zone.as_deref(),
        );
        match (schedule, windows) {
            (Ok(schedule), Ok(windows)) => {
                self.windows = windows;
                schedule
            }
            (Err(e), _) => {
                self.spec_problem(e.to_string());
                None
            }
            (_, Err(e)) => {
                self.spec_problem(e);
                None
            }
        }
    }

    /// The grace period, or None when it cannot be used (a spec error): then no grace period
    /// ever ends, which keeps tokens valid rather than revoking them early.
    pub(super) fn grace(&mut self) -> Option<TimeDelta> {
        let value = &self.o.spec.rotation.grace_period;
        let grace = parse_duration(value)
            .ok()
            .and_then(|d| TimeDelta::from_std(d).ok());
        if grace.is_none() {
            self.spec_problem(format!(
                "spec.rotation.gracePeriod {value:?} is not a usable duration"
            ));
        }
        grace
    }

    /// The object's jitter offset, in whole seconds: the precision status keeps, so the
    /// nextRotationTime status shows is the instant the rotation happens.
    pub(super) fn jitter(&mut self) -> TimeDelta {
        let Some(value) = self.o.spec.rotation.jitter.as_deref() else {
            return TimeDelta::zero();
        };
        let offset = parse_duration(value)
            .ok()
            .map(|jitter| jitter_offset(self.o.uid, jitter).as_secs())
            .and_then(|secs| i64::try_from(secs).ok())
            .and_then(TimeDelta::try_seconds);
        offset.unwrap_or_else(|| {
            self.spec_problem(format!(
                "spec.rotation.jitter {value:?} is not a usable duration"
            ));
            TimeDelta::zero()
        })
    }

    /// When `current`'s scheduled rotation starts: the schedule's time plus jitter, or if
    /// that is not inside a window, the next time one is open (never before now once due).
    pub(super) fn due_at(
        &self,
        schedule: &Schedule,
        current: u32,
        jitter: TimeDelta,
    ) -> Result<DateTime<Utc>, String> {
        let last = self.versions[&current].activated_at.unwrap_or(self.now);
        let next = schedule.next_after(last).map_err(|e| e.to_string())?;
        let due = next.checked_add_signed(jitter).ok_or_else(|| {
            "spec.rotation.jitter pushes the next rotation beyond the supported time range"
                .to_string()
        })?;
        if self.windows.is_empty() {
            return Ok(due);
        }
        window::first_open_from(&self.windows, due.max(self.now))
            .map_err(|e| format!("spec.rotation.windows: {e}"))
    }

    pub(super) fn rotation_due(
        &self,
        current: u32,
        schedule: Option<&Schedule>,
        jitter: TimeDelta,
    ) -> Option<RotationReason> {
        let o = self.o;
        if self
            .gone_at_platform
            .is_some_and(|(gone, _)| gone == current)
        {
            return Some(RotationReason::ServedTokenRevoked);
        }
        if self.revoke_requested() == Some(current) {
            return Some(RotationReason::RevokeRequested);
        }
        let requested = o.annotations.get(ROTATE_ANNOTATION);
        if requested.is_some() && requested != o.status.and_then(|s| s.last_rotate_request.as_ref())
        {
            // A value first seen on a brand-new object is not a request to rotate again, nor is
            // one a cutover already answered whose status write was lost (current is newer than
            // what status recorded).
            let recorded = o.status.and_then(|s| s.current_version);
            if recorded.is_some_and(|r| r >= current) {
                return Some(RotationReason::Manual);
            }
        }
        if o.spec.rotation.rotate_on_change {
            let minted_for = o
                .versioned
                .get(&current)
                .and_then(|v| v.spec_hash.as_deref());
            if minted_for.is_some_and(|h| h != spec_hash(o.spec)) {
                return Some(RotationReason::SpecChanged);
            }
        }
        let due = self.due_at(schedule?, current, jitter).ok()?;
        (self.now >= due).then_some(RotationReason::Schedule)
    }

    /// The version a new (not yet handled) revoke-version annotation value names.
    pub(super) fn revoke_requested(&self) -> Option<u32> {
        let value = self.o.annotations.get(REVOKE_VERSION_ANNOTATION)?;
        if Some(value) == self.o.status.and_then(|s| s.last_revoke_request.as_ref()) {
            return None;
        }
        value.trim().trim_start_matches('v').parse().ok()
    }
}
