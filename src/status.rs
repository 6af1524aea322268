//! Status: a pure fold of what a pass did (its journal) over what it planned and observed,
//! written only when it changed.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::api::{
    VersionState, VersionStatus, WorkspaceToken, WorkspaceTokenStatus, versioned_secret_name,
};
use crate::contract::{API_VERSION, DEGRADED, FIELD_MANAGER, READY, true_condition};
use crate::journal::Journal;
use crate::plan::{Plan, Readiness, RevokeReason, Step, VersionRecord};
use crate::{Error, Result};

/// The status this pass leaves behind. Pure: the same inputs give the same status, so an
/// unchanged world writes nothing.
pub fn render(
    wst: &WorkspaceToken,
    plan: &Plan,
    journal: &Journal,
    now: DateTime<Utc>,
) -> WorkspaceTokenStatus {
    let previous = wst.status.clone().unwrap_or_default();
    let in_force = plan_in_force(plan, journal);
    let mut status = if in_force {
        planned(wst, plan, journal, &previous, now)
    } else {
        kept(wst, plan, journal, &previous, now)
    };
    let ready = readiness(plan, journal.failure.as_ref(), in_force, &previous);
    let degraded = match &journal.failure {
        Some(e) => (true, e.reason(), e.to_string()),
        None => (false, "AsExpected", "the last reconcile succeeded".into()),
    };
    let generation = wst.metadata.generation;
    // Never part of the status applied: only the mint writes and clears it (a merge patch of
    // its own), and an apply carrying the value this pass read could undo that.
    status.mint_intent = None;
    // Who reads S is an observation, whatever became of the plan.
    status.consumers = plan.consumers.clone();
    // So is what the platform listed; without a listing, what status said stands.
    status.unmanaged_tokens = match &plan.unmanaged {
        Some(listed) => (listed.iter())
            .filter(|e| {
                !journal.revoked_unmanaged(&e.prefix, crate::time::from_time(&e.created_at))
            })
            .cloned()
            .collect(),
        None => previous.unmanaged_tokens.clone(),
    };
    status.conditions = vec![
        condition(
            &previous, READY, ready.0, ready.1, &ready.2, generation, now,
        ),
        condition(
            &previous,
            DEGRADED,
            degraded.0,
            degraded.1,
            &degraded.2,
            generation,
            now,
        ),
    ];
    status
}

/// Whether the world is now as the plan described it, but for revocations left undone: every
/// step succeeded, or a later one failed after the cutover and every restart it owed. Else the
/// world is as observed, which the next pass sees again.
fn plan_in_force(plan: &Plan, journal: &Journal) -> bool {
    let restarts_owed = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::RestartTargets { .. }))
        && !journal.restarted();
    journal.failure.is_none() || (journal.cut_over() && !restarts_owed)
}

/// Why the WorkspaceToken is or is not Ready, as a table of the pass's failure (if any),
/// whether the plan is in force and whether a token was served before.
fn readiness(
    plan: &Plan,
    failure: Option<&Error>,
    in_force: bool,
    previous: &WorkspaceTokenStatus,
) -> (bool, &'static str, String) {
    let was_ready = true_condition(&previous.conditions, READY);
    let planned = |r: &Readiness| (r.ready, r.reason, r.message.clone());
    match (failure, in_force, was_ready) {
        (None, _, _) | (Some(_), true, _) => planned(&plan.readiness),
        (Some(e @ Error::SecretConflict { .. }), false, _) => (false, e.reason(), e.to_string()),
        // The token served before is still there: still Ready (Degraded says what failed).
        (Some(_), false, Some(was)) => (true, "Active", was.message.clone()),
        (Some(e), false, None) => (false, e.reason(), e.to_string()),
    }
}

/// The plan's status, with the facts the journal learned (hashes, platform ids, revocations).
fn planned(
    wst: &WorkspaceToken,
    plan: &Plan,
    journal: &Journal,
    previous: &WorkspaceTokenStatus,
    now: DateTime<Utc>,
) -> WorkspaceTokenStatus {
    let secret_name = wst.spec.secret_name(&wst.name_any()).to_string();
    let mut versions: Vec<VersionStatus> = plan
        .versions
        .iter()
        .rev()
        .map(|(n, record)| {
            let fate = fate(*n, record, plan, journal, previous, now);
            version_status(&secret_name, *n, record, fate, journal)
        })
        .collect();
    keep_history(&mut versions, wst.spec.history_limit as usize);
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
            .filter(|_| revoke_request_answered(plan, journal))
            .or(previous.last_revoke_request.clone()),
        last_rotate_request: plan
            .rotate_request
            .clone()
            .or(previous.last_rotate_request.clone()),
        mint_intent: None,
        versions,
        consumers: Vec::new(),
        unmanaged_tokens: Vec::new(),
        conditions: Vec::new(),
    }
}

/// Whether the revocation a revoke-version request asked for happened: until it did, the
/// request is not recorded as handled, so the next pass acts on it again.
fn revoke_request_answered(plan: &Plan, journal: &Journal) -> bool {
    !plan.steps.iter().any(|s| {
        matches!(s, Step::Revoke { version, reason: RevokeReason::Requested }
            if !journal.revoked(*version))
    })
}

/// A version's state and times after the pass.
struct Fate {
    state: VersionState,
    retire_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn fate(
    version: u32,
    record: &VersionRecord,
    plan: &Plan,
    journal: &Journal,
    previous: &WorkspaceTokenStatus,
    now: DateTime<Utc>,
) -> Fate {
    let planned_revocation = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Revoke { version: v, .. } if *v == version));
    let was = previous.versions.iter().find(|v| v.version == version);
    if journal.revoked(version) {
        Fate {
            state: VersionState::Revoked,
            retire_at: None,
            revoked_at: record.revoked_at.or(Some(now)),
        }
    } else if planned_revocation && was.is_some_and(|v| v.state == VersionState::Revoked) {
        // A leftover Secret of a version revoked earlier: Revoked is final.
        Fate {
            state: VersionState::Revoked,
            retire_at: None,
            revoked_at: record.revoked_at,
        }
    } else if planned_revocation {
        // Its revocation did not happen: it is still live, behind the current version.
        Fate {
            state: VersionState::Retiring,
            retire_at: record.retire_at,
            revoked_at: None,
        }
    } else {
        Fate {
            state: record.state,
            retire_at: record.retire_at,
            revoked_at: record.revoked_at,
        }
    }
}

fn version_status(
    secret_name: &str,
    n: u32,
    record: &VersionRecord,
    fate: Fate,
    journal: &Journal,
) -> VersionStatus {
    let token = journal.token(n);
    let retiring = fate.state == VersionState::Retiring;
    // What the platform said of its use matters only while it may still be held.
    let usage = record.usage.filter(|_| retiring);
    VersionStatus {
        version: n,
        secret_name: versioned_secret_name(secret_name, n),
        state: fate.state,
        token_prefix: token
            .map(|t| t.token_prefix.clone())
            .or_else(|| record.token_prefix.clone()),
        token_sha256: token
            .map(|t| t.token_sha256.clone())
            .or_else(|| record.token_sha256.clone()),
        created_at: record.created_at.map(crate::time::to_time),
        activated_at: record.activated_at.map(crate::time::to_time),
        retire_at: fate.retire_at.map(crate::time::to_time),
        revoked_at: fate.revoked_at.map(crate::time::to_time),
        trace_id: token
            .map(|t| t.trace_id.clone())
            .or_else(|| record.trace_id.clone()),
        issuer_token_id: journal
            .issuer_token_id(n)
            .map(str::to_string)
            .or_else(|| record.issuer_token_id.clone()),
        issuer: token
            .and_then(|t| t.issuer.clone())
            .or_else(|| record.issuer.clone()),
        retire_held_by: if retiring {
            record.retire_held_by.clone()
        } else {
            Vec::new()
        },
        last_used_at: usage.and_then(|u| u.last_used_at).map(crate::time::to_time),
        usage_checked_at: usage.map(|u| crate::time::to_time(u.checked_at)),
    }
}

/// Revoked versions beyond historyLimit go, except the highest-numbered version of all, which
/// status keeps so a version number is never handed out twice.
fn keep_history(versions: &mut Vec<VersionStatus>, history_limit: usize) {
    let highest = versions.iter().map(|v| v.version).max();
    let mut revoked_kept = 0;
    versions.retain(|v| {
        if v.state != VersionState::Revoked || Some(v.version) == highest {
            return true;
        }
        revoked_kept += 1;
        revoked_kept <= history_limit
    });
}

/// The world is as observed, not as planned: status keeps what it said (the next pass
/// recomputes it), except what the platform revoked in this pass: a pass that redoes it would
/// find no token left to authenticate with, and report the version unrevocable.
fn kept(
    wst: &WorkspaceToken,
    plan: &Plan,
    journal: &Journal,
    previous: &WorkspaceTokenStatus,
    now: DateTime<Utc>,
) -> WorkspaceTokenStatus {
    // The spec was observed (the conditions say how it went), so tools that wait for
    // observedGeneration (Flux, kstatus) see the failure instead of "in progress".
    let mut kept = WorkspaceTokenStatus {
        observed_generation: wst.metadata.generation,
        ..previous.clone()
    };
    for v in &mut kept.versions {
        if journal.revoked(v.version) && v.state != VersionState::Revoked {
            v.state = VersionState::Revoked;
            v.retire_at = None;
            v.revoked_at = Some(crate::time::to_time(now));
        }
    }
    // A version the platform refused at verification is Revoked: the next pass revokes its
    // record and mints the next version (a number never handed out twice).
    let secret_name = wst.spec.secret_name(&wst.name_any()).to_string();
    for n in journal.refused() {
        let Some(record) = plan.versions.get(&n) else {
            continue;
        };
        let fate = Fate {
            state: VersionState::Revoked,
            retire_at: None,
            revoked_at: Some(now),
        };
        kept.versions.retain(|v| v.version != n);
        kept.versions
            .push(version_status(&secret_name, n, record, fate, journal));
    }
    // A version this pass minted (or rebuilt) is in status from now on, with who minted it,
    // even though the pass failed later: that record is what its revocation trusts, and a
    // Secret (which anyone who may edit Secrets can replace) must never stand in for it.
    for (n, _) in journal.tokens() {
        let Some(record) = plan.versions.get(&n) else {
            continue;
        };
        if kept.versions.iter().any(|v| v.version == n) {
            continue;
        }
        let fate = Fate {
            state: VersionState::Pending,
            retire_at: None,
            revoked_at: None,
        };
        kept.versions
            .push(version_status(&secret_name, n, record, fate, journal));
    }
    kept.versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    kept
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

/// Whether `status` is what `wst` says already (the mint intent aside: only the mint writes it).
pub fn unchanged(wst: &WorkspaceToken, status: &WorkspaceTokenStatus) -> bool {
    wst.status.as_ref().is_some_and(|s| {
        let without_intent = WorkspaceTokenStatus {
            mint_intent: None,
            ..s.clone()
        };
        &without_intent == status
    })
}

/// Writes status with server-side apply when it differs from what the object shows, on the
/// object as this pass left it: `expected` is its resourceVersion after the pass's own writes
/// (or as the cache showed it), sent as the apply's precondition; below the cache's, the
/// pass wrote into a restored cluster and nothing is written. Returns the object's new
/// resourceVersion when it wrote.
///
/// A status rendered from a cache that is ahead of the cluster (etcd restored from an older
/// backup, not noticed yet) would write the future into the restored object: its versions
/// would then be revoked as lost. When nothing else wrote the object since, one request
/// does it; when the precondition fails, one read says whether the object went back (then
/// nothing is written and every watch lists again) or someone else wrote meanwhile (then
/// status is applied as rendered). Best effort: without the read (RBAC managed by hand
/// without `get`, a failed call) the write goes ahead.
pub async fn write(
    api: &Api<WorkspaceToken>,
    wst: &WorkspaceToken,
    status: WorkspaceTokenStatus,
    expected: Option<&str>,
) -> Result<Option<String>> {
    if unchanged(wst, &status) {
        return Ok(None);
    }
    let cached = wst.resource_version();
    let refuse_if_went_back = |rv: Option<&str>| {
        let went_back = crate::relist::object_went_back(cached.as_deref(), rv);
        let stale = Error::StaleView {
            operation: "write status",
        };
        if went_back { Err(stale) } else { Ok(()) }
    };
    // The pass's own writes to the object (a finalizer, a mint intent) carry no precondition:
    // on a restored cluster they succeed, and their resourceVersion is below the cache's.
    refuse_if_went_back(expected)?;
    let name = wst.name_any();
    match apply(api, &name, &status, expected).await {
        Err(kube::Error::Api(s)) if s.code == 409 && expected.is_some() => {}
        written => {
            return written
                .map(|w| w.resource_version())
                .map_err(Error::kube("write status"));
        }
    }
    let current = api.get_metadata_opt(&name).await.ok().flatten();
    refuse_if_went_back(current.and_then(|c| c.resource_version()).as_deref())?;
    let written = apply(api, &name, &status, None).await;
    Ok(written
        .map_err(Error::kube("write status"))?
        .resource_version())
}

async fn apply(
    api: &Api<WorkspaceToken>,
    name: &str,
    status: &WorkspaceTokenStatus,
    precondition: Option<&str>,
) -> kube::Result<WorkspaceToken> {
    let mut patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "WorkspaceToken",
        "status": status,
    });
    if let Some(rv) = precondition {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_ready() -> Plan {
        let mut plan = crate::plan::plan(
            &crate::plan::Observed {
                name: "agent",
                uid: "uid",
                generation: Some(1),
                spec: &serde_json::from_value(serde_json::json!({ "workspaceId": "ws" }))
                    .expect("spec"),
                annotations: &Default::default(),
                status: None,
                deleting: false,
                has_finalizer: true,
                versioned: Default::default(),
                mounted: None,
                foreign: Vec::new(),
                mint_intent: None,
                issuer_problem: None,
                rollouts: Default::default(),
                usage: None,
                consumers: None,
                inventory: None,
                versions_seen: None,
            },
            chrono::DateTime::UNIX_EPOCH,
        );
        plan.readiness = Readiness {
            ready: true,
            reason: "Active",
            message: "version 2 is active".into(),
        };
        plan
    }

    fn ready_before(message: &str) -> WorkspaceTokenStatus {
        let ready = condition(
            &WorkspaceTokenStatus::default(),
            READY,
            true,
            "Active",
            message,
            Some(1),
            chrono::DateTime::UNIX_EPOCH,
        );
        WorkspaceTokenStatus {
            conditions: vec![ready],
            ..WorkspaceTokenStatus::default()
        }
    }

    /// The pass's failure, whether the plan is in force, status before; then Ready.
    type Row<'a> = (
        Option<&'a Error>,
        bool,
        &'a WorkspaceTokenStatus,
        (bool, &'a str, &'a str),
    );

    #[test]
    fn ready_is_a_table_of_the_failure_the_plan_in_force_and_what_was_served() {
        let plan = plan_ready();
        let down = Error::Mint("the platform answered 503".into());
        let conflict = Error::SecretConflict {
            name: "agent".into(),
        };
        let served = ready_before("version 1 is active");
        let never = WorkspaceTokenStatus::default();
        let cases: [Row; 6] = [
            (None, true, &never, (true, "Active", "version 2 is active")),
            (
                Some(&down),
                true,
                &served,
                (true, "Active", "version 2 is active"),
            ),
            (
                Some(&down),
                false,
                &served,
                (true, "Active", "version 1 is active"),
            ),
            (
                Some(&down),
                false,
                &never,
                (
                    false,
                    "MintFailed",
                    "mint a token: the platform answered 503",
                ),
            ),
            (
                Some(&conflict),
                false,
                &served,
                (
                    false,
                    "SecretConflict",
                    "Secret agent exists and is not owned by this WorkspaceToken; it is left untouched",
                ),
            ),
            (
                Some(&conflict),
                true,
                &served,
                (true, "Active", "version 2 is active"),
            ),
        ];
        for (failure, in_force, previous, (ready, reason, message)) in cases {
            let row = format!("{failure:?}, in force: {in_force}");
            let got = readiness(&plan, failure, in_force, previous);
            assert_eq!(
                (got.0, got.1, got.2.as_str()),
                (ready, reason, message),
                "{row}"
            );
        }
    }
}
