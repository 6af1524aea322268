//! `holdUntil.idleFor`: a Retiring issuer token is held while the platform shows it used
//! since its successor's cutover and less than `idleFor` ago. The platform is asked (a
//! listing authenticated with the current token, never the judged one) at the end of the
//! grace period and then only when the last answer could have become idle: at
//! `last_used_at + idleFor`. One request per held token per `idleFor` at most.

use chrono::{DateTime, TimeDelta, Utc};

use super::planner::Planner;
use super::{USAGE_RETRY_SECONDS, Usage};
use crate::schedule::parse_duration;

/// What the platform's last answer says of a retiring token.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not used since the cutover, or idle for `idleFor`: it may go.
    Idle,
    /// Used `ago` before the answer; idle at `idle_at` if nobody uses it again.
    Used {
        ago: TimeDelta,
        idle_at: DateTime<Utc>,
    },
}

fn judge(usage: &Usage, cutover: DateTime<Utc>, idle_for: TimeDelta) -> Verdict {
    match usage.last_used_at.filter(|used| *used > cutover) {
        None => Verdict::Idle,
        Some(used) if usage.checked_at - used >= idle_for => Verdict::Idle,
        Some(used) => Verdict::Used {
            ago: (usage.checked_at - used).max(TimeDelta::zero()),
            // Past the end of time (an absurd idleFor) it is never idle: maxGracePeriod ends it.
            idle_at: (used.checked_add_signed(idle_for)).unwrap_or(DateTime::<Utc>::MAX_UTC),
        },
    }
}

const NOT_CHECKED: &str = "usage not checked yet";

impl Planner<'_, '_> {
    /// Why version `old` (retiring since `cutover`, its grace period over at `grace_end`) is
    /// still held by its use, if it is. Asks the platform (`usage_query`) when the last
    /// answer is older than the grace period's end or could have become idle since.
    pub(super) fn idle_hold(
        &mut self,
        old: u32,
        cutover: DateTime<Utc>,
        grace_end: DateTime<Utc>,
    ) -> Option<String> {
        let idle_for = self.idle_for()?;
        // The current token is asked with: not before its Secret is there (a pass that cuts
        // over to a version it mints asks in the pass its writes trigger).
        let current = self.current.filter(|c| *c != old)?;
        if !self.o.versioned.contains_key(&current) {
            return Some(NOT_CHECKED.into());
        }
        self.judged_against(old)?;
        let reading = self.o.usage.as_ref().filter(|r| r.version == old);
        let asked = reading.is_some();
        match reading.map(|r| &r.usage) {
            Some(Err(why)) => {
                self.wake(self.now + retry());
                return Some(format!("usage unreadable: {why}"));
            }
            Some(Ok(usage)) => self.versions.get_mut(&old)?.usage = Some(*usage),
            None => {}
        }
        let Some(usage) = self.answer_since(old, grace_end) else {
            if !asked {
                self.usage_query = Some(old);
            }
            return Some(NOT_CHECKED.into());
        };
        match judge(&usage, cutover, idle_for) {
            // An idle answer is acted on at once; one older than a retry (the revocation it
            // allowed failed) is asked again first.
            Verdict::Idle if asked || self.now - usage.checked_at < retry() => None,
            Verdict::Idle => {
                self.usage_query = Some(old);
                Some(NOT_CHECKED.into())
            }
            Verdict::Used { ago, idle_at } => {
                if self.now < idle_at {
                    self.wake(idle_at);
                } else if asked {
                    // Idle since the answer (it is a whole second old): asked again next pass.
                    self.wake(self.now + TimeDelta::seconds(1));
                } else {
                    self.usage_query = Some(old);
                }
                Some(used(ago))
            }
        }
    }

    /// At `maxGracePeriod`: what the last answer (since the grace period's end) said, without
    /// asking again. None when there is none: a grace period reaching the cap left the hold
    /// no time, and nothing is known to have held it.
    pub(super) fn idle_held_by_record(
        &mut self,
        old: u32,
        cutover: DateTime<Utc>,
        grace_end: DateTime<Utc>,
    ) -> Option<String> {
        let idle_for = self.idle_for()?;
        self.judged_against(old)?;
        let usage = self.answer_since(old, grace_end)?;
        match judge(&usage, cutover, idle_for) {
            Verdict::Idle => None,
            Verdict::Used { ago, .. } => Some(used(ago)),
        }
    }

    /// The platform's last answer about `old`'s use, if it came after the grace period's end
    /// (an earlier one says nothing of consumers that have had their time to move).
    fn answer_since(&self, old: u32, grace_end: DateTime<Utc>) -> Option<Usage> {
        (self.versions.get(&old)?.usage).filter(|u| u.checked_at >= grace_end)
    }

    /// The current version, when its token can tell `old`'s use: both minted by one issuer
    /// object (a listing with the current token is the only way to ask without touching
    /// `old`). Across a change of issuer, or for a version minted locally, the grace period
    /// alone decides, as for `revokeAfterUse`.
    fn judged_against(&self, old: u32) -> Option<u32> {
        let current = self.current.filter(|c| *c != old)?;
        let issuer_of = |v: u32| self.versions.get(&v).and_then(|r| r.issuer.as_ref());
        let minted_by = issuer_of(old)?;
        (issuer_of(current) == Some(minted_by)).then_some(current)
    }

    /// `holdUntil.idleFor`, for issuer tokens; None when unset or unusable (a spec problem).
    fn idle_for(&mut self) -> Option<TimeDelta> {
        let spec = self.o.spec;
        let value = spec.rotation.hold_until.idle_for.as_deref()?;
        spec.issuer_ref.as_ref()?;
        let idle_for = parse_duration(value)
            .ok()
            .and_then(|d| TimeDelta::from_std(d).ok());
        if idle_for.is_none() {
            self.spec_problem(format!(
                "spec.rotation.holdUntil.idleFor {value:?} is not a usable duration"
            ));
        }
        idle_for
    }
}

fn retry() -> TimeDelta {
    TimeDelta::seconds(USAGE_RETRY_SECONDS)
}

/// What holds a version in use, in `retireHeldBy`.
fn used(ago: TimeDelta) -> String {
    format!("used {} ago", span(ago))
}

/// `40s`, `3m20s`, `2h5m`: how long ago, for people.
fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn usage(last_used: Option<i64>, checked: i64) -> Usage {
        Usage {
            last_used_at: last_used.map(at),
            checked_at: at(checked),
        }
    }

    #[test]
    fn a_token_not_used_since_the_cutover_is_idle_at_once() {
        let idle = TimeDelta::minutes(10);
        assert_eq!(judge(&usage(None, 100), at(0), idle), Verdict::Idle);
        assert_eq!(judge(&usage(Some(-5), 100), at(0), idle), Verdict::Idle);
    }

    #[test]
    fn a_token_used_after_the_cutover_is_held_until_idle_for_has_passed_since() {
        let idle = TimeDelta::seconds(600);
        assert_eq!(
            judge(&usage(Some(60), 100), at(0), idle),
            Verdict::Used {
                ago: TimeDelta::seconds(40),
                idle_at: at(660)
            }
        );
        assert_eq!(judge(&usage(Some(60), 660), at(0), idle), Verdict::Idle);
    }

    #[test]
    fn spans_read_as_people_say_them() {
        let s = TimeDelta::seconds;
        assert_eq!(span(s(40)), "40s");
        assert_eq!(span(s(180)), "3m");
        assert_eq!(span(s(200)), "3m20s");
        assert_eq!(span(s(7200)), "2h");
        assert_eq!(span(s(7500)), "2h5m");
        assert_eq!(span(s(-3)), "0s");
    }
}
