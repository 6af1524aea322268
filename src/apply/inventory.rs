//! The apply side of the issuer inventory: list the workspace with the current token, and
//! revoke the unmanaged tokens the plan names. Each revocation is one audit line and one
//! Event.

use chrono::{DateTime, Utc};

use super::Applier;
use super::provenance::MintedAt;
use crate::events::EventType;
use crate::issuer::http::{IssuerError, Revocation};
use crate::journal::Done;
use crate::plan::{Answer, Failure};
use crate::{Error, Result};

impl Applier<'_> {
    /// Lists the workspace at the platform that minted `version` (the current one), with its
    /// token. Returns when the listing was asked for, and the answer.
    pub(super) async fn inventory_with(&self, version: u32) -> (DateTime<Utc>, Answer) {
        let asked = Utc::now();
        let answer = match self.list_with(version).await {
            Ok(answer) => answer,
            Err(why) => Answer::Failed(Failure {
                why: crate::redact::redact(
                    &why,
                    &self.tokens_in_play.lock().expect("tokens in play"),
                ),
                refused: None,
            }),
        };
        (asked, answer)
    }

    async fn list_with(&self, version: u32) -> std::result::Result<Answer, String> {
        let MintedAt::Platform(issuer) = self.minted_at(version) else {
            return Err(format!("version {version} was not minted by a platform"));
        };
        let bearer = (self.read_version_token(version).await)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the Secret of version {version} is gone"))?;
        let platform =
            (self.platform_at(&issuer, &self.trace_id_of(version))).map_err(|e| e.to_string())?;
        let listed = platform.list_dated(&bearer, "inventory").await;
        let outcome = if listed.is_ok() { "ok" } else { "error" };
        self.io.metrics.issuer_request("inventory", outcome);
        match listed {
            Ok(list) => Ok(Answer::Listed {
                complete: list.complete,
                tokens: list.tokens,
            }),
            Err(IssuerError::Status { status: 401, .. }) => Ok(Answer::Failed(Failure {
                why: "the platform refused the current token (HTTP 401)".into(),
                refused: Some((self.wst.metadata.uid.clone().unwrap_or_default(), version)),
            })),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Revokes the unmanaged platform token `id` (listed in this pass) with the current token.
    pub(super) async fn revoke_unmanaged(
        &mut self,
        id: &str,
        prefix: &str,
        created_at: DateTime<Utc>,
    ) -> Result<()> {
        let current = (self.plan.current).ok_or_else(|| no_bearer("no current version"))?;
        let MintedAt::Platform(issuer) = self.minted_at(current) else {
            return Err(no_bearer(
                "the current version was not minted by a platform",
            ));
        };
        let bearer = (self.read_version_token(current).await?)
            .ok_or_else(|| no_bearer("the current version's Secret is gone"))?;
        let trace_id = super::new_trace_id();
        let platform = self.platform_at(&issuer, &trace_id)?;
        let revoked = platform.delete(&bearer, id).await;
        let outcome = if revoked.is_ok() { "ok" } else { "error" };
        self.io.metrics.issuer_request("revoke", outcome);
        let how = match revoked? {
            Revocation::Revoked => "revoked",
            _ => "already revoked",
        };
        self.io.metrics.unmanaged_revoked();
        self.record(Done::UnmanagedRevoked {
            prefix: prefix.to_string(),
            created_at,
        });
        self.audit("revoked", "success", None, &trace_id, Some(prefix));
        let after = (self.plan_issuer_policy()).unwrap_or_default();
        self.event(
            EventType::Normal,
            "UnmanagedTokenRevoked",
            "Inventory",
            format!(
                "platform token {prefix} of workspace {} ({how}): held by no WorkspaceToken for \
                 inventory.revokeUnmanagedAfter ({after}) of {issuer_identity}",
                self.wst.spec.workspace_id,
                issuer_identity = issuer.identity,
            ),
        );
        Ok(())
    }

    fn plan_issuer_policy(&self) -> Option<String> {
        match self.issuer? {
            Ok(issuer) => issuer.revoke_unmanaged_after.clone(),
            Err(_) => None,
        }
    }
}

fn no_bearer(why: &str) -> Error {
    Error::Issuer(IssuerError::Unusable {
        reason: format!("an unmanaged token cannot be revoked: {why}"),
    })
}
