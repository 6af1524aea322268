//! `kubectl rollout status`'s rules, read from each workload kind's status.

use super::*;
use chrono::TimeZone;

fn deployment(spec_replicas: i32, status: serde_json::Value) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "agent", "generation": 3 },
        "spec": {
            "replicas": spec_replicas,
            "selector": { "matchLabels": { "app": "agent" } },
            "template": { "metadata": { "annotations": {
                "tokenwarden.dev/restartedAt": "2026-01-06T00:00:00.5Z" } } },
        },
        "status": status,
    }))
    .unwrap()
}

fn waiting(rollout: Rollout) -> Option<String> {
    match rollout {
        Rollout::Seen { waiting, .. } => waiting,
        other => panic!("a workload was given: {other:?}"),
    }
}

#[test]
fn a_deployment_is_rolled_out_as_kubectl_rollout_status_says() {
    let cases = [
        (json_status(2, 3, 3, 3, 3), Some("update not observed yet")),
        (json_status(3, 3, 1, 3, 3), Some("1/3 updated")),
        (json_status(3, 4, 3, 4, 3), Some("1 old pod left")),
        (json_status(3, 3, 3, 3, 2), Some("2/3 available")),
        (json_status(3, 3, 3, 3, 3), None),
    ];
    for (status, expected) in cases {
        let d = deployment(3, status.clone());
        assert_eq!(
            waiting(super::deployment(&d)).as_deref(),
            expected,
            "{status}"
        );
    }
}

fn json_status(
    observed: i64,
    replicas: i32,
    updated: i32,
    _ready: i32,
    available: i32,
) -> serde_json::Value {
    serde_json::json!({ "observedGeneration": observed, "replicas": replicas,
        "updatedReplicas": updated, "availableReplicas": available })
}

#[test]
fn a_deployment_past_its_progress_deadline_still_holds() {
    let mut status = json_status(3, 3, 1, 1, 1);
    status["conditions"] = serde_json::json!([{ "type": "Progressing", "status": "False",
        "reason": "ProgressDeadlineExceeded" }]);
    let rollout = super::deployment(&deployment(3, status));
    assert_eq!(
        waiting(rollout).as_deref(),
        Some("1/3 updated, progress deadline exceeded")
    );
}

#[test]
fn the_restart_annotation_is_read_with_its_sub_second_precision() {
    let rollout = super::deployment(&deployment(1, json_status(3, 1, 1, 1, 1)));
    let at = Utc.with_ymd_and_hms(2026, 1, 6, 0, 0, 0).unwrap();
    assert_eq!(
        rollout,
        Rollout::Seen {
            restarted_at: Some(at + chrono::Duration::milliseconds(500)),
            waiting: None
        }
    );
    assert_eq!(
        holds(RestartKind::Deployment, "agent", Some(&rollout), at),
        None
    );
    assert_eq!(
        holds(
            RestartKind::Deployment,
            "agent",
            Some(&rollout),
            at + chrono::Duration::seconds(1)
        ),
        Some("Deployment/agent restart pending".to_string()),
        "a restart older than the cutover is not the one the cutover started"
    );
}

#[test]
fn a_stateful_set_waits_for_ready_pods_then_for_every_pod_updated_partition_or_not() {
    let set = |status: serde_json::Value, partition: Option<i32>| -> StatefulSet {
        let mut spec = serde_json::json!({ "replicas": 3, "serviceName": "agent",
            "selector": { "matchLabels": { "app": "agent" } }, "template": {} });
        if let Some(p) = partition {
            spec["updateStrategy"] =
                serde_json::json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": p } });
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent", "generation": 2 }, "spec": spec, "status": status,
        }))
        .unwrap()
    };
    let status = |observed: i64, ready: i32, updated: i32, current: &str| {
        serde_json::json!({ "observedGeneration": observed, "replicas": 3, "readyReplicas": ready,
            "updatedReplicas": updated, "currentRevision": current, "updateRevision": "r2" })
    };
    let cases = [
        (
            set(status(1, 3, 3, "r2"), None),
            Some("update not observed yet"),
        ),
        (set(status(2, 2, 1, "r1"), None), Some("2/3 ready")),
        (set(status(2, 3, 2, "r1"), None), Some("2/3 updated")),
        (set(status(2, 3, 3, "r2"), None), None),
        (
            set(status(2, 3, 0, "r1"), Some(2)),
            Some("0/3 updated (partition 2)"),
        ),
        (
            set(status(2, 3, 1, "r1"), Some(2)),
            Some("1/3 updated (partition 2)"),
        ),
        // OnDelete never moves currentRevision: every pod updated is what counts.
        (set(status(2, 3, 3, "r1"), None), None),
    ];
    for (s, expected) in cases {
        assert_eq!(
            waiting(stateful_set(&s)).as_deref(),
            expected,
            "{:?}",
            s.status
        );
    }
}

#[test]
fn a_daemon_set_waits_for_every_scheduled_pod_updated_and_available() {
    let set = |observed: i64, desired: i32, updated: i32, available: i32| -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent", "generation": 2 },
            "spec": { "selector": { "matchLabels": { "app": "agent" } }, "template": {} },
            "status": { "observedGeneration": observed, "desiredNumberScheduled": desired,
                "updatedNumberScheduled": updated, "numberAvailable": available,
                "currentNumberScheduled": desired, "numberMisscheduled": 0, "numberReady": available },
        }))
        .unwrap()
    };
    let cases = [
        (set(1, 2, 2, 2), Some("update not observed yet")),
        (set(2, 2, 1, 2), Some("1/2 updated")),
        (set(2, 2, 2, 1), Some("1/2 available")),
        (set(2, 2, 2, 2), None),
    ];
    for (d, expected) in cases {
        assert_eq!(
            waiting(daemon_set(&d)).as_deref(),
            expected,
            "{:?}",
            d.status
        );
    }
}

#[test]
fn a_missing_workload_holds_nothing_and_an_unseen_one_holds() {
    let cutover = Utc.with_ymd_and_hms(2026, 1, 6, 0, 0, 0).unwrap();
    assert_eq!(
        holds(
            RestartKind::DaemonSet,
            "x",
            Some(&Rollout::Missing),
            cutover
        ),
        None
    );
    assert_eq!(
        holds(RestartKind::StatefulSet, "db", None, cutover),
        Some("StatefulSet/db rollout not observed yet".to_string())
    );
}
