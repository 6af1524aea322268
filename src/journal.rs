//! What one pass did: each apply step's facts as they happened, and the failure that stopped
//! the pass. Status is a fold of it over the plan (`status::render`); nothing here knows in
//! which order the planner puts its steps.

use crate::Error;

/// What status may know of a token written into `S-vN`: its hash and prefix, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub token_sha256: String,
    pub token_prefix: String,
    pub trace_id: String,
    pub issuer_token_id: Option<String>,
    /// The issuer object that minted it; None: minted locally (or not known).
    pub issuer: Option<crate::api::IssuerIdentity>,
}

/// One thing a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    FinalizerAdded,
    /// A new token, recorded in `S-vN`.
    Minted {
        version: u32,
        token: TokenFacts,
    },
    /// `S-vN` rebuilt from the token `S` holds.
    Restored {
        version: u32,
        token: TokenFacts,
    },
    /// The platform accepted the version's token; its id there, when it said.
    Verified {
        version: u32,
        issuer_token_id: Option<String>,
    },
    /// The platform refused the version's new token at verification: it never becomes
    /// current, and is recorded as revoked.
    Refused {
        version: u32,
    },
    /// The tokens a cut-short mint left without a Secret were dealt with; the intent is clear.
    OrphansReclaimed,
    /// `S` serves `version` now, a new one.
    CutOver {
        version: u32,
    },
    /// `S` was rewritten for the version it already served (drift, or the previous token gone).
    MountedRepaired {
        version: u32,
    },
    /// Every restart target was rolled for `version`.
    Restarted {
        version: u32,
    },
    /// The platform that minted the version no longer accepts it, or cannot be asked to
    /// (`impossible`: a Warning said so). Either way the pass must not ask again.
    RevokedAtIssuer {
        version: u32,
        impossible: bool,
    },
    /// The version is gone: revoked where it lives and its `S-vN` deleted.
    Revoked {
        version: u32,
    },
    /// An unmanaged platform token was revoked (`inventory.revokeUnmanagedAfter`).
    UnmanagedRevoked {
        prefix: String,
        created_at: chrono::DateTime<chrono::Utc>,
    },
    /// The platform's listing of the workspace, made to verify a new token: the inventory at
    /// this rotation of the group of the issuer (uid) that minted it, asked for at the time.
    Inventoried {
        answer: crate::plan::Answer,
        asked: chrono::DateTime<chrono::Utc>,
        issuer_uid: String,
    },
    MetadataSynced,
    SecretsReleased,
    MountedDeleted,
    FinalizerRemoved,
}

/// Everything one pass did, and why it stopped early (if it did).
#[derive(Debug, Default)]
pub struct Journal {
    pub done: Vec<Done>,
    pub failure: Option<Error>,
}

impl Journal {
    pub fn record(&mut self, done: Done) {
        self.done.push(done);
    }

    /// The token minted or restored for `version` in this pass.
    pub fn token(&self, version: u32) -> Option<&TokenFacts> {
        self.done.iter().find_map(|d| match d {
            Done::Minted { version: v, token } | Done::Restored { version: v, token }
                if *v == version =>
            {
                Some(token)
            }
            _ => None,
        })
    }

    /// Whether this pass minted `version` (restoring it from `S` is not minting).
    pub fn minted(&self, version: u32) -> bool {
        (self.done.iter()).any(|d| matches!(d, Done::Minted { version: v, .. } if *v == version))
    }

    /// Versions whose tokens this pass minted or restored, with their facts.
    pub fn tokens(&self) -> impl Iterator<Item = (u32, &TokenFacts)> {
        self.done.iter().filter_map(|d| match d {
            Done::Minted { version, token } | Done::Restored { version, token } => {
                Some((*version, token))
            }
            _ => None,
        })
    }

    /// The platform id learned for `version`: from its verification or its mint.
    pub fn issuer_token_id(&self, version: u32) -> Option<&str> {
        let verified = self.done.iter().find_map(|d| match d {
            Done::Verified {
                version: v,
                issuer_token_id,
            } if *v == version => issuer_token_id.as_deref(),
            _ => None,
        });
        verified.or_else(|| self.token(version)?.issuer_token_id.as_deref())
    }

    /// Whether this pass revoked `version`, at the platform or entirely.
    pub fn revoked(&self, version: u32) -> bool {
        self.done.iter().any(|d| {
            matches!(d, Done::Revoked { version: v } | Done::RevokedAtIssuer { version: v, .. }
                if *v == version)
        })
    }

    /// Whether the platform revoked anything in this pass: status must record it, whatever
    /// else happened, or a later pass would find no token left to authenticate the call.
    pub fn revoked_at_issuer(&self) -> bool {
        self.done
            .iter()
            .any(|d| matches!(d, Done::RevokedAtIssuer { .. }))
    }

    /// Versions whose new token the platform refused.
    pub fn refused(&self) -> impl Iterator<Item = u32> + '_ {
        self.done.iter().filter_map(|d| match d {
            Done::Refused { version } => Some(*version),
            _ => None,
        })
    }

    /// Whether this pass changed what a redo would do again or could no longer do: a
    /// revocation at the platform (the redo finds no token to authenticate with), a cutover or
    /// a restart (the redo rolls the restart targets a second time). Such a pass writes its
    /// status even when it ends in a conflict.
    pub fn must_be_recorded(&self) -> bool {
        self.revoked_at_issuer() || self.cut_over() || self.restarted()
    }

    pub fn cut_over(&self) -> bool {
        self.done.iter().any(|d| matches!(d, Done::CutOver { .. }))
    }

    /// Whether the unmanaged token with `prefix` created at `created_at` was revoked.
    pub fn revoked_unmanaged(
        &self,
        prefix: &str,
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        self.done.iter().any(|d| {
            matches!(d, Done::UnmanagedRevoked { prefix: p, created_at: c } if p == prefix && *c == created_at)
        })
    }

    /// The listing a verification made, when it was asked for, and at which issuer (uid).
    pub fn inventoried(
        &self,
    ) -> Option<(&crate::plan::Answer, chrono::DateTime<chrono::Utc>, &str)> {
        self.done.iter().rev().find_map(|d| match d {
            Done::Inventoried {
                answer,
                asked,
                issuer_uid,
            } => Some((answer, *asked, issuer_uid.as_str())),
            _ => None,
        })
    }

    pub fn restarted(&self) -> bool {
        self.done
            .iter()
            .any(|d| matches!(d, Done::Restarted { .. }))
    }

    pub fn removed_finalizer(&self) -> bool {
        self.failure.is_none() && self.done.contains(&Done::FinalizerRemoved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(done: Vec<Done>) -> Journal {
        Journal {
            done,
            failure: None,
        }
    }

    #[test]
    fn a_pass_that_revoked_cut_over_or_restarted_must_be_recorded() {
        let recorded = [
            Done::RevokedAtIssuer {
                version: 1,
                impossible: false,
            },
            Done::CutOver { version: 2 },
            Done::Restarted { version: 2 },
        ];
        for done in recorded {
            assert!(journal(vec![done.clone()]).must_be_recorded(), "{done:?}");
        }
        let redone = vec![
            Done::FinalizerAdded,
            Done::MetadataSynced,
            Done::OrphansReclaimed,
        ];
        assert!(!journal(redone).must_be_recorded());
    }
}
