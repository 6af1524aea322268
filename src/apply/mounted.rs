//! The mounted Secret `S`: what it holds (built from the versioned records), how it is
//! written (guarded by the resourceVersion the pass planned on) and what the write tells
//! people (audit, Event, metrics).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Patch;
use serde_json::json;

use super::Applier;
use super::records::{params, post_params};
use crate::api::versioned_secret_name;
use crate::contract::{
    PREVIOUS_TOKEN_KEY, PREVIOUS_TOKEN_VERSION_KEY, TOKEN_KEY, TOKEN_SHA256_ANNOTATION,
    TOKEN_VERSION_KEY, TRACE_ID_ANNOTATION, WORKSPACE_ID_KEY,
};
use crate::events::EventType;
use crate::failpoint;
use crate::journal::Done;
use crate::plan::{MountedWrite, RotationReason, Step, desired_metadata};
use crate::secrets::controlled_by;
use crate::token::Token;
use crate::{Error, Result};

/// What `S` is to hold: its data keys (None removes one) and the annotations that describe
/// the current token.
struct MountedContent {
    data: BTreeMap<String, Option<String>>,
    annotations: BTreeMap<String, String>,
    prefix: String,
    trace_id: String,
}

impl Applier<'_> {
    /// Before minting into a name we don't hold yet, make sure `S` isn't someone else's:
    /// the cache only shows Secrets labelled as ours. One of ours whose labels were stripped
    /// is remembered, so it is repaired in place rather than created.
    pub(super) async fn check_mounted_name_free(&mut self) -> Result<()> {
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

    pub(super) async fn write_mounted(
        &mut self,
        current: u32,
        previous: Option<u32>,
        why: MountedWrite,
    ) -> Result<()> {
        let content = self.build_mounted(current, previous).await?;
        self.put_mounted(&content).await?;
        if why == MountedWrite::Cutover {
            failpoint::hit(failpoint::AFTER_CUTOVER);
        }
        self.record_mounted(current, previous, why, &content);
        Ok(())
    }

    /// Reads the tokens of `current` and `previous` from their records.
    async fn build_mounted(&self, current: u32, previous: Option<u32>) -> Result<MountedContent> {
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
        let data = BTreeMap::from([
            (TOKEN_KEY.to_string(), Some(token.expose().to_string())),
            (TOKEN_VERSION_KEY.to_string(), Some(format!("v{current}"))),
            (
                WORKSPACE_ID_KEY.to_string(),
                Some(self.wst.spec.workspace_id.clone()),
            ),
            (
                PREVIOUS_TOKEN_KEY.to_string(),
                previous_token.as_ref().map(|t| t.expose().to_string()),
            ),
            (
                PREVIOUS_TOKEN_VERSION_KEY.to_string(),
                previous.map(|p| format!("v{p}")),
            ),
        ]);
        let annotations = BTreeMap::from([
            (TOKEN_SHA256_ANNOTATION.to_string(), token.sha256_hex()),
            (TRACE_ID_ANNOTATION.to_string(), trace_id.clone()),
        ]);
        Ok(MountedContent {
            data,
            annotations,
            prefix: Token::prefix(&token),
            trace_id,
        })
    }

    /// Patches `S` as the pass saw it (a resourceVersion precondition), or creates it.
    async fn put_mounted(&mut self, content: &MountedContent) -> Result<()> {
        let mounted_name = self.mounted_name();
        let existing = self
            .view
            .objects
            .get(&mounted_name)
            .or(self.unlabelled_mounted.as_ref())
            .cloned();
        let Some(existing) = existing else {
            let desired = desired_metadata(&self.wst.spec, &self.name, None);
            let metadata =
                self.object_meta(mounted_name.clone(), desired, content.annotations.clone());
            let data = content.data.iter().filter_map(|(k, v)| {
                let value = v.as_ref()?;
                Some((k.clone(), ByteString(value.clone().into_bytes())))
            });
            let secret = Secret {
                metadata,
                data: Some(data.collect()),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            return match self.secrets.create(&post_params(), &secret).await {
                Ok(created) => {
                    self.wrote_secret(mounted_name, created.resource_version());
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Err(Error::SecretConflict { name: mounted_name })
                }
                Err(e) => Err(Error::kube("create mounted Secret")(e)),
            };
        };
        let mut patch = self.metadata_patch(&existing, None, &content.annotations);
        patch["metadata"]["resourceVersion"] = json!(existing.resource_version());
        let data: BTreeMap<_, _> = content
            .data
            .iter()
            .map(|(k, v)| (k, v.as_ref().map(|v| ByteString(v.clone().into_bytes()))))
            .collect();
        patch["data"] = json!(data);
        let patched = self
            .secrets
            .patch(&mounted_name, &params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("update mounted Secret"))?;
        self.wrote_secret(mounted_name, patched.resource_version());
        Ok(())
    }

    /// Whether this pass minted `version` as the token's very first and serves it now: no
    /// version before it (a rotation whose old version is revoked at cutover has none left
    /// either, and keeps its Activated Event).
    fn first_token(&self, version: u32) -> bool {
        let initial = Step::Mint {
            version,
            reason: RotationReason::Initial,
        };
        self.journal.minted(version) && self.plan.steps.contains(&initial)
    }

    /// The journal entry, audit line, Event and metric of one write of `S`.
    fn record_mounted(
        &mut self,
        current: u32,
        previous: Option<u32>,
        why: MountedWrite,
        content: &MountedContent,
    ) {
        let (prefix, trace_id) = (content.prefix.as_str(), content.trace_id.as_str());
        match why {
            MountedWrite::Cutover => {
                if self.journal.token(current).is_none() {
                    // Minted by an earlier pass that stopped before its cutover: its minted
                    // line may be missing, so the audit trail says where the token came from.
                    self.audit("adopted", "success", Some(current), trace_id, Some(prefix));
                }
                let grace = match previous {
                    Some(p) => format!("; version {p} stays valid until its grace period ends"),
                    None => String::new(),
                };
                let note = format!("version {current} is active (prefix {prefix}){grace}");
                let prefix = Some(prefix);
                if self.first_token(current) {
                    // A first token, minted and served in one pass: its Minted Event says it
                    // all, so the API server is spared a second Event per new token.
                    self.audit("activated", "success", Some(current), trace_id, prefix);
                } else {
                    self.succeeded(
                        "activated",
                        current,
                        trace_id,
                        prefix,
                        "Activated",
                        "Cutover",
                        note,
                    );
                }
                self.record(Done::CutOver { version: current });
            }
            MountedWrite::DriftRepaired => {
                self.io.metrics.drift_repaired();
                let audit_prefix = Some(prefix);
                self.audit(
                    "drift_repaired",
                    "success",
                    Some(current),
                    trace_id,
                    audit_prefix,
                );
                self.event(
                    EventType::Warning,
                    "DriftRepaired",
                    "Repair",
                    format!(
                        "restored Secret {} to version {current} from its versioned Secret",
                        self.mounted_name()
                    ),
                );
                self.record(Done::MountedRepaired { version: current });
            }
            MountedWrite::PreviousRemoved => {
                self.record(Done::MountedRepaired { version: current });
            }
        }
    }
}
