//! Revocation: at the platform that minted the version (when one did), then its record
//! `S-vN`. A revocation the platform cannot be asked for is said in a Warning, never passed
//! as done.

use super::Applier;
use super::platform::PlatformRevoke;
use crate::Result;
use crate::api::versioned_secret_name;
use crate::events::EventType;
use crate::failpoint;
use crate::journal::Done;

impl Applier<'_> {
    pub(super) async fn revoke(&mut self, version: u32, reason: &str) -> Result<()> {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let mut unrevoked = None;
        if let Some(minted_by) = self.minted_by(version) {
            if let PlatformRevoke::Impossible(why) =
                self.revoke_at_platform(version, &minted_by).await?
            {
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
}
