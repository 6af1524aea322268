//! `holdUntil` and `maxGracePeriod`: what keeps a Retiring version past its grace period,
//! and the latest it is revoked all the same.

use chrono::{DateTime, TimeDelta, Utc};

use super::planner::Planner;
use super::{RevokeReason, Warning};
use crate::rollout;
use crate::schedule::parse_duration;

/// `maxGracePeriod` when the spec leaves it out.
pub const DEFAULT_MAX_GRACE_PERIOD: &str = "24h";

impl Planner<'_, '_> {
    /// Why the version before the one cut over at `cutover` may not be revoked yet, one
    /// short line per consumer that has not moved (`Deployment/agent 2/3 updated`).
    pub(super) fn held_by(&self, cutover: DateTime<Utc>) -> Vec<String> {
        let spec = self.o.spec;
        if !spec.rotation.hold_until.rollout_complete {
            return Vec::new();
        }
        spec.restart_targets
            .iter()
            .filter_map(|t| {
                let seen = self.o.rollouts.get(&(t.kind, t.name.clone()));
                rollout::holds(t.kind, &t.name, seen, cutover)
            })
            .collect()
    }

    /// At the end of the grace period: revoke (`GraceEnded`), or hold while `held_by` says a
    /// consumer has not moved, until `maxGracePeriod` (then `HoldExpired` and a Warning
    /// `StaleConsumer`). Returns the revocation reason, if any, the version's `retireAt`, and
    /// whether it is held past its grace period.
    pub(super) fn grace_or_hold(
        &mut self,
        old: u32,
        cutover: DateTime<Utc>,
        retire_at: Option<DateTime<Utc>>,
        held_by: &[String],
    ) -> (Option<RevokeReason>, Option<DateTime<Utc>>, bool) {
        if retire_at.is_none_or(|r| self.now < r) {
            return (None, retire_at, false);
        }
        if held_by.is_empty() {
            return (Some(RevokeReason::GraceEnded), retire_at, false);
        }
        let Some(cap) = self.hold_cap(cutover) else {
            return (Some(RevokeReason::GraceEnded), retire_at, false);
        };
        if self.now < cap {
            return (None, Some(cap), true);
        }
        self.consumer_warnings.push(Warning {
            reason: "StaleConsumer",
            message: format!(
                "version {old} revoked at maxGracePeriod while still held by {}",
                held_by.join(", ")
            ),
        });
        (Some(RevokeReason::HoldExpired), Some(cap), false)
    }

    /// `cutover + maxGracePeriod`: no hold keeps a version past it. None when the duration
    /// cannot be used (a spec problem): then nothing is held at all, as before holds existed.
    fn hold_cap(&mut self, cutover: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let value = self
            .o
            .spec
            .rotation
            .max_grace_period
            .as_deref()
            .unwrap_or(DEFAULT_MAX_GRACE_PERIOD);
        let cap = parse_duration(value)
            .ok()
            .and_then(|d| TimeDelta::from_std(d).ok())
            .and_then(|d| cutover.checked_add_signed(d));
        if cap.is_none() {
            self.spec_problem(format!(
                "spec.rotation.maxGracePeriod {value:?} is not a usable duration"
            ));
        }
        cap
    }
}
