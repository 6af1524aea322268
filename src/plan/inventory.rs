//! The issuer inventory, as one WorkspaceToken plans it: when its group is due it lists the
//! workspace with its current token (when that disturbs no judgement of that token's use);
//! from its group's last listing it reports the live tokens nobody holds
//! (`status.unmanagedTokens`, a Warning when they grow), revokes those unmanaged for
//! `revokeUnmanagedAfter` (only from a complete listing this pass made), and notices a served
//! token the platform no longer accepts.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};

use super::planner::Planner;
use super::{InventoryInput, Listing};
use super::{Step, Warning};
use crate::api::{UnmanagedTokenStatus, VersionState};
use crate::issuer::http::PlatformToken;
use crate::schedule::parse_duration;
use crate::time::{floor_second, from_time, to_time};

/// At most this many tokens in `status.unmanagedTokens` (the oldest first).
pub const MAX_LISTED: usize = 100;

/// At most this many prefixes named in one `UnmanagedTokens` Warning.
const MAX_NAMED: usize = 10;

/// A newer use of an unmanaged token within this long of the recorded one is not written: a
/// token in daily use would otherwise rewrite every status of its workspace at each listing.
const LAST_USE_GRANULARITY_HOURS: i64 = 1;

/// A version created this long before a listing must be in it if it is live.
const LISTING_SLACK_SECONDS: i64 = 5;

impl Planner<'_, '_> {
    /// The current version, when the platform no longer has it: absent from a complete
    /// listing asked for well after the version was verified (which the platform answered
    /// listing it), or refused (401) as the bearer of one.
    pub(super) fn served_gone(&self) -> Option<(u32, &'static str)> {
        let inventory = self.o.inventory.as_ref()?;
        let reading = inventory.latest.as_ref()?;
        let current = self.current?;
        let record = self.versions.get(&current)?;
        // Only a version this issuer minted and verified is in its listings.
        let verified_at = self.o.versioned.get(&current)?.verified_at?;
        if record.issuer.as_ref() != Some(&inventory.issuer) {
            return None;
        }
        let prefix = record.token_prefix.as_deref()?;
        match &reading.outcome {
            Ok(listing) => {
                let after = verified_at + TimeDelta::seconds(LISTING_SLACK_SECONDS);
                let absent = !listing.tokens.iter().any(|t| t.prefix == prefix);
                (listing.complete && reading.listed_at > after && absent).then_some((
                    current,
                    "the platform's listing of the workspace no longer has it",
                ))
            }
            Err(failure) => (failure.refused.as_ref() == Some(&(self.o.uid.to_string(), current)))
                .then_some((current, "the platform refused it (HTTP 401)")),
        }
    }

    /// Status, Warnings and steps from the group's inventory; the listing when it is due.
    pub(super) fn plan_inventory(&mut self) {
        let Some(inventory) = self.o.inventory.as_ref() else {
            return;
        };
        self.list_when_due(inventory);
        if let Some((gone, why)) = self.gone_at_platform
            && self.minted_now()
        {
            self.served_gone_warning(gone, why);
        }
        let Some(reading) = inventory.latest.as_ref() else {
            return;
        };
        let Some(listing) = reading.outcome.as_ref().ok().filter(|l| l.complete) else {
            return;
        };
        let own: BTreeSet<String> = (self.versions.values())
            .filter_map(|v| v.token_prefix.clone())
            .collect();
        let mut unmanaged: Vec<&PlatformToken> = listing.unmanaged(&own).collect();
        unmanaged.sort_by(|a, b| (a.created_at, &a.prefix).cmp(&(b.created_at, &b.prefix)));
        let listed_at = floor_second(reading.listed_at);
        let entries: Vec<UnmanagedTokenStatus> = (unmanaged.iter())
            .map(|t| self.entry(t, listed_at))
            .collect();
        // Only what status lists can be "not reported before".
        self.warn_if_grown(&entries[..entries.len().min(MAX_LISTED)]);
        if inventory.fresh {
            self.revoke_unmanaged(inventory, listing, &unmanaged, &entries);
        }
        self.unmanaged = Some(entries.into_iter().take(MAX_LISTED).collect());
    }

    /// Asks for a listing (with the current token) when the group is due and that token may
    /// be the bearer; else wakes when it is due.
    fn list_when_due(&mut self, inventory: &InventoryInput) {
        if inventory.due_at > self.now {
            self.wake(inventory.due_at);
            return;
        }
        if inventory.fresh {
            return;
        }
        if let Some(current) = self.current.filter(|c| self.may_list_with(*c, inventory)) {
            self.inventory_query = Some(current);
        }
    }

    /// Whether the inventory may authenticate with version `current`: the issuer's, verified,
    /// current before this pass, and no judgement reads its use: `revokeAfterUse` releases a
    /// Retiring version on the first use of the current token after the cutover, and a
    /// listing is a use.
    fn may_list_with(&self, current: u32, inventory: &InventoryInput) -> bool {
        let o = self.o;
        let record = &self.versions[&current];
        let verified = o.versioned.get(&current).is_some_and(|v| v.verified);
        let settled = o.status.and_then(|s| s.current_version) == Some(current);
        let judged = o.spec.rotation.revoke_after_use
            && (self.versions.values()).any(|v| v.state == VersionState::Retiring);
        record.issuer.as_ref() == Some(&inventory.issuer)
            && record.state == VersionState::Active
            && verified
            && settled
            && !judged
            && !self.minted_now()
    }

    fn minted_now(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Mint { .. }))
    }

    fn served_gone_warning(&mut self, gone: u32, why: &str) {
        let prefix = (self.versions.get(&gone))
            .and_then(|v| v.token_prefix.as_deref())
            .unwrap_or("unknown");
        self.consumer_warnings.push(Warning {
            reason: "ServedTokenRevoked",
            message: format!(
                "the served token, version {gone} (prefix {prefix}), is no longer live at the \
                 platform: {why}; a new version replaces it now, without waiting for the next \
                 scheduled rotation"
            ),
        });
    }

    /// Its status entry: since when it is unmanaged as status said (else this listing), its
    /// last use as recorded unless the platform's is an hour newer.
    fn entry(&self, token: &PlatformToken, listed_at: DateTime<Utc>) -> UnmanagedTokenStatus {
        let created_at = to_time(floor_second(token.created_at));
        let before = self
            .previous_unmanaged()
            .find(|e| e.prefix == token.prefix && e.created_at == created_at);
        let last_used = token.last_used_at.map(floor_second);
        let recorded = before.and_then(|b| b.last_used_at.as_ref()).map(from_time);
        let last_used = match (recorded, last_used) {
            (Some(recorded), Some(used))
                if used - recorded < TimeDelta::hours(LAST_USE_GRANULARITY_HOURS) =>
            {
                Some(recorded)
            }
            (_, used) => used,
        };
        UnmanagedTokenStatus {
            prefix: token.prefix.clone(),
            created_at,
            last_used_at: last_used.map(to_time),
            unmanaged_since: before
                .map_or_else(|| to_time(listed_at), |b| b.unmanaged_since.clone()),
        }
    }

    fn previous_unmanaged(&self) -> impl Iterator<Item = &UnmanagedTokenStatus> {
        (self.o.status.iter()).flat_map(|s| s.unmanaged_tokens.iter())
    }

    /// A Warning naming the tokens that were not reported before.
    fn warn_if_grown(&mut self, entries: &[UnmanagedTokenStatus]) {
        let new: Vec<&UnmanagedTokenStatus> = (entries.iter())
            .filter(|e| {
                !self
                    .previous_unmanaged()
                    .any(|p| p.prefix == e.prefix && p.created_at == e.created_at)
            })
            .collect();
        if new.is_empty() {
            return;
        }
        let mut named: Vec<String> = (new.iter().take(MAX_NAMED))
            .map(|e| {
                let used = (e.last_used_at.as_ref()).map_or("never used".to_string(), |t| {
                    format!("last used {}", rfc3339(from_time(t)))
                });
                format!(
                    "{} (created {}, {used})",
                    e.prefix,
                    rfc3339(from_time(&e.created_at))
                )
            })
            .collect();
        if new.len() > MAX_NAMED {
            named.push(format!("and {} more", new.len() - MAX_NAMED));
        }
        self.consumer_warnings.push(Warning {
            reason: "UnmanagedTokens",
            message: format!(
                "{} token(s) live at the platform for workspace {} are held by no \
                 WorkspaceToken: {}",
                new.len(),
                self.o.spec.workspace_id,
                named.join(", ")
            ),
        });
    }

    /// `revokeUnmanagedAfter`: the tokens unmanaged that long, unless any version anywhere in
    /// the cluster holds their prefix.
    fn revoke_unmanaged(
        &mut self,
        inventory: &InventoryInput,
        listing: &Listing,
        unmanaged: &[&PlatformToken],
        entries: &[UnmanagedTokenStatus],
    ) {
        let Some(after) = (inventory.revoke_unmanaged_after.as_deref())
            .and_then(|d| parse_duration(d).ok())
            .and_then(|d| TimeDelta::from_std(d).ok())
        else {
            return;
        };
        for (token, entry) in unmanaged.iter().zip(entries) {
            let unmanaged_for = self.now - from_time(&entry.unmanaged_since);
            if unmanaged_for < after || listing.held_elsewhere.contains(&token.prefix) {
                continue;
            }
            self.steps.push(Step::RevokeUnmanaged {
                id: token.id.clone(),
                prefix: token.prefix.clone(),
                created_at: from_time(&entry.created_at),
            });
        }
        // The next due listing comes at the interval; one that becomes old enough earlier
        // waits for it (the listing that revokes it must be fresh).
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
