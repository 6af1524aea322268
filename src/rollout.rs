//! A restart target's rollout as `kubectl rollout status` judges it, read from the workload's
//! status, and what it means for the version its restart was meant to replace. Pure: the
//! watches that feed it live in `rollout_watch`.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::RestartKind;
use crate::contract::RESTARTED_AT_ANNOTATION;

/// What a restart target's status says, as far as a hold is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// No such workload: nothing of it can hold a token.
    Missing,
    /// The operator may not read it (its RBAC): it holds, and says why.
    Unreadable(String),
    Seen {
        /// The pod template's `tokenwarden.dev/restartedAt`: the last restart it got from us.
        restarted_at: Option<DateTime<Utc>>,
        /// Why the rollout is not complete (`2/3 updated`); None once it is.
        waiting: Option<String>,
    },
}

/// Why the rollout of `kind/name` still holds a version whose successor was cut over at
/// `cutover`; None once that rollout is complete (or the workload does not exist).
pub fn holds(
    kind: RestartKind,
    name: &str,
    rollout: Option<&Rollout>,
    cutover: DateTime<Utc>,
) -> Option<String> {
    let what = match rollout {
        None => "rollout not observed yet".to_string(),
        Some(Rollout::Missing) => return None,
        Some(Rollout::Unreadable(why)) => format!("rollout unreadable ({why})"),
        Some(Rollout::Seen { restarted_at, .. }) if restarted_at.is_none_or(|at| at < cutover) => {
            "restart pending".to_string()
        }
        Some(Rollout::Seen { waiting, .. }) => waiting.clone()?,
    };
    Some(format!("{kind:?}/{name} {what}"))
}

fn restarted_at(template: Option<&ObjectMeta>) -> Option<DateTime<Utc>> {
    let value = template?
        .annotations
        .as_ref()?
        .get(RESTARTED_AT_ANNOTATION)?;
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|at| at.to_utc())
}

fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.is_some_and(|o| o >= generation.unwrap_or(0))
}

/// `kubectl rollout status deployment/...`.
pub fn deployment(d: &Deployment) -> Rollout {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let waiting = if !observed(d.metadata.generation, status.observed_generation) {
        Some("update not observed yet".to_string())
    } else if deadline_exceeded {
        Some(format!(
            "{updated}/{desired} updated, progress deadline exceeded"
        ))
    } else if updated < desired {
        Some(format!("{updated}/{desired} updated"))
    } else if total > updated {
        let old = total - updated;
        Some(format!(
            "{old} old pod{} left",
            if old == 1 { "" } else { "s" }
        ))
    } else if available < updated {
        Some(format!("{available}/{updated} available"))
    } else {
        None
    };
    Rollout::Seen {
        restarted_at: restarted_at(spec.and_then(|s| s.template.metadata.as_ref())),
        waiting,
    }
}

/// `kubectl rollout status statefulset/...`, stricter where a token is at stake: every pod
/// must run the updated template, also with a partition or `OnDelete` (whose pods update only
/// when someone deletes them), since an old pod may still hold the old token.
pub fn stateful_set(s: &StatefulSet) -> Rollout {
    let spec = s.spec.as_ref();
    let status = s.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let partition = spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    // Every pod at the update revision, whatever the strategy: a partition or `OnDelete`
    // leaves pods of the old template, which may still hold the old token.
    let held_back = if partition > 0 {
        format!(" (partition {partition})")
    } else {
        String::new()
    };
    let waiting = if !observed(s.metadata.generation, status.observed_generation) {
        Some("update not observed yet".to_string())
    } else if ready < desired {
        Some(format!("{ready}/{desired} ready"))
    } else if updated < desired {
        Some(format!("{updated}/{desired} updated{held_back}"))
    } else {
        None
    };
    Rollout::Seen {
        restarted_at: restarted_at(spec.and_then(|s| s.template.metadata.as_ref())),
        waiting,
    }
}

/// `kubectl rollout status daemonset/...`.
pub fn daemon_set(d: &DaemonSet) -> Rollout {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    let waiting = if !observed(d.metadata.generation, status.observed_generation) {
        Some("update not observed yet".to_string())
    } else if updated < desired {
        Some(format!("{updated}/{desired} updated"))
    } else if available < desired {
        Some(format!("{available}/{desired} available"))
    } else {
        None
    };
    Rollout::Seen {
        restarted_at: restarted_at(spec.and_then(|s| s.template.metadata.as_ref())),
        waiting,
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
