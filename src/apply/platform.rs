//! The apply side of the HTTP issuer: mint with a recorded intent, verify before cutover,
//! revoke by prefix, reclaim tokens a crash left unheld, and usage-aware revocation.

use chrono::{TimeDelta, Utc};
use kube::ResourceExt;
use kube::api::Patch;
use serde_json::json;

use super::Applier;
use super::provenance::MintedAt;
use super::records::params;
use k8s_openapi::api::core::v1::Secret;

use crate::api::{WorkspaceToken, versioned_secret_name};
use crate::contract::{ISSUER_TOKEN_ID_ANNOTATION, TOKEN_KEY, VERIFIED_AT_ANNOTATION};
use crate::events::EventType;
use crate::issuer::http::{HttpIssuer, IssuerError, Revocation, unheld_since, used_since_cutover};
use crate::issuer::resolve::ResolvedIssuer;
use crate::journal::Done;
use crate::plan::MintIntent;
use crate::secrets::controlled_by;
use crate::token::Token;
use crate::{Error, Result};

/// Tokens created this long before the recorded intent still count as the window's: the
/// platform's clock and ours may differ a little.
const CLOCK_SLACK_SECONDS: i64 = 5;

/// How a revocation at the platform ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PlatformRevoke {
    /// Revoked now, or already.
    Done,
    /// Nothing left to revoke it with: the token may still be live there, and only a person
    /// with the platform's console can tell. Said in a Warning event, never passed as done.
    Impossible(String),
}

const AMBIGUOUS: &str = "two live tokens at the platform share its prefix, and deleting either could revoke the wrong one";
const INSECURE_401: &str = "the platform refused its own token over plaintext http://, where \
     anyone on the path can forge that answer, so it is not taken as revoked";
const NO_BEARER: &str = "its Secret is gone, and the current token was minted by another issuer \
     (or is gone too), so no token is left to authenticate the call";

impl Applier<'_> {
    /// The client of `issuer`'s platform for one call carrying `trace_id`.
    pub(super) fn platform_at<'i>(
        &'i self,
        issuer: &'i ResolvedIssuer,
        trace_id: &str,
    ) -> Result<HttpIssuer<'i>> {
        Ok(HttpIssuer::new(
            &self.io.http,
            &issuer.http,
            &self.wst.spec.workspace_id,
            trace_id,
        )?)
    }

    /// Whether its tokens come from a platform: it names an issuer (or still holds the
    /// inline one of an earlier release).
    pub(super) fn uses_platform(&self) -> bool {
        self.wst.spec.issuer_ref.is_some() || self.wst.spec.removed_issuer.is_some()
    }

    /// The admin token, read from the issuer's `adminTokenSecretRef` in the issuer's
    /// namespace (a ClusterTokenIssuer's: `--cluster-resource-namespace`) each time it is
    /// needed: never from the WorkspaceToken's namespace unless the issuer lives there, never
    /// cached, never logged.
    async fn admin_token(&self, issuer: &ResolvedIssuer) -> Result<Token> {
        let reference = &issuer.http.admin_token_secret_ref;
        let ns = &issuer.admin_namespace;
        let secrets: kube::Api<Secret> = kube::Api::namespaced(self.io.client.clone(), ns);
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube("read admin token Secret"))?
            .ok_or_else(|| {
                Error::AdminSecret(format!(
                    "Secret {ns}/{} ({} adminTokenSecretRef) not found",
                    reference.name, issuer.identity
                ))
            })?;
        crate::secrets::take_string(secret, &reference.key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(Token::from_plaintext)
            .inspect(|admin| self.in_play(admin))
            .ok_or_else(|| {
                Error::AdminSecret(format!(
                    "Secret {ns}/{} has no key {:?}",
                    reference.name, reference.key
                ))
            })
    }

    /// Sets (Some) or clears (None) `status.mintIntent`: in status, which only the operator
    /// writes, since it decides which unheld platform tokens a later pass revokes.
    async fn set_mint_intent(&mut self, intent: Option<String>) -> Result<()> {
        let api: kube::Api<WorkspaceToken> =
            kube::Api::namespaced(self.io.client.clone(), &self.ns);
        let patch = json!({ "status": { "mintIntent": intent } });
        let patched = api
            .patch_status(&self.name, &params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("record mint intent"))?;
        self.writes.resource_version = patched.resource_version();
        Ok(())
    }

    /// Mints at the platform. The intent is recorded first, so a crash between the platform's
    /// answer and the versioned Secret leaves a trace the next pass acts on.
    pub(super) async fn mint_at_platform(
        &mut self,
        issuer: &ResolvedIssuer,
        version: u32,
        trace_id: &str,
    ) -> Result<Token> {
        let admin = self.admin_token(issuer).await?;
        self.platform_at(issuer, trace_id)?
            .ensure_a_free_slot("mint")?;
        // Each attempt records its own window (a pending earlier one was reclaimed first, when
        // a token to authenticate with exists). Our own write doesn't cut the backoff short.
        let intent = MintIntent {
            version,
            since: crate::time::now(),
        };
        self.set_mint_intent(Some(intent.render())).await?;
        let platform = self.platform_at(issuer, trace_id)?;
        let result = platform.mint(&admin).await;
        self.io
            .metrics
            .issuer_request("mint", if result.is_ok() { "ok" } else { "error" });
        match result {
            Ok(token) => Ok(token),
            // Nothing is written. The intent stays recorded, so the next pass revokes whatever
            // token this call created in the workspace that no Secret holds.
            Err(e) => Err(Error::Issuer(e)),
        }
    }

    /// After the versioned Secret holds the token, the intent is done.
    pub(super) async fn clear_mint_intent(&mut self) -> Result<()> {
        self.set_mint_intent(None).await
    }

    /// A non-destructive call with the new token; records its platform id on `S-vN`.
    pub(super) async fn verify(&mut self, version: u32) -> Result<()> {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let token = self.read_token(&name, TOKEN_KEY).await?;
        let trace_id = self.trace_id_of(version);
        let issuer = self.issuer_to_ask(version)?;
        let platform = self.platform_at(&issuer, &trace_id)?;
        let asked = Utc::now();
        let result = platform.verify(&token).await;
        self.io
            .metrics
            .issuer_request("verify", if result.is_ok() { "ok" } else { "error" });
        if let Err(IssuerError::Status { status: 401, .. }) = result {
            self.retire_refused(version, &issuer, &token).await?;
            return Err(Error::Issuer(IssuerError::NewTokenRefused { version }));
        }
        let (id, listed) = result?;
        let answer = crate::plan::Answer::Listed {
            complete: listed.complete,
            tokens: listed.tokens,
        };
        self.record(Done::Inventoried {
            answer,
            asked,
            issuer_uid: issuer.identity.uid.clone(),
        });
        let mut annotations = serde_json::Map::new();
        // Milliseconds: revokeAfterUse counts only uses after this, the operator's own last.
        annotations.insert(
            VERIFIED_AT_ANNOTATION.into(),
            json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        if let Some(id) = &id {
            annotations.insert(ISSUER_TOKEN_ID_ANNOTATION.into(), json!(id));
        }
        let patch = json!({ "metadata": { "annotations": annotations } });
        let patched = self
            .secrets
            .patch(&name, &params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("record verification"))?;
        self.wrote_secret(name, patched.resource_version());
        let prefix = token.prefix();
        let note = format!("the platform accepted version {version} (prefix {prefix})");
        let prefix = Some(prefix.as_str());
        self.succeeded(
            "verified", version, &trace_id, prefix, "Verified", "Verify", note,
        );
        self.record(Done::Verified {
            version,
            issuer_token_id: id,
        });
        Ok(())
    }

    /// The platform refuses the token it just minted: it will never become current. It is
    /// revoked there now, authenticating with the token `S` serves (the refused one proves
    /// nothing), and its record deleted; status records it Revoked, so the next pass mints
    /// the next version instead of verifying this one forever, and refusals never pile up
    /// live tokens.
    async fn retire_refused(
        &mut self,
        version: u32,
        issuer: &ResolvedIssuer,
        refused: &Token,
    ) -> Result<()> {
        self.record(Done::Refused { version });
        let served = (self.view.mounted.as_ref())
            .and_then(|m| m.version)
            .filter(|v| *v != version);
        // The served token may only go where it was minted.
        let served = served.filter(|s| self.same_issuer(*s, issuer));
        let bearer = match served {
            Some(served) => self.read_version_token(served).await?,
            None => None,
        };
        if let Some(bearer) = bearer {
            let trace_id = self.trace_id_of(version);
            let platform = self.platform_at(issuer, &trace_id)?;
            let revoked = platform.revoke(&bearer, &refused.prefix(), None).await?;
            let impossible = revoked == Revocation::Ambiguous;
            self.record(Done::RevokedAtIssuer {
                version,
                impossible,
            });
            if impossible {
                self.refused_stays_live(version, refused, AMBIGUOUS);
            }
        } else {
            self.record(Done::RevokedAtIssuer {
                version,
                impossible: true,
            });
            self.refused_stays_live(version, refused, NO_BEARER);
        }
        let name = versioned_secret_name(&self.mounted_name(), version);
        let uid = self.wst.uid().unwrap_or_default();
        let existing = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(Error::kube("get Secret"))?;
        if let Some(existing) = existing.filter(|s| controlled_by(&s.metadata, &uid)) {
            let operation = "delete refused versioned Secret";
            self.delete_exactly(&name, existing.uid(), operation)
                .await?;
            self.record(Done::Revoked { version });
        }
        Ok(())
    }

    /// A refused token that could not be revoked at the platform: said, never passed as done.
    fn refused_stays_live(&self, version: u32, refused: &Token, why: &str) {
        let prefix = refused.prefix();
        self.event(
            EventType::Warning,
            "RevokeImpossible",
            "Revoke",
            format!(
                "version {version}, refused by the platform, could not be revoked there: {why}; \
                 revoke it there by hand (prefix {prefix})"
            ),
        );
    }

    /// Revokes a version at the platform that minted it, authenticating with its own token
    /// (valid until now; the platform refusing it means it is revoked already), or with the
    /// current one when its own Secret is gone.
    pub(super) async fn revoke_at_platform(
        &mut self,
        version: u32,
        issuer: &ResolvedIssuer,
    ) -> Result<PlatformRevoke> {
        let own = self.read_version_token(version).await?;
        let record = self.plan.versions.get(&version);
        let Some(prefix) = record
            .and_then(|r| r.token_prefix.clone())
            .or_else(|| own.as_ref().map(Token::prefix))
        else {
            return Ok(PlatformRevoke::Impossible(
                "neither its Secret nor status holds its prefix, so nothing identifies it there"
                    .into(),
            ));
        };
        let bearer = match own {
            Some(own) => own,
            // The current token may only go where it was minted too.
            None => match (self.plan.current)
                .filter(|c| *c != version && self.same_issuer(*c, issuer))
            {
                Some(current) => match self.read_version_token(current).await? {
                    Some(token) => token,
                    None => return Ok(PlatformRevoke::Impossible(NO_BEARER.into())),
                },
                None => return Ok(PlatformRevoke::Impossible(NO_BEARER.into())),
            },
        };
        let own_bearer = bearer.prefix() == prefix;
        let trace_id = self.current_trace_id();
        let platform = self.platform_at(issuer, &trace_id)?;
        let known_id = record.and_then(|r| r.issuer_token_id.as_deref());
        match platform.revoke(&bearer, &prefix, known_id).await {
            Ok(Revocation::Revoked) => {
                self.io.metrics.issuer_request("revoke", "ok");
                Ok(PlatformRevoke::Done)
            }
            Ok(Revocation::AlreadyRevoked) => Ok(PlatformRevoke::Done),
            Ok(Revocation::Ambiguous) => Ok(PlatformRevoke::Impossible(AMBIGUOUS.into())),
            // The platform no longer accepts the token: revoked already. Not over plaintext,
            // where anyone on the path can answer 401.
            Err(IssuerError::Status { status: 401, .. }) if own_bearer && !platform.insecure => {
                Ok(PlatformRevoke::Done)
            }
            Err(IssuerError::Status { status: 401, .. }) if own_bearer => {
                Ok(PlatformRevoke::Impossible(INSECURE_401.into()))
            }
            Err(e) => {
                self.io.metrics.issuer_request("revoke", "error");
                Err(Error::Issuer(e))
            }
        }
    }

    /// A mint cut short (intent recorded, no Secret): revoke the window's tokens no Secret holds.
    pub(super) async fn reclaim_orphans(&mut self, since: chrono::DateTime<Utc>) -> Result<()> {
        // The intent was recorded at the issuer this token mints at now.
        let issuer = self
            .current_issuer()?
            .ok_or_else(|| Error::AdminSecret("a mint intent without an issuer".into()))?
            .clone();
        // Authenticate with the newest token a Secret holds that this issuer minted (the
        // current one, or the one just minted when the reclaim follows the first mint).
        let mut bearer = None;
        let mut candidates: Vec<u32> = self.plan.versions.keys().copied().collect();
        candidates.extend(self.journal.tokens().map(|(version, _)| version));
        candidates.sort_unstable();
        candidates.dedup();
        for version in candidates.into_iter().rev() {
            if !self.same_issuer(version, &issuer) {
                continue;
            }
            let name = versioned_secret_name(&self.mounted_name(), version);
            if let Some(token) = self.read_token_opt(&name).await? {
                bearer = Some((version, token));
                break;
            }
        }
        let Some((version, bearer)) = bearer else {
            return Ok(()); // nothing to authenticate with yet; the intent stays
        };
        let trace_id = self.trace_id_of(version);
        let platform = self.platform_at(&issuer, &trace_id)?;
        let tokens = platform.list(&bearer, "reclaim").await?;
        // Held by any Secret tokenwarden owns, in any namespace: other WorkspaceTokens may
        // share the workspace.
        let mut held = self.io.index.held_prefixes();
        held.extend(self.journal.tokens().map(|(_, t)| t.token_prefix.clone()));
        let held: Vec<String> = held.into_iter().collect();
        // Only the call the intent recorded could have created the orphan: the window ends
        // when that call had to give up.
        let timeout = issuer.http.timeout_seconds;
        let from = since - TimeDelta::seconds(CLOCK_SLACK_SECONDS);
        let until = since + TimeDelta::seconds(i64::from(timeout) + CLOCK_SLACK_SECONDS);
        let orphans: Vec<(String, String)> = unheld_since(&tokens, from, &held)
            .into_iter()
            .filter(|t| t.created_at <= until)
            .map(|t| (t.id.clone(), t.prefix.clone()))
            .collect();
        match orphans.as_slice() {
            [] => {}
            [(id, prefix)] => {
                platform.delete(&bearer, id).await?;
                self.io.metrics.issuer_request("revoke", "ok");
                self.audit("revoked", "success", None, &trace_id, Some(prefix));
                self.event(
                    EventType::Warning,
                    "OrphanRevoked",
                    "Reclaim",
                    format!("revoked platform token {prefix}… that a mint cut short left without a Secret"),
                );
            }
            several => {
                // More than one unheld token in the window: someone else minted there too.
                // Revoking the wrong one would break a consumer; leave them for a person.
                let prefixes: Vec<&str> = several.iter().map(|(_, p)| p.as_str()).collect();
                self.event(
                    EventType::Warning,
                    "OrphanAmbiguous",
                    "Reclaim",
                    format!(
                        "{} platform tokens created during a cut-short mint are held by no Secret ({}); none was revoked",
                        several.len(),
                        prefixes.join(", ")
                    ),
                );
            }
        }
        self.clear_mint_intent().await?;
        self.record(Done::OrphansReclaimed);
        Ok(())
    }

    /// `revokeAfterUse`: the Retiring version goes once a consumer used the current token.
    pub(super) async fn revoke_if_used(&mut self, old: u32) -> Result<()> {
        let Some(current) = self.plan.current else {
            return Ok(());
        };
        let Some(cutover) = self
            .plan
            .versions
            .get(&current)
            .and_then(|v| v.activated_at)
        else {
            return Ok(());
        };
        // The operator's own use of the new token (verification) must not count: only uses
        // after both the cutover and the verification are a consumer's.
        let current_name = versioned_secret_name(&self.mounted_name(), current);
        let verified_at = self
            .view
            .objects
            .get(&current_name)
            .and_then(|s| s.annotations().get(VERIFIED_AT_ANNOTATION).cloned())
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.to_utc());
        // Plus a second: the platform's clock stamps last_used_at, ours stamped verified-at.
        let since = verified_at.map_or(cutover, |v| v.max(cutover)) + TimeDelta::seconds(1);
        // Both tokens must be of one issuer: the old one is sent to list the new one's use.
        let MintedAt::Platform(issuer) = self.minted_at(old) else {
            return Ok(());
        };
        if !self.same_issuer(current, &issuer) {
            return Ok(());
        }
        let Some(old_token) = self.read_version_token(old).await? else {
            return Ok(());
        };
        let current_token = self
            .read_token(
                &versioned_secret_name(&self.mounted_name(), current),
                TOKEN_KEY,
            )
            .await?;
        let trace_id = self.trace_id_of(current);
        let platform = self.platform_at(&issuer, &trace_id)?;
        // Listed with the OLD token: the operator's own call must not mark the new one used.
        let tokens = platform.list(&old_token, "usage").await?;
        self.io.metrics.issuer_request("list", "ok");
        if used_since_cutover(&tokens, &current_token, since) {
            self.revoke(old, "UsedByConsumer").await?;
        }
        Ok(())
    }

    /// A token from a Secret, or None when the Secret (or its key) is gone.
    pub(super) async fn read_token_opt(&self, secret_name: &str) -> Result<Option<Token>> {
        match self.secrets.get_opt(secret_name).await {
            Ok(Some(secret)) => {
                // A Secret of that name that this WorkspaceToken does not control (deleted and
                // recreated by someone else, unlabelled so the cache never saw it) is not ours
                // to take a token from.
                let uid = self.wst.uid().unwrap_or_default();
                if !crate::secrets::controlled_by(&secret.metadata, &uid) {
                    return Ok(None);
                }
                Ok(crate::secrets::take_string(secret, TOKEN_KEY)
                    .filter(|v| !v.is_empty())
                    .map(Token::from_plaintext)
                    .inspect(|token| self.in_play(token)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::kube("read Secret")(e)),
        }
    }

    /// The token of `version` from its `S-vN`, only when it is the token status recorded for
    /// that version (when status recorded one): a Secret put in its place never stands in.
    pub(super) async fn read_version_token(&self, version: u32) -> Result<Option<Token>> {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let token = self.read_token_opt(&name).await?;
        let recorded = (self.plan.versions.get(&version)).and_then(|r| r.token_sha256.as_deref());
        Ok(token.filter(|t| recorded.is_none_or(|sha| t.sha256_hex() == sha)))
    }
}
