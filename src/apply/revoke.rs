//! Revocation: at the platform that minted the version (when one did), then its record
//! `S-vN`. A revocation the platform cannot be asked for is said in a Warning, never passed
//! as done.

use super::Applier;
use super::platform::PlatformRevoke;
use super::provenance::MintedAt;
use crate::Result;
use crate::api::versioned_secret_name;
use crate::events::EventType;
use crate::failpoint;
use crate::issuer::http::Revocation;
use crate::journal::Done;
use crate::plan::RevokeReason;

const NO_RECORD: &str = "no record says which issuer minted it";

impl Applier<'_> {
    /// Where `version` is revoked. Without a token-holding `S-vN` the only bearer left is the
    /// current token, which may only go where it was minted: there, if the version's prefix is
    /// known (status), else nowhere.
    fn where_to_revoke(&self, version: u32) -> MintedAt {
        let recorded = self.minted_at(version);
        if !matches!(recorded, MintedAt::Unrecorded) {
            return recorded;
        }
        if !self.uses_platform() {
            return MintedAt::Local;
        }
        let prefix_known = self.prefix_known(version);
        match self.plan.current.filter(|c| *c != version && prefix_known) {
            None => MintedAt::Unrecorded,
            Some(current) => match self.minted_at(current) {
                MintedAt::Platform(issuer) => MintedAt::Platform(issuer),
                _ => MintedAt::Unrecorded,
            },
        }
    }

    /// An `S-vN` without a token that status never knew: put there by someone else (with
    /// tokenwarden's labels and an ownerReference, which the chart's admission policy refuses).
    fn untrusted_record(&self, version: u32) -> bool {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let tokenless = (self.view.objects.get(&name)).is_some_and(|s| {
            s.data
                .as_ref()
                .is_none_or(|d| !d.contains_key(crate::contract::TOKEN_KEY))
        });
        tokenless && !self.prefix_known(version)
    }

    /// Whether status knows the prefix of `version`'s token (what identifies it at a platform).
    fn prefix_known(&self, version: u32) -> bool {
        (self.plan.versions.get(&version)).is_some_and(|r| r.token_prefix.is_some())
    }

    pub(super) async fn revoke(&mut self, version: u32, reason: &str) -> Result<()> {
        let name = versioned_secret_name(&self.mounted_name(), version);
        if self.untrusted_record(version) {
            self.event(
                EventType::Warning,
                "UntrustedRecord",
                "Revoke",
                format!(
                    "Secret {name} claims to be version {version} of this WorkspaceToken but holds \
                     no token, so tokenwarden never wrote it; it is deleted, and nothing is sent \
                     to any platform"
                ),
            );
            self.delete_owned(&name, "delete untrusted versioned Secret")
                .await?;
            self.record(Done::Revoked { version });
            return Ok(());
        }
        if reason == RevokeReason::RevokedAtPlatform.as_str() {
            return self.forget_revoked_elsewhere(version, &name).await;
        }
        let mut unrevoked = None;
        let outcome = match self.where_to_revoke(version) {
            MintedAt::Local => None,
            MintedAt::Platform(issuer) => Some(self.revoke_at_platform(version, &issuer).await?),
            MintedAt::Unreachable(why) => Some(PlatformRevoke::Impossible(why)),
            MintedAt::Unrecorded => Some(PlatformRevoke::Impossible(NO_RECORD.into())),
            MintedAt::Undecided(problem) => return Err(problem.into()),
        };
        if let Some(outcome) = outcome {
            if let PlatformRevoke::Impossible(why) = outcome {
                unrevoked = Some(why);
            }
            let impossible = unrevoked.is_some();
            self.record(Done::RevokedAtIssuer {
                version,
                impossible,
            });
            failpoint::hit(failpoint::AFTER_ISSUER_REVOKE);
        }
        self.delete_owned(&name, "delete versioned Secret").await?;
        self.record(Done::Revoked { version });
        let trace_id = self.current_trace_id();
        let prefix = self
            .plan
            .versions
            .get(&version)
            .and_then(|v| v.token_prefix.clone());
        let prefix = prefix.as_deref();
        if let Some(why) = unrevoked {
            self.audit("revoked", "failure", Some(version), &trace_id, prefix);
            self.event(
                EventType::Warning,
                "RevokeImpossible",
                "Revoke",
                format!(
                    "version {version} ({reason}) could not be revoked at the platform: {why}; \
                     revoke it there by hand (prefix {})",
                    prefix.unwrap_or("unknown")
                ),
            );
            return Ok(());
        }
        self.io.metrics.revoked();
        let note = format!("revoked version {version} ({reason})");
        self.succeeded(
            "revoked", version, &trace_id, prefix, "Revoked", "Revoke", note,
        );
        Ok(())
    }

    /// A served version the platform's inventory shows revoked already (by hand, by another
    /// tool, or before a restore of the cluster). Confirmed with the current token, the one
    /// just verified: a listing without it proves it gone; one that still has it (the
    /// inventory's answer was forged over plaintext, or stale) revokes it now. Then its record
    /// goes; the audit trail says whether it was revoked elsewhere or by this call.
    async fn forget_revoked_elsewhere(&mut self, version: u32, name: &str) -> Result<()> {
        let how = self.confirm_gone_with_current(version).await?;
        self.record(Done::RevokedAtIssuer {
            version,
            impossible: how == Gone::Unconfirmed,
        });
        self.delete_owned(name, "delete versioned Secret").await?;
        self.record(Done::Revoked { version });
        let trace_id = self.current_trace_id();
        let prefix = (self.plan.versions.get(&version)).and_then(|v| v.token_prefix.clone());
        let prefix = prefix.as_deref();
        let (status, note) = match how {
            Gone::Elsewhere => (
                "external",
                "was revoked at the platform outside tokenwarden",
            ),
            Gone::Now => ("success", "was still live at the platform: revoked now"),
            Gone::Unconfirmed => (
                "failure",
                "is not listed by the platform, and no current token of its issuer is left to \
                 confirm it",
            ),
        };
        self.audit("revoked", status, Some(version), &trace_id, prefix);
        let type_ = match how {
            Gone::Unconfirmed => EventType::Warning,
            _ => EventType::Normal,
        };
        self.event(
            type_,
            "Revoked",
            "Revoke",
            format!("version {version} {note}; its record is deleted"),
        );
        Ok(())
    }

    /// Lists the workspace with the current token (of the issuer that minted `version`) and
    /// revokes `version`'s token if it is still there.
    async fn confirm_gone_with_current(&mut self, version: u32) -> Result<Gone> {
        let MintedAt::Platform(issuer) = self.minted_at(version) else {
            return Ok(Gone::Unconfirmed);
        };
        let current =
            (self.plan.current).filter(|c| *c != version && self.same_issuer(*c, &issuer));
        let bearer = match current {
            Some(current) => self.read_version_token(current).await?,
            None => None,
        };
        let record = self.plan.versions.get(&version);
        let prefix = record.and_then(|r| r.token_prefix.clone());
        let (Some(bearer), Some(prefix)) = (bearer, prefix) else {
            return Ok(Gone::Unconfirmed);
        };
        let known_id = record.and_then(|r| r.issuer_token_id.as_deref());
        let platform = self.platform_at(&issuer, &self.current_trace_id())?;
        let revoked = platform.revoke(&bearer, &prefix, known_id).await;
        let outcome = if revoked.is_ok() { "ok" } else { "error" };
        self.io.metrics.issuer_request("revoke", outcome);
        Ok(match revoked? {
            Revocation::Revoked => Gone::Now,
            Revocation::AlreadyRevoked => Gone::Elsewhere,
            Revocation::Ambiguous => Gone::Unconfirmed,
        })
    }
}

/// How a version found gone at the platform was confirmed.
#[derive(Debug, PartialEq, Eq)]
enum Gone {
    /// Not listed to the current token either: revoked outside tokenwarden.
    Elsewhere,
    /// Still live after all: revoked by this call.
    Now,
    /// Nothing to confirm it with (no current token of its issuer), or ambiguous.
    Unconfirmed,
}
