//! The versioned Secrets `S-vN`: minted, restored, their metadata kept in step with the
//! spec, released or deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Applier, new_trace_id};
use crate::api::{WorkspaceToken, versioned_secret_name};
use crate::contract::{
    ENVIRONMENT_LABEL, FIELD_MANAGER, ISSUER_KIND_KEY, ISSUER_NAME_KEY, ISSUER_TOKEN_ID_ANNOTATION,
    ISSUER_UID_KEY, MANAGED_BY_LABEL, ROTATE_ANNOTATION, SPEC_HASH_ANNOTATION,
    TEMPLATE_KEYS_ANNOTATION, TOKEN_KEY, TOKEN_SHA256_ANNOTATION, TOKEN_VERSION_KEY,
    TRACE_ID_ANNOTATION, WORKSPACE_ID_KEY,
};
use crate::failpoint;
use crate::journal::{Done, TokenFacts};
use crate::plan::{SecretMetadata, SecretRef, desired_metadata, spec_hash};
use crate::secrets::controlled_by;
use crate::token::Token;
use crate::{Error, Result};

/// Every write tokenwarden makes names itself.
pub(super) fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

pub(super) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// The trace id a rotation request carries: an unanswered `tokenwarden.dev/rotate` value that
/// is a W3C trace id (`tokenwarden rotate` writes one, shared by every token of one call).
fn requested_trace_id(wst: &WorkspaceToken) -> Option<String> {
    let value = wst.annotations().get(ROTATE_ANNOTATION)?;
    let status = wst.status.as_ref()?;
    let answered = status.last_rotate_request.as_ref();
    // Never the trace of an earlier version: one trace, one rotation of this token.
    if status
        .versions
        .iter()
        .any(|v| v.trace_id.as_ref() == Some(value))
    {
        return None;
    }
    let is_trace_id = value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0');
    (answered != Some(value) && is_trace_id).then(|| value.clone())
}

impl Applier<'_> {
    pub(super) async fn mint(&mut self, version: u32, reason: &str) -> Result<()> {
        let requested = matches!(reason, "Manual" | "RevokeRequested");
        let trace_id = requested
            .then(|| requested_trace_id(self.wst))
            .flatten()
            .unwrap_or_else(new_trace_id);
        let issuer = self.current_issuer()?.cloned();
        let token = match &issuer {
            None => crate::issuer::local::mint(&self.wst.spec.token)?,
            Some(issuer) => self.mint_at_platform(issuer, version, &trace_id).await?,
        };
        self.in_play(&token);
        failpoint::hit(failpoint::AFTER_MINT);
        let facts = TokenFacts::of(&token, &trace_id, issuer.map(|i| i.identity));
        let secret = self.versioned_secret(version, &token, &facts);
        let name = versioned_secret_name(&self.mounted_name(), version);
        match self.secrets.create(&post_params(), &secret).await {
            Ok(created) => {
                self.written.insert(name.clone(), token.clone());
                self.wrote_secret(name, created.resource_version());
            }
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
        self.io.metrics.rotated(reason);
        let prefix = facts.token_prefix.clone();
        let note = format!("minted version {version} ({reason}), prefix {prefix}");
        self.succeeded(
            "minted",
            version,
            &trace_id,
            Some(&prefix),
            "Minted",
            "Mint",
            note,
        );
        self.record(Done::Minted {
            version,
            token: facts,
        });
        Ok(())
    }

    pub(super) async fn restore_versioned(&mut self, version: u32) -> Result<()> {
        let mounted = self.read_token(&self.mounted_name(), TOKEN_KEY).await?;
        let trace_id = self.trace_id_of(version);
        // The record is rebuilt from `S`, which does not say who minted the token: status does
        // (never the issuer named now: the spec may have moved on since). Only a version status
        // never recorded an issuer for (an older release's, or status lost) is credited to the
        // issuer named now.
        let recorded = self
            .plan
            .versions
            .get(&version)
            .and_then(|r| r.issuer.clone());
        let issuer = match recorded {
            Some(identity) => Some(identity),
            None => self.current_issuer()?.map(|i| i.identity.clone()),
        };
        let facts = TokenFacts::of(&mounted, &trace_id, issuer);
        let secret = self.versioned_secret(version, &mounted, &facts);
        let name = versioned_secret_name(&self.mounted_name(), version);
        let created = self
            .secrets
            .create(&post_params(), &secret)
            .await
            .map_err(Error::kube("restore versioned Secret"))?;
        self.wrote_secret(name.clone(), created.resource_version());
        self.io.metrics.drift_repaired();
        let prefix = facts.token_prefix.clone();
        let note = format!("restored {name} from the mounted Secret");
        let prefix = Some(prefix.as_str());
        self.succeeded(
            "drift_repaired",
            version,
            &trace_id,
            prefix,
            "DriftRepaired",
            "Restore",
            note,
        );
        self.record(Done::Restored {
            version,
            token: facts,
        });
        Ok(())
    }

    pub(super) async fn sync_metadata(&mut self, secret: SecretRef) -> Result<()> {
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
            .patch(&name, &params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("update Secret metadata"))?;
        self.wrote_secret(name, patched.resource_version());
        self.record(Done::MetadataSynced);
        Ok(())
    }

    pub(super) async fn release_secrets(&mut self) -> Result<()> {
        let uid = self.wst.uid().unwrap_or_default();
        for (name, secret) in &self.view.objects {
            let kept: Vec<_> = secret
                .owner_references()
                .iter()
                .filter(|o| o.uid != uid)
                .cloned()
                .collect();
            // Without the managed-by label the Secret is no longer tokenwarden's anywhere: the
            // cache drops it, and the chart's admission policy lets its new owners edit it.
            let patch = json!({ "metadata": {
                "ownerReferences": kept,
                "labels": { MANAGED_BY_LABEL: null },
            } });
            match self
                .secrets
                .patch(name, &params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("release Secret")(e)),
            }
        }
        self.record(Done::SecretsReleased);
        Ok(())
    }

    pub(super) async fn delete_mounted(&mut self) -> Result<()> {
        let name = self.mounted_name();
        self.delete_owned(&name, "delete mounted Secret").await?;
        self.record(Done::MountedDeleted);
        Ok(())
    }

    /// Deletes a Secret the cache shows as ours, guarded by its uid (a foreign Secret created
    /// under the same name meanwhile is never deleted); gone already is fine.
    pub(super) async fn delete_owned(&mut self, name: &str, operation: &'static str) -> Result<()> {
        let Some(existing) = self.view.objects.get(name) else {
            return Ok(());
        };
        self.delete_exactly(name, existing.uid(), operation).await
    }

    /// Deletes the Secret `name` only if it is still the object with `uid`; gone is fine.
    pub(super) async fn delete_exactly(
        &mut self,
        name: &str,
        uid: Option<String>,
        operation: &'static str,
    ) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.secrets.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(operation)(e)),
        }
        self.wrote_secret(name.to_string(), None);
        Ok(())
    }

    fn versioned_secret(&self, version: u32, token: &Token, facts: &TokenFacts) -> Secret {
        let desired = desired_metadata(&self.wst.spec, &self.name, Some(version));
        let mut extra = BTreeMap::from([
            (TOKEN_SHA256_ANNOTATION.into(), facts.token_sha256.clone()),
            (TRACE_ID_ANNOTATION.into(), facts.trace_id.clone()),
            (SPEC_HASH_ANNOTATION.into(), spec_hash(&self.wst.spec)),
        ]);
        if let Some(id) = &facts.issuer_token_id {
            extra.insert(ISSUER_TOKEN_ID_ANNOTATION.to_string(), id.clone());
        }
        let name = versioned_secret_name(&self.mounted_name(), version);
        let text = |value: &str| ByteString(value.as_bytes().to_vec());
        let mut data = BTreeMap::from([
            (TOKEN_KEY.to_string(), text(token.expose())),
            (TOKEN_VERSION_KEY.to_string(), text(&format!("v{version}"))),
            (
                WORKSPACE_ID_KEY.to_string(),
                text(&self.wst.spec.workspace_id),
            ),
        ]);
        if let Some(id) = &facts.issuer {
            data.insert(ISSUER_KIND_KEY.to_string(), text(id.kind.as_str()));
            data.insert(ISSUER_NAME_KEY.to_string(), text(&id.name));
            data.insert(ISSUER_UID_KEY.to_string(), text(&id.uid));
        }
        Secret {
            metadata: self.object_meta(name, desired, extra),
            data: Some(data),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            ..Secret::default()
        }
    }

    pub(super) fn object_meta(
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
    pub(super) fn metadata_patch(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(value: &str) -> WorkspaceToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "t", "namespace": "a",
                          "annotations": { "tokenwarden.dev/rotate": value } },
            "spec": { "workspaceId": "ws" },
            "status": { "lastRotateRequest": "an-earlier-one" },
        }))
        .expect("a WorkspaceToken")
    }

    #[test]
    fn a_rotate_value_that_is_a_trace_id_is_the_rotations_trace() {
        // `tokenwarden rotate` writes a random one; the Argo CD rotate action zeros and the
        // UTC time (docs/argocd-rotate-action.lua).
        for value in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00000000000000000020261203075600",
        ] {
            assert_eq!(requested_trace_id(&asked(value)).as_deref(), Some(value));
        }
        for not_one in [
            "argocd-2026-12-03T07:56:00Z",
            "0".repeat(32).as_str(),
            "ABCDEF",
        ] {
            assert_eq!(requested_trace_id(&asked(not_one)), None, "{not_one}");
        }
    }
}
