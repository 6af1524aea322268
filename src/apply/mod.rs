//! The apply side: runs a plan's steps in order, each checking what is there before it writes
//! (create-only for records, resourceVersion preconditions for `S`), so a crash between any two
//! steps converges on the next pass. Stops at the first failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::events::EventType;
use crate::failpoint;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{FINALIZER, RestartKind, WorkspaceToken, versioned_secret_name};
use crate::controller::Context;
use crate::plan::{
    ENVIRONMENT_LABEL, ISSUER_TOKEN_ID_ANNOTATION, MountedWrite, Plan, SPEC_HASH_ANNOTATION,
    SecretMetadata, SecretRef, Step, TEMPLATE_KEYS_ANNOTATION, TOKEN_SHA256_ANNOTATION,
    TRACE_ID_ANNOTATION, desired_metadata, spec_hash,
};
use crate::secrets::{
    ISSUER_URL_KEY, PREVIOUS_TOKEN_KEY, PREVIOUS_TOKEN_VERSION_KEY, SecretsView, TOKEN_KEY,
    TOKEN_VERSION_KEY, WORKSPACE_ID_KEY, controlled_by,
};
use crate::telemetry::{AuditRecord, audit};
use crate::token::Token;
use crate::{Error, Result};

pub const FIELD_MANAGER: &str = "tokenwarden";
pub const RESTARTED_AT_ANNOTATION: &str = "tokenwarden.dev/restartedAt";

/// What applying learned that status needs: the hashes of tokens minted in this pass.
#[derive(Debug, Default)]
pub struct Outcome {
    pub minted: BTreeMap<u32, MintedFacts>,
    /// Platform ids learned by verification, by version.
    pub issuer_token_ids: BTreeMap<u32, String>,
    /// Retiring versions revoked because the platform showed the new token in use.
    pub revoked_after_use: Vec<u32>,
    /// Versions revoked at the platform in this pass (or found impossible to revoke): status
    /// records them even when a later step fails.
    pub revoked_at_platform: Vec<u32>,
    /// How many of the plan's steps completed (all of them unless `error`).
    pub applied: usize,
    pub error: Option<Error>,
    /// Secrets written (name, resourceVersion; None = deleted), for the cache expectations.
    pub written: Vec<(String, Option<String>)>,
    /// The WorkspaceToken's resourceVersion after our last write to it.
    pub wst_resource_version: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MintedFacts {
    pub token_sha256: String,
    pub token_prefix: String,
    pub trace_id: String,
    pub issuer_token_id: Option<String>,
}

mod platform;

use platform::PlatformRevoke;
pub use platform::{MINT_INTENT_ANNOTATION, VERIFIED_AT_ANNOTATION};

impl MintedFacts {
    /// What status may know of a token written into `S-vN`: its hash and prefix.
    fn of(token: &Token, trace_id: &str) -> Self {
        MintedFacts {
            token_sha256: token.sha256_hex(),
            token_prefix: token.prefix(),
            trace_id: trace_id.to_string(),
            issuer_token_id: None,
        }
    }
}

pub(crate) struct Applier<'a> {
    ctx: &'a Context,
    wst: &'a WorkspaceToken,
    plan: &'a Plan,
    view: &'a SecretsView,
    ns: String,
    name: String,
    secrets: Api<Secret>,
    now: DateTime<Utc>,
    outcome: Outcome,
    /// `S` when it is ours but missing from the label-selected cache.
    unlabelled_mounted: Option<Arc<Secret>>,
    /// The SHA-256 of every token this pass holds or writes: cut from any error text.
    tokens_in_play: std::sync::Mutex<BTreeSet<String>>,
}

pub async fn run(
    ctx: &Context,
    wst: &WorkspaceToken,
    plan: &Plan,
    view: &SecretsView,
    now: DateTime<Utc>,
) -> Outcome {
    let ns = wst.namespace().unwrap_or_default();
    let mut applier = Applier {
        ctx,
        wst,
        plan,
        view,
        secrets: Api::namespaced(ctx.client.clone(), &ns),
        ns,
        name: wst.name_any(),
        now,
        outcome: Outcome::default(),
        unlabelled_mounted: None,
        tokens_in_play: std::sync::Mutex::new(view.token_hashes()),
    };
    if let Err(e) = applier.check_mounted_name_free().await {
        applier.failed(e).await;
        return applier.outcome;
    }
    for step in &plan.steps {
        if let Err(e) = applier.step(step).await {
            applier.failed(e).await;
            break;
        }
        applier.outcome.applied += 1;
    }
    applier.outcome
}

impl Applier<'_> {
    fn mounted_name(&self) -> String {
        self.wst.spec.secret_name(&self.name).to_string()
    }

    /// Before minting into a name we don't hold yet, make sure `S` isn't someone else's:
    /// the cache only shows Secrets labelled as ours. One of ours whose labels were stripped
    /// is remembered, so it is repaired in place rather than created.
    async fn check_mounted_name_free(&mut self) -> Result<()> {
        let writes_mounted = self
            .plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Mint { .. } | Step::WriteMounted { .. }));
        let name = self.mounted_name();
        if !writes_mounted || self.view.objects.contains_key(&name) {
            return Ok(());
        }
        match self
            .secrets
            .get_metadata_opt(&name)
            .await
            .map_err(Error::kube("get Secret"))?
        {
            Some(existing)
                if !controlled_by(&existing.metadata, &self.wst.uid().unwrap_or_default()) =>
            {
                Err(Error::SecretConflict { name })
            }
            Some(ours) => {
                self.unlabelled_mounted = Some(Arc::new(Secret {
                    metadata: ours.metadata,
                    ..Secret::default()
                }));
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::AddFinalizer => self.add_finalizer().await,
            Step::Mint { version, reason } => self.mint(*version, reason.as_str()).await,
            Step::RestoreVersioned { version } => self.restore_versioned(*version).await,
            Step::WriteMounted {
                current,
                previous,
                why,
            } => self.write_mounted(*current, *previous, *why).await,
            Step::RestartTargets { version } => self.restart_targets(*version).await,
            Step::Revoke { version, reason } => self.revoke(*version, reason.as_str()).await,
            Step::Verify { version } => self.verify(*version).await,
            Step::ReclaimOrphans { since } => self.reclaim_orphans(*since).await,
            Step::RevokeIfUsed { version } => self.revoke_if_used(*version).await,
            Step::SyncMetadata { secret } => self.sync_metadata(*secret).await,
            Step::ReleaseSecrets => self.release_secrets().await,
            Step::DeleteMounted => self.delete_mounted().await,
            Step::RemoveFinalizer => self.remove_finalizer().await,
        }
    }

    async fn add_finalizer(&mut self) -> Result<()> {
        let mut finalizers = self.wst.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.patch_finalizers(finalizers).await
    }

    async fn remove_finalizer(&mut self) -> Result<()> {
        let finalizers = self
            .wst
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        match self.patch_finalizers(finalizers).await {
            // Already gone (a pass on a cache that had not yet seen the deletion finish):
            // what removing the finalizer was for.
            Err(Error::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => Ok(()),
            other => other,
        }
    }

    async fn patch_finalizers(&mut self, finalizers: Vec<String>) -> Result<()> {
        let api: Api<WorkspaceToken> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = json!({ "metadata": {
            "resourceVersion": self.wst.resource_version(),
            "finalizers": finalizers,
        }});
        let patched = api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("patch WorkspaceToken finalizers"))?;
        self.outcome.wst_resource_version = patched.resource_version();
        Ok(())
    }

    async fn mint(&mut self, version: u32, reason: &str) -> Result<()> {
        let trace_id = new_trace_id();
        let token = match self.platform(&trace_id) {
            None => crate::issuer::local::mint(&self.wst.spec.token)?,
            Some(_) => self.mint_at_platform(version, &trace_id).await?,
        };
        self.in_play(&token);
        failpoint::hit(failpoint::AFTER_MINT);
        let facts = MintedFacts::of(&token, &trace_id);
        let secret = self.versioned_secret(version, &token, &facts);
        let name = versioned_secret_name(&self.mounted_name(), version);
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(created) => self
                .outcome
                .written
                .push((name, created.resource_version())),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Someone holds the name: ours from a pass the cache hasn't shown yet, or foreign.
                // Either way the fresh token is dropped unused and nothing is overwritten.
                let existing = self
                    .secrets
                    .get(&name)
                    .await
                    .map_err(Error::kube("get Secret"))?;
                if !controlled_by(&existing.metadata, &self.wst.uid().unwrap_or_default()) {
                    return Err(Error::SecretConflict { name });
                }
                return Err(Error::Kube {
                    operation: "create versioned Secret (cache behind)",
                    source: kube::Error::Api(s),
                });
            }
            Err(e) => return Err(Error::kube("create versioned Secret")(e)),
        }
        failpoint::hit(failpoint::AFTER_VERSIONED_SECRET);
        if self.uses_platform() {
            self.clear_mint_intent().await?;
        }
        self.ctx.metrics.rotated(reason);
        self.audit(
            "minted",
            "success",
            Some(version),
            &trace_id,
            Some(&facts.token_prefix),
        );
        self.event(
            EventType::Normal,
            "Minted",
            "Mint",
            format!(
                "minted version {version} ({reason}), prefix {}",
                facts.token_prefix
            ),
        );
        self.outcome.minted.insert(version, facts);
        Ok(())
    }

    async fn restore_versioned(&mut self, version: u32) -> Result<()> {
        let mounted = self.read_token(&self.mounted_name(), TOKEN_KEY).await?;
        let trace_id = self.trace_id_of(version);
        let facts = MintedFacts::of(&mounted, &trace_id);
        let secret = self.versioned_secret(version, &mounted, &facts);
        let created = self
            .secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(Error::kube("restore versioned Secret"))?;
        self.outcome.written.push((
            versioned_secret_name(&self.mounted_name(), version),
            created.resource_version(),
        ));
        self.ctx.metrics.drift_repaired();
        self.audit(
            "drift_repaired",
            "success",
            Some(version),
            &trace_id,
            Some(&facts.token_prefix),
        );
        self.event(
            EventType::Normal,
            "DriftRepaired",
            "Restore",
            format!(
                "restored {} from the mounted Secret",
                versioned_secret_name(&self.mounted_name(), version)
            ),
        );
        self.outcome.minted.insert(version, facts);
        Ok(())
    }

    async fn write_mounted(
        &mut self,
        current: u32,
        previous: Option<u32>,
        why: MountedWrite,
    ) -> Result<()> {
        let mounted_name = self.mounted_name();
        let token = self
            .read_token(&versioned_secret_name(&mounted_name, current), TOKEN_KEY)
            .await?;
        let previous_token = match previous {
            Some(p) => Some(
                self.read_token(&versioned_secret_name(&mounted_name, p), TOKEN_KEY)
                    .await?,
            ),
            None => None,
        };
        let trace_id = self.trace_id_of(current);
        let mut data = BTreeMap::new();
        data.insert(TOKEN_KEY.to_string(), Some(token.expose().to_string()));
        data.insert(TOKEN_VERSION_KEY.to_string(), Some(format!("v{current}")));
        data.insert(
            WORKSPACE_ID_KEY.to_string(),
            Some(self.wst.spec.workspace_id.clone()),
        );
        data.insert(
            PREVIOUS_TOKEN_KEY.to_string(),
            previous_token.as_ref().map(|t| t.expose().to_string()),
        );
        data.insert(
            PREVIOUS_TOKEN_VERSION_KEY.to_string(),
            previous.map(|p| format!("v{p}")),
        );
        let mut extra = BTreeMap::new();
        extra.insert(TOKEN_SHA256_ANNOTATION.to_string(), token.sha256_hex());
        extra.insert(TRACE_ID_ANNOTATION.to_string(), trace_id.clone());

        let existing = self
            .view
            .objects
            .get(&mounted_name)
            .or(self.unlabelled_mounted.as_ref())
            .cloned();
        match existing {
            Some(existing) => {
                let mut patch = self.metadata_patch(&existing, None, &extra);
                patch["metadata"]["resourceVersion"] = json!(existing.resource_version());
                patch["data"] = json!(
                    data.iter()
                        .map(|(k, v)| (
                            k.clone(),
                            v.as_ref().map(|v| ByteString(v.clone().into_bytes()))
                        ))
                        .collect::<BTreeMap<_, _>>()
                );
                let patched = self
                    .secrets
                    .patch(
                        &mounted_name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(Error::kube("update mounted Secret"))?;
                self.outcome
                    .written
                    .push((mounted_name.clone(), patched.resource_version()));
            }
            None => {
                let desired = desired_metadata(&self.wst.spec, &self.name, None);
                let secret = Secret {
                    metadata: self.object_meta(mounted_name.clone(), desired, extra),
                    data: Some(
                        data.into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k, ByteString(v.into_bytes()))))
                            .collect(),
                    ),
                    type_: Some("Opaque".into()),
                    ..Secret::default()
                };
                match self.secrets.create(&PostParams::default(), &secret).await {
                    Ok(created) => self
                        .outcome
                        .written
                        .push((mounted_name.clone(), created.resource_version())),
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return Err(Error::SecretConflict { name: mounted_name });
                    }
                    Err(e) => return Err(Error::kube("create mounted Secret")(e)),
                }
            }
        }
        if why == MountedWrite::Cutover {
            failpoint::hit(failpoint::AFTER_CUTOVER);
        }
        let prefix = token.prefix();
        match why {
            MountedWrite::Cutover => {
                self.audit(
                    "activated",
                    "success",
                    Some(current),
                    &trace_id,
                    Some(&prefix),
                );
                self.event(
                    EventType::Normal,
                    "Activated",
                    "Cutover",
                    format!(
                        "version {current} is active (prefix {prefix}){}",
                        match previous {
                            Some(p) =>
                                format!("; version {p} stays valid until its grace period ends"),
                            None => String::new(),
                        }
                    ),
                );
            }
            MountedWrite::DriftRepaired => {
                self.ctx.metrics.drift_repaired();
                self.audit(
                    "drift_repaired",
                    "success",
                    Some(current),
                    &trace_id,
                    Some(&prefix),
                );
                self.event(
                    EventType::Warning,
                    "DriftRepaired",
                    "Repair",
                    format!("restored Secret {mounted_name} to version {current} from its versioned Secret"),
                );
            }
            MountedWrite::PreviousRemoved => {}
        }
        Ok(())
    }

    async fn restart_targets(&self, version: u32) -> Result<()> {
        // Sub-second precision: two cutovers within one second must still roll the pods.
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
            RESTARTED_AT_ANNOTATION: at,
        }}}}});
        for target in &self.wst.spec.restart_targets {
            let client = self.ctx.client.clone();
            let params = PatchParams::default();
            let result = match target.kind {
                RestartKind::Deployment => Api::<Deployment>::namespaced(client, &self.ns)
                    .patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
                RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &self.ns)
                    .patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
                RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client, &self.ns)
                    .patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {
                    self.event(
                        EventType::Normal,
                        "Restarted",
                        "Restart",
                        format!(
                            "restarted {:?} {} for version {version}",
                            target.kind, target.name
                        ),
                    );
                }
                // A missing workload is the user's to fix; it must not block rotation.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.event(
                        EventType::Warning,
                        "RestartTargetNotFound",
                        "Restart",
                        format!("{:?} {} not found", target.kind, target.name),
                    );
                }
                Err(e) => return Err(Error::kube("restart target")(e)),
            }
        }
        Ok(())
    }

    async fn revoke(&mut self, version: u32, reason: &str) -> Result<()> {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let mut unrevoked = None;
        if let Some(minted_by) = self.minted_by(version) {
            if let PlatformRevoke::Impossible(why) =
                self.revoke_at_platform(version, &minted_by).await?
            {
                unrevoked = Some(why);
            }
            self.outcome.revoked_at_platform.push(version);
            failpoint::hit(failpoint::AFTER_ISSUER_REVOKE);
        }
        self.delete_owned(&name, "delete versioned Secret").await?;
        self.ctx.metrics.revoked();
        let trace_id = self
            .plan
            .current
            .map(|c| self.trace_id_of(c))
            .unwrap_or_default();
        let prefix = self
            .plan
            .versions
            .get(&version)
            .and_then(|v| v.token_prefix.clone());
        if let Some(why) = unrevoked {
            self.audit(
                "revoked",
                "failure",
                Some(version),
                &trace_id,
                prefix.as_deref(),
            );
            self.event(
                EventType::Warning,
                "RevokeImpossible",
                "Revoke",
                format!(
                    "version {version} ({reason}) could not be revoked at the platform: {why}; \
                     revoke it there by hand (prefix {})",
                    prefix.as_deref().unwrap_or("unknown")
                ),
            );
            return Ok(());
        }
        self.audit(
            "revoked",
            "success",
            Some(version),
            &trace_id,
            prefix.as_deref(),
        );
        self.event(
            EventType::Normal,
            "Revoked",
            "Revoke",
            format!("revoked version {version} ({reason})"),
        );
        Ok(())
    }

    async fn sync_metadata(&mut self, secret: SecretRef) -> Result<()> {
        let (name, version) = match secret {
            SecretRef::Mounted => (self.mounted_name(), None),
            SecretRef::Versioned(n) => (versioned_secret_name(&self.mounted_name(), n), Some(n)),
        };
        let Some(existing) = self.view.objects.get(&name) else {
            return Ok(());
        };
        let patch = self.metadata_patch(existing, version, &BTreeMap::new());
        let patched = self
            .secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("update Secret metadata"))?;
        self.outcome
            .written
            .push((name, patched.resource_version()));
        Ok(())
    }

    async fn release_secrets(&self) -> Result<()> {
        let uid = self.wst.uid().unwrap_or_default();
        for (name, secret) in &self.view.objects {
            let kept: Vec<_> = secret
                .owner_references()
                .iter()
                .filter(|o| o.uid != uid)
                .cloned()
                .collect();
            let patch = json!({ "metadata": { "ownerReferences": kept } });
            match self
                .secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("release Secret")(e)),
            }
        }
        Ok(())
    }

    async fn delete_mounted(&mut self) -> Result<()> {
        let name = self.mounted_name();
        self.delete_owned(&name, "delete mounted Secret").await
    }

    /// Deletes a Secret the cache shows as ours, guarded by its uid (a foreign Secret created
    /// under the same name meanwhile is never deleted); gone already is fine.
    async fn delete_owned(&mut self, name: &str, operation: &'static str) -> Result<()> {
        let Some(existing) = self.view.objects.get(name) else {
            return Ok(());
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.secrets.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(operation)(e)),
        }
        self.outcome.written.push((name.to_string(), None));
        Ok(())
    }

    /// Reads a plaintext token with a GET: the cache holds hashes only.
    async fn read_token(&self, secret_name: &str, key: &'static str) -> Result<Token> {
        let secret = self
            .secrets
            .get(secret_name)
            .await
            .map_err(Error::kube("read Secret"))?;
        let value = crate::secrets::take_string(secret, key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::MissingTokenData {
                name: secret_name.to_string(),
                key,
            })?;
        let token = Token::from_plaintext(value);
        self.in_play(&token);
        Ok(token)
    }

    /// Remembers a token this pass holds, so an error that quotes it is cut before it is
    /// shown anywhere.
    pub(super) fn in_play(&self, token: &Token) {
        self.tokens_in_play
            .lock()
            .expect("tokens in play")
            .insert(token.sha256_hex());
    }

    fn trace_id_of(&self, version: u32) -> String {
        self.outcome
            .minted
            .get(&version)
            .map(|f| f.trace_id.clone())
            .or_else(|| {
                self.plan
                    .versions
                    .get(&version)
                    .and_then(|v| v.trace_id.clone())
            })
            .unwrap_or_else(new_trace_id)
    }

    fn versioned_secret(&self, version: u32, token: &Token, facts: &MintedFacts) -> Secret {
        let desired = desired_metadata(&self.wst.spec, &self.name, Some(version));
        let mut extra = BTreeMap::new();
        extra.insert(
            TOKEN_SHA256_ANNOTATION.to_string(),
            facts.token_sha256.clone(),
        );
        extra.insert(TRACE_ID_ANNOTATION.to_string(), facts.trace_id.clone());
        extra.insert(SPEC_HASH_ANNOTATION.to_string(), spec_hash(&self.wst.spec));
        if let Some(id) = &facts.issuer_token_id {
            extra.insert(ISSUER_TOKEN_ID_ANNOTATION.to_string(), id.clone());
        }
        let name = versioned_secret_name(&self.mounted_name(), version);
        let mut data = BTreeMap::new();
        data.insert(
            TOKEN_KEY.to_string(),
            ByteString(token.expose().as_bytes().to_vec()),
        );
        data.insert(
            TOKEN_VERSION_KEY.to_string(),
            ByteString(format!("v{version}").into_bytes()),
        );
        data.insert(
            WORKSPACE_ID_KEY.to_string(),
            ByteString(self.wst.spec.workspace_id.clone().into_bytes()),
        );
        if let Some(issuer) = &self.wst.spec.issuer {
            data.insert(
                ISSUER_URL_KEY.to_string(),
                ByteString(issuer.http.url.clone().into_bytes()),
            );
        }
        Secret {
            metadata: self.object_meta(name, desired, extra),
            data: Some(data),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            ..Secret::default()
        }
    }

    fn object_meta(
        &self,
        name: String,
        desired: SecretMetadata,
        extra: BTreeMap<String, String>,
    ) -> ObjectMeta {
        let mut annotations = desired.annotations;
        annotations.extend(extra);
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.ns.clone()),
            labels: Some(desired.labels),
            annotations: Some(annotations),
            owner_references: self.wst.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }

    /// A merge patch setting the desired labels and annotations and removing the ones an
    /// earlier `secretTemplate` (or `environment`) put there.
    fn metadata_patch(
        &self,
        existing: &Arc<Secret>,
        version: Option<u32>,
        extra: &BTreeMap<String, String>,
    ) -> Value {
        let desired = desired_metadata(&self.wst.spec, &self.name, version);
        let mut labels: BTreeMap<String, Option<String>> = desired
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut annotations: BTreeMap<String, Option<String>> = desired
            .annotations
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let earlier = existing
            .annotations()
            .get(TEMPLATE_KEYS_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        for key in earlier.split(',').filter(|k| !k.is_empty()) {
            if let Some(label) = key.strip_prefix("l:") {
                labels.entry(label.to_string()).or_insert(None);
            } else if let Some(annotation) = key.strip_prefix("a:") {
                annotations.entry(annotation.to_string()).or_insert(None);
            }
        }
        if existing.labels().contains_key(ENVIRONMENT_LABEL) {
            labels.entry(ENVIRONMENT_LABEL.to_string()).or_insert(None);
        }
        json!({ "metadata": { "labels": labels, "annotations": annotations } })
    }

    fn audit(
        &self,
        event: &str,
        status: &str,
        version: Option<u32>,
        trace_id: &str,
        prefix: Option<&str>,
    ) {
        audit(&AuditRecord {
            timestamp: self.now.to_rfc3339_opts(SecondsFormat::Millis, true),
            trace_id,
            workspace_id: &self.wst.spec.workspace_id,
            user_id: self.wst.spec.user_id.as_deref(),
            profile_id: self.wst.spec.profile_id.as_deref(),
            token_version: version.map(|v| format!("v{v}")),
            event,
            status,
            namespace: &self.ns,
            name: &self.name,
            token_prefix: prefix,
        });
    }

    /// One Event per step; posted in the background, so the reconcile does not wait.
    fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.ctx
            .events
            .publish(self.wst, type_, reason, action, note);
    }

    async fn failed(&mut self, error: Error) {
        let error = error.redacted(&self.tokens_in_play.lock().expect("tokens in play"));
        if error.is_stale_view() {
            // Not a failure anyone has to act on: the controller redoes the pass.
            tracing::info!(error = %error, "a write met a newer object; redoing the pass");
            self.outcome.error = Some(error);
            return;
        }
        let version = self.plan.current;
        let trace_id = version.map(|v| self.trace_id_of(v)).unwrap_or_default();
        let (event_name, reason) = match &error {
            Error::SecretConflict { .. } => ("conflict", "SecretConflict"),
            _ => ("failed", error.reason()),
        };
        self.audit(event_name, "failure", version, &trace_id, None);
        self.event(EventType::Warning, reason, "Reconcile", error.to_string());
        self.outcome.error = Some(error);
    }
}

/// A W3C trace id: 16 random bytes, lowercase hex.
pub fn new_trace_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// For `kube::Resource::object_ref` on a borrowed WorkspaceToken.
pub fn object_ref(wst: &WorkspaceToken) -> k8s_openapi::api::core::v1::ObjectReference {
    wst.object_ref(&())
}
