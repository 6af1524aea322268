//! The issuer inventory: which tokens are live at a platform for a workspace that no
//! WorkspaceToken holds, and whether each served token is still live there.
//!
//! One listing per (issuer, workspace) per `--inventory-interval`, made by whichever
//! WorkspaceToken of that group is due first and may list (its current token is the bearer:
//! see `plan::inventory` for when it may not), plus the listing every rotation's verification
//! makes anyway. The first listing after a start comes at an offset of the interval that
//! depends on the group alone, so a restart spreads its listings over one interval instead of
//! sending them all at once. The last listing of each group is kept here, in memory; status
//! keeps what it said until a listing says otherwise (a restart writes nothing).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use kube::runtime::reflector::Store;

use crate::api::WorkspaceToken;
use crate::issuer::caches::IssuerCaches;
use crate::issuer::http::PlatformToken;
use crate::issuer::resolve::ResolvedIssuer;
use crate::plan::{Answer, InventoryInput, Listing, Reading};
use crate::secrets::SecretIndex;
use crate::token_cache::{CachedToken, cached_ref, recorded_prefixes};

mod holders;

pub use holders::HolderIndex;

/// Tokens created this little before a listing may be a mint still on its way into a
/// versioned Secret (besides the issuer's timeout): not judged yet.
pub const IN_FLIGHT_SLACK_SECONDS: i64 = 5;

/// One issuer's view of one workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub issuer_uid: String,
    pub workspace: String,
}

#[derive(Default)]
struct Entry {
    latest: Option<Arc<Reading>>,
    claimed_at: Option<DateTime<Utc>>,
}

/// The inventory's schedule and last listings, shared by every reconcile.
pub struct Inventory {
    interval: TimeDelta,
    started: DateTime<Utc>,
    groups: Mutex<HashMap<GroupKey, Entry>>,
    pub holders: HolderIndex,
}

impl Inventory {
    /// `interval`: how often each group is listed (0: never on a schedule, only at rotations).
    pub fn new(interval: std::time::Duration, started: DateTime<Utc>) -> Self {
        Inventory {
            interval: TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX),
            started,
            groups: Mutex::default(),
            holders: HolderIndex::default(),
        }
    }

    pub fn key(issuer: &ResolvedIssuer, wst: &WorkspaceToken) -> GroupKey {
        GroupKey {
            issuer_uid: issuer.identity.uid.clone(),
            workspace: wst.spec.workspace_id.clone(),
        }
    }

    /// What `wst`'s plan sees of its group: None when it mints locally or its issuer may not
    /// be used now.
    pub fn input_for(
        &self,
        wst: &WorkspaceToken,
        issuer: &ResolvedIssuer,
        now: DateTime<Utc>,
    ) -> InventoryInput {
        let key = Self::key(issuer, wst);
        let groups = self.groups.lock().expect("inventory");
        let entry = groups.get(&key);
        InventoryInput {
            issuer: issuer.identity.clone(),
            revoke_unmanaged_after: issuer.revoke_unmanaged_after.clone(),
            due_at: self.due_at(&key, entry, now),
            latest: entry.and_then(|e| e.latest.clone()),
            fresh: false,
        }
    }

    #[cfg(test)]
    fn due(&self, key: &GroupKey) -> DateTime<Utc> {
        let groups = self.groups.lock().expect("inventory");
        self.due_at(key, groups.get(key), self.started)
    }

    /// A whole interval after the last listing or its claim; without one (after a start, or
    /// a group new or forgotten), at the group's own offset in the interval, next after now.
    fn due_at(&self, key: &GroupKey, entry: Option<&Entry>, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.interval.is_zero() {
            return DateTime::<Utc>::MAX_UTC;
        }
        let last = entry.and_then(|e| {
            let listed = e.latest.as_ref().map(|r| r.listed_at);
            listed.max(e.claimed_at)
        });
        let due = match last {
            Some(last) => last.checked_add_signed(self.interval),
            None => self.next_offset(key, now),
        };
        due.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The first moment at or after `now` that is the group's offset in an interval counted
    /// from the start: a group forgotten for a moment (its issuer not Ready) is not due at
    /// once with every other one.
    fn next_offset(&self, key: &GroupKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.started.checked_add_signed(self.offset(key))?;
        if first >= now {
            return Some(first);
        }
        let interval = self.interval.num_milliseconds().max(1);
        let behind = (now - first).num_milliseconds();
        let rounds = (behind + interval - 1) / interval;
        first.checked_add_signed(TimeDelta::milliseconds(rounds.checked_mul(interval)?))
    }

    /// Where in the interval the group's first listing falls: the same for a group on every
    /// start, spread evenly over the groups.
    fn offset(&self, key: &GroupKey) -> TimeDelta {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let millis = self.interval.num_milliseconds().max(1) as u64;
        TimeDelta::milliseconds((hasher.finish() % millis) as i64)
    }

    /// Takes the group's turn to list at `now`, unless it is not due (another token took it).
    pub fn claim(&self, key: &GroupKey, now: DateTime<Utc>) -> bool {
        let mut groups = self.groups.lock().expect("inventory");
        let entry = groups.get(key);
        if self.due_at(key, entry, now) > now {
            return false;
        }
        groups.entry(key.clone()).or_default().claimed_at = Some(now);
        true
    }

    /// Keeps `reading` as the group's last listing.
    /// A listing asked for before the one kept (a slow answer) is not kept: the group's
    /// latest stays the newest. Returns the group's latest.
    pub fn record(&self, key: GroupKey, reading: Reading) -> Arc<Reading> {
        let mut groups = self.groups.lock().expect("inventory");
        let entry = groups.entry(key).or_default();
        entry.claimed_at = None;
        match &entry.latest {
            Some(kept) if kept.listed_at > reading.listed_at => kept.clone(),
            _ => {
                let reading = Arc::new(reading);
                entry.latest = Some(reading.clone());
                reading
            }
        }
    }

    /// Forgets the groups no WorkspaceToken of the cache belongs to any more.
    pub fn forget_gone(&self, alive: impl Fn(&GroupKey) -> bool) {
        self.groups
            .lock()
            .expect("inventory")
            .retain(|k, _| alive(k));
    }

    /// How many distinct unmanaged tokens the last listings show, over every group.
    pub fn unmanaged_count(&self) -> usize {
        let none = BTreeSet::new();
        let groups = self.groups.lock().expect("inventory");
        (groups.values())
            .filter_map(|e| e.latest.as_ref()?.outcome.as_ref().ok())
            .map(|listing| listing.unmanaged(&none).count())
            .sum()
    }
}

/// What the cluster says of a platform's answer about `key`'s workspace: which listed tokens
/// its WorkspaceTokens hold. Reads caches only.
pub struct Judge<'a> {
    pub tokens: &'a Store<CachedToken>,
    pub index: &'a SecretIndex,
    pub issuers: &'a IssuerCaches,
    pub holders: &'a HolderIndex,
}

impl Judge<'_> {
    pub fn reading(
        &self,
        key: &GroupKey,
        issuer: &ResolvedIssuer,
        listed_at: DateTime<Utc>,
        answer: Answer,
    ) -> Reading {
        let outcome = match answer {
            Answer::Failed(failure) => Err(failure),
            Answer::Listed { tokens, complete } => {
                Ok(self.listing(key, issuer, listed_at, tokens, complete))
            }
        };
        Reading { listed_at, outcome }
    }

    fn listing(
        &self,
        key: &GroupKey,
        issuer: &ResolvedIssuer,
        listed_at: DateTime<Utc>,
        tokens: Vec<PlatformToken>,
        complete: bool,
    ) -> Listing {
        let slack = TimeDelta::seconds(IN_FLIGHT_SLACK_SECONDS);
        let call = TimeDelta::seconds(i64::from(issuer.http.timeout_seconds)) + slack;
        let mut in_flight = vec![(listed_at - call, DateTime::<Utc>::MAX_UTC)];
        let mut held = BTreeSet::new();
        for holder in self.holders.of(&key.workspace) {
            let Some(wst) = self.tokens.get(&cached_ref(&holder)) else {
                continue;
            };
            let wst = wst.unpack();
            // A WorkspaceToken holds tokens of this workspace only while its issuer may serve
            // it the workspace at this platform: else whoever may write a WorkspaceToken and
            // a Secret could hide a leaked token by naming its prefix.
            if !self.same_platform(&wst, issuer) {
                continue;
            }
            held.extend(recorded_prefixes(&wst));
            let (ns, name) = (
                holder.namespace.as_deref().unwrap_or_default(),
                &holder.name,
            );
            let view = crate::secrets::view(&wst, &self.index.secrets_of(ns, name));
            held.extend(
                view.versioned
                    .values()
                    .filter_map(|v| v.token_prefix.clone()),
            );
            let intent = (wst.status.as_ref())
                .and_then(|s| s.mint_intent.as_deref())
                .and_then(crate::plan::MintIntent::parse);
            if let Some(intent) = intent {
                in_flight.push((intent.since - slack, intent.since + call));
            }
        }
        let candidates: BTreeSet<&str> = (tokens.iter())
            .map(|t| t.prefix.as_str())
            .filter(|p| !held.contains(*p))
            .collect();
        let held_elsewhere = if candidates.is_empty() {
            BTreeSet::new()
        } else {
            self.held_anywhere(&candidates)
        };
        Listing {
            tokens,
            complete,
            held,
            held_elsewhere,
            in_flight,
        }
    }

    /// Whether `wst`'s issuer may serve it its workspace now, at `issuer`'s platform.
    pub fn same_platform(&self, wst: &WorkspaceToken, issuer: &ResolvedIssuer) -> bool {
        let url = |u: &str| u.trim_end_matches('/').to_string();
        match self.issuers.for_token(wst) {
            Some(Ok(theirs)) => {
                theirs.identity.uid == issuer.identity.uid
                    || url(&theirs.http.url) == url(&issuer.http.url)
            }
            _ => false,
        }
    }

    /// Which of `prefixes` some version anywhere in the cluster holds (a versioned Secret, or
    /// a version in any status).
    fn held_anywhere(&self, prefixes: &BTreeSet<&str>) -> BTreeSet<String> {
        let mut all = self.index.held_prefixes();
        for wst in self.tokens.state() {
            all.extend(wst.prefixes.iter().cloned());
        }
        (prefixes.iter())
            .filter(|p| all.contains(**p))
            .map(|p| p.to_string())
            .collect()
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
