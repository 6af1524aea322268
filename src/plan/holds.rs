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

    /// At the end of the grace period: revoke (`GraceEnded`), or hold while `held_by` or the
    /// version's use (`idleFor`) says a consumer has not moved, until `maxGracePeriod` (then
    /// `HoldExpired` and a Warning `StaleConsumer`). Returns the revocation reason, if any,
    /// the version's `retireAt`, and what holds it past its grace period (empty: nothing).
    pub(super) fn grace_or_hold(
        &mut self,
        old: u32,
        cutover: DateTime<Utc>,
        retire_at: Option<DateTime<Utc>>,
        held_by: &[String],
    ) -> (Option<RevokeReason>, Option<DateTime<Utc>>, Vec<String>) {
        let Some(grace_end) = retire_at.filter(|r| self.now >= *r) else {
            return (None, retire_at, Vec::new());
        };
        if held_by.is_empty() && self.o.spec.rotation.hold_until.is_empty() {
            return (Some(RevokeReason::GraceEnded), retire_at, Vec::new());
        }
        let Some(cap) = self.hold_cap(cutover) else {
            return (Some(RevokeReason::GraceEnded), retire_at, Vec::new());
        };
        let mut held_by = held_by.to_vec();
        if self.now < cap {
            held_by.extend(self.idle_hold(old, cutover, grace_end));
            if held_by.is_empty() {
                return (Some(RevokeReason::GraceEnded), retire_at, held_by);
            }
            return (None, Some(cap), held_by);
        }
        // At the cap the platform is not asked again: what it said last is what held it.
        held_by.extend(self.idle_held_by_record(old, cutover, grace_end));
        if held_by.is_empty() {
            return (Some(RevokeReason::GraceEnded), retire_at, held_by);
        }
        self.consumer_warnings.push(Warning {
            reason: "StaleConsumer",
            message: format!(
                "version {old} revoked at maxGracePeriod while still held by {}",
                held_by.join(", ")
            ),
        });
        (Some(RevokeReason::HoldExpired), Some(cap), Vec::new())
    }

    /// A newer cutover revokes a version still held (at most one is Retiring): said in a
    /// `StaleConsumer` naming what held it, as when `maxGracePeriod` ends a hold.
    pub(super) fn warn_if_held(&mut self, old: u32, current: u32) {
        let versions = self
            .o
            .status
            .map(|s| s.versions.as_slice())
            .unwrap_or_default();
        let Some(held) = versions
            .iter()
            .find(|v| v.version == old && !v.retire_held_by.is_empty())
        else {
            return;
        };
        self.consumer_warnings.push(Warning {
            reason: "StaleConsumer",
            message: format!(
                "version {old} revoked by the cutover to version {current} while still held by {}",
                held.retire_held_by.join(", ")
            ),
        });
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
