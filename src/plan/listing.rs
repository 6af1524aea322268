//! What the planner sees of the issuer inventory: its group's schedule and last listing (made
//! and judged against the cluster by the inventory module).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api::IssuerIdentity;
use crate::issuer::http::PlatformToken;

/// What the planner of one WorkspaceToken sees of its group's inventory.
#[derive(Clone, Debug)]
pub struct InventoryInput {
    /// The issuer its token resolves to now: only versions it minted are judged.
    pub issuer: IssuerIdentity,
    /// `inventory.revokeUnmanagedAfter` of that issuer.
    pub revoke_unmanaged_after: Option<String>,
    /// When the group is to be listed next (by whichever of its tokens comes first).
    pub due_at: DateTime<Utc>,
    /// The group's last listing since the operator started.
    pub latest: Option<Arc<Reading>>,
    /// `latest` was made by this pass, with this token's current version as the bearer.
    pub fresh: bool,
}

/// One listing of a group, or why there is none.
#[derive(Clone, Debug)]
pub struct Reading {
    /// On the operator's clock, when the listing was asked for.
    pub listed_at: DateTime<Utc>,
    pub outcome: Result<Listing, Failure>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    /// The workspace's live tokens, their times as the platform states them (reported as
    /// they are; a few seconds between its clock and ours fall within the in-flight window).
    pub tokens: Vec<PlatformToken>,
    /// The platform's count matched: a token not listed is not live.
    pub complete: bool,
    /// The prefixes the workspace's WorkspaceTokens hold (the versions in their status and
    /// their versioned Secrets), counting only those whose issuer may serve them the workspace.
    pub held: BTreeSet<String>,
    /// Of the prefixes not in `held`, those some version anywhere in the cluster holds: never
    /// revoked, whatever the workspace.
    pub held_elsewhere: BTreeSet<String>,
    /// Tokens created in one of these windows may be a mint on its way to a Secret: not
    /// judged yet. The last moments before the listing, and each mint a WorkspaceToken of the
    /// workspace recorded as under way (its call's timeout long).
    pub in_flight: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub why: String,
    /// The bearer the platform refused (HTTP 401): that WorkspaceToken's (uid) version.
    pub refused: Option<(String, u32)>,
}

/// The platform's answer to one listing, before it is judged against the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Listed {
        tokens: Vec<PlatformToken>,
        complete: bool,
    },
    Failed(Failure),
}

impl Listing {
    /// The listed tokens no WorkspaceToken of the workspace holds, besides those with a prefix
    /// in `own` (the planning token's versions, which a listing may predate), and not in
    /// flight.
    pub fn unmanaged<'a>(
        &'a self,
        own: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = &'a PlatformToken> + 'a {
        self.tokens.iter().filter(move |t| {
            let in_flight = (self.in_flight.iter())
                .any(|(from, until)| *from <= t.created_at && t.created_at <= *until);
            !self.held.contains(&t.prefix) && !own.contains(&t.prefix) && !in_flight
        })
    }
}
