//! Status: recomputed from the plan and what applying it learned, written only when it changed.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{
    VersionState, VersionStatus, WorkspaceToken, WorkspaceTokenStatus, versioned_secret_name,
};
use crate::apply::Outcome;
use crate::plan::{MountedWrite, Plan, Step};
use crate::{Error, Result};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// The status this pass leaves behind. Pure: the same inputs give the same status, so an
/// unchanged world writes nothing.
pub fn render(
    wst: &WorkspaceToken,
    plan: &Plan,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> WorkspaceTokenStatus {
    let previous = wst.status.clone().unwrap_or_default();
    let secret_name = wst.spec.secret_name(&wst.name_any()).to_string();
    // A failed step leaves the world as observed, which the next pass sees; until then,
    // status keeps what it said and only the conditions change.
    // A failure after the cutover (and its restarts) leaves the new version serving: status
    // says so, with the versions whose revocation did not happen still Retiring.
    let applied = &plan.steps[..outcome.applied.min(plan.steps.len())];
    let pending = &plan.steps[outcome.applied.min(plan.steps.len())..];
    let settled = outcome.error.is_some()
        && applied.iter().any(|s| {
            matches!(
                s,
                Step::WriteMounted {
                    why: MountedWrite::Cutover,
                    ..
                }
            )
        })
        && !pending
            .iter()
            .any(|s| matches!(s, Step::RestartTargets { .. }));
    let unrevoked: Vec<u32> = pending
        .iter()
        .filter_map(|s| match s {
            Step::Revoke { version, .. } if settled => Some(*version),
            _ => None,
        })
        .collect();
    let failed = outcome.error.is_some() && !settled;

    let mut versions: Vec<VersionStatus> = plan
        .versions
        .iter()
        .rev()
        .filter(|(n, v)| {
            !failed
                || v.state == VersionState::Revoked
                || outcome.minted.contains_key(n)
                || v.token_sha256.is_some()
        })
        .map(|(n, v)| {
            let facts = outcome.minted.get(n);
            VersionStatus {
                version: *n,
                secret_name: versioned_secret_name(&secret_name, *n),
                state: if outcome.revoked_after_use.contains(n) {
                    VersionState::Revoked
                } else if unrevoked.contains(n) {
                    VersionState::Retiring
                } else {
                    v.state
                },
                token_prefix: facts
                    .map(|f| f.token_prefix.clone())
                    .or_else(|| v.token_prefix.clone()),
                token_sha256: facts
                    .map(|f| f.token_sha256.clone())
                    .or_else(|| v.token_sha256.clone()),
                created_at: v.created_at.map(crate::time::to_time),
                activated_at: v.activated_at.map(crate::time::to_time),
                retire_at: v
                    .retire_at
                    .filter(|_| !outcome.revoked_after_use.contains(n))
                    .map(crate::time::to_time),
                revoked_at: v
                    .revoked_at
                    .filter(|_| !unrevoked.contains(n))
                    .or(outcome.revoked_after_use.contains(n).then_some(now))
                    .map(crate::time::to_time),
                trace_id: facts
                    .map(|f| f.trace_id.clone())
                    .or_else(|| v.trace_id.clone()),
                issuer_token_id: outcome
                    .issuer_token_ids
                    .get(n)
                    .cloned()
                    .or_else(|| facts.and_then(|f| f.issuer_token_id.clone()))
                    .or_else(|| v.issuer_token_id.clone()),
            }
        })
        .collect();
    // Revoked versions beyond historyLimit go, except the highest-numbered version of all,
    // which status keeps so a version number is never handed out twice.
    let highest = versions.iter().map(|v| v.version).max();
    let mut revoked_kept = 0;
    versions.retain(|v| {
        if v.state != VersionState::Revoked || Some(v.version) == highest {
            return true;
        }
        revoked_kept += 1;
        revoked_kept <= wst.spec.history_limit as usize
    });

    // A failed step: the world is as observed, not as planned. Keep what status said (the
    // next pass recomputes it) and let only the conditions change.
    let mut status = if failed {
        // The spec was observed (the conditions say how it went), so tools that wait for
        // observedGeneration (Flux, kstatus) see the failure instead of "in progress".
        let mut kept = WorkspaceTokenStatus {
            observed_generation: wst.metadata.generation,
            ..previous.clone()
        };
        // Except what the platform has revoked in this pass: a pass that redoes it would find
        // no token left to authenticate with, and report the version unrevocable.
        for v in &mut kept.versions {
            if outcome.revoked_at_platform.contains(&v.version) {
                v.state = VersionState::Revoked;
                v.revoked_at = Some(crate::time::to_time(now));
            }
        }
        kept
    } else {
        let current = plan
            .current
            .and_then(|c| versions.iter().find(|v| v.version == c).cloned());
        WorkspaceTokenStatus {
            observed_generation: wst.metadata.generation,
            current_version: current.as_ref().map(|c| c.version),
            token_version: current.as_ref().map(|c| format!("v{}", c.version)),
            token_prefix: current.as_ref().and_then(|c| c.token_prefix.clone()),
            token_sha256: current.as_ref().and_then(|c| c.token_sha256.clone()),
            last_rotation_time: current.as_ref().and_then(|c| c.activated_at.clone()),
            next_rotation_time: plan.next_rotation.map(crate::time::to_time),
            last_trace_id: current.as_ref().and_then(|c| c.trace_id.clone()),
            last_revoke_request: plan
                .revoke_request
                .clone()
                .or(previous.last_revoke_request.clone()),
            last_rotate_request: plan
                .rotate_request
                .clone()
                .or(previous.last_rotate_request.clone()),
            versions,
            conditions: Vec::new(),
        }
    };

    let previous_ready = previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.status == "True");
    let failure = outcome.error.as_ref().filter(|_| !settled);
    let (ready, ready_reason, ready_message) = match (failure, previous_ready) {
        (Some(e @ Error::SecretConflict { .. }), _) => (false, e.reason(), e.to_string()),
        // The step failed but the token served before is still there: still Ready (Degraded
        // says what failed). Without one, not Ready, for the failure's reason.
        (Some(_), Some(was)) => (true, "Active", was.message.clone()),
        (Some(e), None) => (false, e.reason(), e.to_string()),
        (None, _) => (
            plan.readiness.ready,
            plan.readiness.reason,
            plan.readiness.message.clone(),
        ),
    };
    let (degraded, degraded_reason, degraded_message) = match &outcome.error {
        Some(e) => (true, e.reason(), e.to_string()),
        None => (
            false,
            "AsExpected",
            "the last reconcile succeeded".to_string(),
        ),
    };
    status.conditions = vec![
        condition(
            &previous,
            READY,
            ready,
            ready_reason,
            &ready_message,
            wst.metadata.generation,
            now,
        ),
        condition(
            &previous,
            DEGRADED,
            degraded,
            degraded_reason,
            &degraded_message,
            wst.metadata.generation,
            now,
        ),
    ];
    status
}

/// A metav1.Condition whose lastTransitionTime moves only when its status flips.
fn condition(
    previous: &WorkspaceTokenStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(crate::time::to_time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Writes status with server-side apply when it differs from what the object shows.
/// Returns the object's new resourceVersion when it wrote.
pub async fn write(
    api: &Api<WorkspaceToken>,
    wst: &WorkspaceToken,
    status: WorkspaceTokenStatus,
) -> Result<Option<String>> {
    if wst.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    let patch = serde_json::json!({
        "apiVersion": "tokenwarden.dev/v1alpha1",
        "kind": "WorkspaceToken",
        "status": status,
    });
    let written = api
        .patch_status(
            &wst.name_any(),
            &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write status"))?;
    Ok(written.resource_version())
}
