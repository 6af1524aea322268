//! Who reads a Secret and how: the pod spec reader, the index fed by watch events, and the
//! watches themselves against a stand-in API server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::Status;
use serde_json::{Value, json};

use super::*;

const NS: &str = "team-a";

fn from<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

fn read(spec: Value) -> Vec<(String, Via)> {
    reads(&from(spec)).into_iter().collect()
}

fn pairs(list: &[(&str, Via)]) -> Vec<(String, Via)> {
    list.iter().map(|(s, via)| (s.to_string(), *via)).collect()
}

/// A pod spec with one container `app` mounting `mounts` and the volumes `volumes`.
fn mounting(mounts: Value, volumes: Value) -> Value {
    json!({ "containers": [{ "name": "app", "volumeMounts": mounts }], "volumes": volumes })
}

fn env_reading(secret: &str) -> Value {
    json!({ "containers": [{ "name": "app", "env": [
        { "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": secret, "key": "token" } } },
    ] }] })
}

fn volume_reading(secret: &str) -> Value {
    mounting(
        json!([{ "name": "token", "mountPath": "/var/run/token" }]),
        json!([{ "name": "token", "secret": { "secretName": secret } }]),
    )
}

fn meta(name: &str) -> Value {
    json!({ "name": name, "namespace": NS })
}

fn deployment(name: &str, pod: Value) -> Deployment {
    from(json!({ "metadata": meta(name), "spec": { "selector": {}, "template": { "spec": pod } } }))
}

fn stateful_set(name: &str, pod: Value) -> StatefulSet {
    from(json!({ "metadata": meta(name), "spec": { "selector": {}, "template": { "spec": pod } } }))
}

fn daemon_set(name: &str, pod: Value) -> DaemonSet {
    from(json!({ "metadata": meta(name), "spec": { "selector": {}, "template": { "spec": pod } } }))
}

fn cron_job(name: &str, pod: Value) -> CronJob {
    from(
        json!({ "metadata": meta(name), "spec": { "schedule": "@hourly",
        "jobTemplate": { "spec": { "template": { "spec": pod } } } } }),
    )
}

fn job(name: &str, pod: Value) -> Job {
    from(json!({ "metadata": meta(name), "spec": { "template": { "spec": pod } } }))
}

fn pod(name: &str, spec: Value) -> Pod {
    from(json!({ "metadata": meta(name), "spec": spec }))
}

fn owned_by<K: Resource>(mut object: K, kind: &str, api_version: &str, controller: bool) -> K {
    object.owner_references_mut().push(OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: "owner".to_string(),
        uid: "0000".to_string(),
        controller: Some(controller),
        block_owner_deletion: None,
    });
    object
}

fn consumer(kind: ConsumerKind, name: &str, via: Via) -> Consumer {
    Consumer {
        kind,
        name: name.to_string(),
        via,
    }
}

fn changed(list: &[&str]) -> BTreeSet<SecretKey> {
    list.iter()
        .map(|s| (NS.to_string(), s.to_string()))
        .collect()
}

fn apply<K: Workload>(index: &ConsumerIndex, object: K) -> BTreeSet<SecretKey> {
    index.apply(watcher::Event::Apply(object))
}

fn stored(index: &ConsumerIndex) -> usize {
    let state = index.state();
    state.by_namespace.values().map(BTreeMap::len).sum()
}

fn forbidden() -> watcher::Error {
    let status = Status::failure("pods is forbidden", "Forbidden").with_code(403);
    watcher::Error::InitialListFailed(kube::Error::Api(status.boxed()))
}

// The pod spec reader.

#[test]
fn a_secret_volume_mounted_whole_is_read_via_volume() {
    assert_eq!(
        read(volume_reading("agent-token")),
        pairs(&[("agent-token", Via::Volume)])
    );
}

#[test]
fn each_secret_source_of_a_projected_volume_is_read_via_projected() {
    let spec = mounting(
        json!([{ "name": "bundle", "mountPath": "/etc/bundle" }]),
        json!([{ "name": "bundle", "projected": { "sources": [
            { "secret": { "name": "agent-token" } },
            { "configMap": { "name": "settings" } },
            { "secret": { "name": "ca" } },
        ] } }]),
    );
    assert_eq!(
        read(spec),
        pairs(&[("agent-token", Via::Projected), ("ca", Via::Projected)])
    );
}

#[test]
fn a_secret_key_ref_in_env_is_read_via_env() {
    assert_eq!(
        read(env_reading("agent-token")),
        pairs(&[("agent-token", Via::Env)])
    );
}

#[test]
fn an_env_from_secret_ref_is_read_via_env_from() {
    let spec = json!({ "containers": [{ "name": "app", "envFrom": [
        { "configMapRef": { "name": "settings" } },
        { "secretRef": { "name": "agent-token" }, "prefix": "AGENT_" },
    ] }] });
    assert_eq!(read(spec), pairs(&[("agent-token", Via::EnvFrom)]));
}

#[test]
fn a_sub_path_mount_of_a_secret_volume_is_read_via_sub_path_only() {
    let spec = mounting(
        json!([{ "name": "token", "mountPath": "/etc/token", "subPath": "token" }]),
        json!([{ "name": "token", "secret": { "secretName": "agent-token" } }]),
    );
    assert_eq!(read(spec), pairs(&[("agent-token", Via::SubPath)]));
}

#[test]
fn a_sub_path_expr_mount_of_a_projected_volume_is_read_via_sub_path_only() {
    let spec = mounting(
        json!([{ "name": "bundle", "mountPath": "/etc/token", "subPathExpr": "$(POD_NAME)" }]),
        json!([{ "name": "bundle", "projected": { "sources": [{ "secret": { "name": "agent-token" } }] } }]),
    );
    assert_eq!(read(spec), pairs(&[("agent-token", Via::SubPath)]));
}

#[test]
fn an_empty_sub_path_mounts_the_whole_volume() {
    let spec = mounting(
        json!([{ "name": "token", "mountPath": "/etc/token", "subPath": "", "subPathExpr": "" }]),
        json!([{ "name": "token", "secret": { "secretName": "agent-token" } }]),
    );
    assert_eq!(read(spec), pairs(&[("agent-token", Via::Volume)]));
}

#[test]
fn a_volume_mounted_whole_in_one_container_and_by_sub_path_in_another_is_read_both_ways() {
    let spec = json!({
        "containers": [
            { "name": "app", "volumeMounts": [{ "name": "token", "mountPath": "/var/run/token" }] },
            { "name": "sidecar", "volumeMounts": [{ "name": "token", "mountPath": "/t", "subPath": "token" }] },
        ],
        "volumes": [{ "name": "token", "secret": { "secretName": "agent-token" } }],
    });
    assert_eq!(
        read(spec),
        pairs(&[("agent-token", Via::Volume), ("agent-token", Via::SubPath)])
    );
}

#[test]
fn a_secret_volume_no_container_mounts_is_still_read_via_volume() {
    let spec = mounting(
        json!([]),
        json!([{ "name": "token", "secret": { "secretName": "agent-token" } }]),
    );
    assert_eq!(read(spec), pairs(&[("agent-token", Via::Volume)]));
}

#[test]
fn init_and_ephemeral_containers_read_too() {
    let spec = json!({
        "containers": [{ "name": "app" }],
        "initContainers": [{ "name": "init", "envFrom": [{ "secretRef": { "name": "bootstrap" } }],
            "volumeMounts": [{ "name": "token", "mountPath": "/t", "subPath": "token" }] }],
        "ephemeralContainers": [{ "name": "debug", "env": [
            { "name": "T", "valueFrom": { "secretKeyRef": { "name": "debug-token", "key": "token" } } },
        ] }],
        "volumes": [{ "name": "token", "secret": { "secretName": "agent-token" } }],
    });
    assert_eq!(
        read(spec),
        pairs(&[
            ("agent-token", Via::SubPath),
            ("bootstrap", Via::EnvFrom),
            ("debug-token", Via::Env),
        ])
    );
}

#[test]
fn a_pod_reading_two_secrets_lists_both() {
    let spec = json!({
        "containers": [{ "name": "app",
            "env": [{ "name": "DB", "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } }],
            "volumeMounts": [{ "name": "token", "mountPath": "/var/run/token" }] }],
        "volumes": [{ "name": "token", "secret": { "secretName": "agent-token" } }],
    });
    assert_eq!(
        read(spec),
        pairs(&[("agent-token", Via::Volume), ("db", Via::Env)])
    );
}

#[test]
fn a_spec_without_secret_references_reads_nothing() {
    let spec = json!({
        "containers": [{ "name": "app",
            "env": [
                { "name": "PLAIN", "value": "x" },
                { "name": "CM", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "k" } } },
            ],
            "envFrom": [{ "configMapRef": { "name": "settings" } }],
            "volumeMounts": [
                { "name": "scratch", "mountPath": "/tmp", "subPath": "x" },
                { "name": "settings", "mountPath": "/etc/settings" },
                { "name": "undeclared", "mountPath": "/u" },
            ] }],
        "imagePullSecrets": [{ "name": "registry" }],
        "volumes": [
            { "name": "scratch", "emptyDir": {} },
            { "name": "settings", "configMap": { "name": "settings" } },
        ],
    });
    assert_eq!(read(spec), []);
}

#[test]
fn only_volume_and_projected_follow_rotation() {
    let all = [
        Via::Volume,
        Via::Projected,
        Via::Env,
        Via::EnvFrom,
        Via::SubPath,
    ];
    let names: Vec<&str> = all.iter().map(|v| v.as_str()).collect();
    assert_eq!(names, ["volume", "projected", "env", "envFrom", "subPath"]);
    let following: Vec<Via> = all.into_iter().filter(|v| v.follows_rotation()).collect();
    assert_eq!(following, [Via::Volume, Via::Projected]);
    let kinds: Vec<&str> = ConsumerKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "CronJob",
            "Job",
            "Pod"
        ]
    );
}

// The index.

#[test]
fn each_kind_is_a_consumer_through_its_pod_template() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("web", volume_reading("agent-token")));
    apply(&index, stateful_set("db", env_reading("agent-token")));
    apply(&index, daemon_set("agent", volume_reading("agent-token")));
    apply(&index, cron_job("report", env_reading("agent-token")));
    apply(&index, job("migrate", env_reading("agent-token")));
    apply(&index, pod("debug", volume_reading("agent-token")));
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [
            consumer(ConsumerKind::Deployment, "web", Via::Volume),
            consumer(ConsumerKind::StatefulSet, "db", Via::Env),
            consumer(ConsumerKind::DaemonSet, "agent", Via::Volume),
            consumer(ConsumerKind::CronJob, "report", Via::Env),
            consumer(ConsumerKind::Job, "migrate", Via::Env),
            consumer(ConsumerKind::Pod, "debug", Via::Volume),
        ]
    );
}

#[test]
fn consumers_come_back_sorted_by_kind_name_and_via_whatever_the_order_they_arrived_in() {
    let index = ConsumerIndex::default();
    let both_ways = json!({
        "containers": [{ "name": "app",
            "envFrom": [{ "secretRef": { "name": "agent-token" } }],
            "volumeMounts": [{ "name": "token", "mountPath": "/t", "subPath": "token" }] }],
        "volumes": [{ "name": "token", "secret": { "secretName": "agent-token" } }],
    });
    apply(&index, pod("zeta", env_reading("agent-token")));
    apply(&index, deployment("web", both_ways));
    apply(&index, deployment("api", env_reading("agent-token")));
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [
            consumer(ConsumerKind::Deployment, "api", Via::Env),
            consumer(ConsumerKind::Deployment, "web", Via::EnvFrom),
            consumer(ConsumerKind::Deployment, "web", Via::SubPath),
            consumer(ConsumerKind::Pod, "zeta", Via::Env),
        ]
    );
}

#[test]
fn a_new_consumer_reports_the_secrets_it_reads() {
    let index = ConsumerIndex::default();
    let two = json!({ "containers": [{ "name": "app", "envFrom": [
        { "secretRef": { "name": "agent-token" } }, { "secretRef": { "name": "db" } },
    ] }] });
    assert_eq!(
        apply(&index, deployment("web", two)),
        changed(&["agent-token", "db"])
    );
    assert_eq!(index.consumers_of(NS, "db").len(), 1);
}

#[test]
fn an_update_reports_only_the_secrets_whose_consumers_changed() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("web", env_reading("agent-token")));
    let again = apply(&index, deployment("web", env_reading("agent-token")));
    assert_eq!(again, changed(&[]), "the same reads: nothing changed");
    let switched = apply(&index, deployment("web", volume_reading("agent-token")));
    assert_eq!(
        switched,
        changed(&["agent-token"]),
        "the same Secret, read another way"
    );
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [consumer(ConsumerKind::Deployment, "web", Via::Volume)]
    );
    let moved = apply(&index, deployment("web", volume_reading("other-token")));
    assert_eq!(moved, changed(&["agent-token", "other-token"]));
    assert_eq!(index.consumers_of(NS, "agent-token"), []);
}

#[test]
fn a_workload_that_stops_reading_secrets_is_forgotten_and_reported() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("web", env_reading("agent-token")));
    let cleared = apply(
        &index,
        deployment("web", json!({ "containers": [{ "name": "app" }] })),
    );
    assert_eq!(cleared, changed(&["agent-token"]));
    assert_eq!(stored(&index), 0);
}

#[test]
fn a_workload_reading_no_secret_is_not_stored() {
    let index = ConsumerIndex::default();
    let nothing = apply(
        &index,
        deployment("web", json!({ "containers": [{ "name": "app" }] })),
    );
    assert_eq!(nothing, changed(&[]));
    assert_eq!(stored(&index), 0);
    assert!(
        index.state().by_namespace.is_empty(),
        "no empty namespace entry either"
    );
}

#[test]
fn a_delete_reports_what_the_workload_read() {
    let index = ConsumerIndex::default();
    apply(&index, cron_job("report", env_reading("agent-token")));
    let gone = index.apply(watcher::Event::Delete(cron_job(
        "report",
        env_reading("agent-token"),
    )));
    assert_eq!(gone, changed(&["agent-token"]));
    assert_eq!(index.consumers_of(NS, "agent-token"), []);
    assert!(index.state().by_namespace.is_empty());
}

#[test]
fn the_same_name_in_two_kinds_or_two_namespaces_is_two_workloads() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("agent", env_reading("agent-token")));
    apply(&index, daemon_set("agent", env_reading("agent-token")));
    let mut elsewhere = deployment("agent", env_reading("agent-token"));
    elsewhere.metadata.namespace = Some("team-b".to_string());
    let reported = apply(&index, elsewhere);
    assert_eq!(
        reported,
        BTreeSet::from([("team-b".to_string(), "agent-token".to_string())])
    );
    index.apply(watcher::Event::Delete(daemon_set(
        "agent",
        env_reading("agent-token"),
    )));
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [consumer(ConsumerKind::Deployment, "agent", Via::Env)]
    );
    assert_eq!(index.consumers_of("team-b", "agent-token").len(), 1);
}

#[test]
fn a_pod_owned_by_a_replicaset_is_not_a_consumer_of_its_own() {
    let index = ConsumerIndex::default();
    let owned = owned_by(
        pod("web-5d8f-x2x", env_reading("agent-token")),
        "ReplicaSet",
        "apps/v1",
        true,
    );
    assert_eq!(apply(&index, owned), changed(&[]));
    assert_eq!(index.consumers_of(NS, "agent-token"), []);
}

#[test]
fn a_pod_whose_owners_are_not_its_controller_is_a_bare_pod() {
    let index = ConsumerIndex::default();
    let owned = owned_by(
        pod("debug", env_reading("agent-token")),
        "ConfigMap",
        "v1",
        false,
    );
    apply(&index, owned);
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [consumer(ConsumerKind::Pod, "debug", Via::Env)]
    );
}

#[test]
fn a_bare_pod_adopted_by_a_controller_stops_being_a_consumer() {
    let index = ConsumerIndex::default();
    apply(&index, pod("web-1", env_reading("agent-token")));
    let adopted = owned_by(
        pod("web-1", env_reading("agent-token")),
        "ReplicaSet",
        "apps/v1",
        true,
    );
    assert_eq!(apply(&index, adopted), changed(&["agent-token"]));
    assert_eq!(stored(&index), 0);
}

#[test]
fn a_job_controlled_by_a_cronjob_is_counted_through_its_cronjob() {
    let index = ConsumerIndex::default();
    apply(&index, cron_job("report", env_reading("agent-token")));
    let run = owned_by(
        job("report-2961", env_reading("agent-token")),
        "CronJob",
        "batch/v1",
        true,
    );
    assert_eq!(apply(&index, run), changed(&[]));
    let other = owned_by(
        job("pipeline-7", env_reading("agent-token")),
        "Workflow",
        "argoproj.io/v1alpha1",
        true,
    );
    apply(&index, other);
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [
            consumer(ConsumerKind::CronJob, "report", Via::Env),
            consumer(ConsumerKind::Job, "pipeline-7", Via::Env),
        ],
        "a Job whose controller is not watched is a consumer of its own"
    );
}

fn job_with(conditions: Value) -> Job {
    let mut job = job("migrate", env_reading("agent-token"));
    job.status = Some(from(json!({ "conditions": conditions })));
    job
}

fn pod_in(phase: &str) -> Pod {
    let mut pod = pod("once", env_reading("agent-token"));
    pod.status = Some(from(json!({ "phase": phase })));
    pod
}

#[test]
fn a_finished_job_or_pod_reads_nothing_any_more() {
    for finished in ["Complete", "Failed"] {
        let index = ConsumerIndex::default();
        apply(&index, job("migrate", env_reading("agent-token")));
        let done = job_with(json!([
            { "type": "SuccessCriteriaMet", "status": "True" },
            { "type": finished, "status": "True" },
        ]));
        assert_eq!(apply(&index, done), changed(&["agent-token"]), "{finished}");
        assert_eq!(stored(&index), 0, "{finished}");
    }
    for terminated in ["Succeeded", "Failed"] {
        let index = ConsumerIndex::default();
        apply(&index, pod("once", env_reading("agent-token")));
        let exited = pod_in(terminated);
        assert_eq!(
            apply(&index, exited),
            changed(&["agent-token"]),
            "{terminated}"
        );
        assert_eq!(stored(&index), 0, "{terminated}");
    }
}

#[test]
fn a_suspended_job_or_a_running_pod_still_reads() {
    let index = ConsumerIndex::default();
    apply(
        &index,
        job_with(json!([
            { "type": "Suspended", "status": "True" },
            { "type": "Failed", "status": "False" },
        ])),
    );
    apply(&index, pod_in("Running"));
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [
            consumer(ConsumerKind::Job, "migrate", Via::Env),
            consumer(ConsumerKind::Pod, "once", Via::Env),
        ]
    );
}

// Relists and readiness.

#[test]
fn a_relist_drops_workloads_no_longer_there_and_reports_their_secrets() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("kept", env_reading("agent-token")));
    apply(&index, deployment("gone", volume_reading("old-token")));
    assert_eq!(
        index.apply::<Deployment>(watcher::Event::Init),
        changed(&[])
    );
    let relisted = watcher::Event::InitApply(deployment("kept", env_reading("agent-token")));
    assert_eq!(
        index.apply(relisted),
        changed(&[]),
        "unchanged: nothing to report"
    );
    let done = index.apply::<Deployment>(watcher::Event::InitDone);
    assert_eq!(done, changed(&["old-token"]));
    assert_eq!(index.consumers_of(NS, "old-token"), []);
    assert_eq!(index.consumers_of(NS, "agent-token").len(), 1);
}

#[test]
fn during_a_relist_the_old_entries_serve_until_init_done() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("gone", env_reading("agent-token")));
    index.apply::<Deployment>(watcher::Event::Init);
    let new = index.apply(watcher::Event::InitApply(deployment(
        "new",
        env_reading("agent-token"),
    )));
    assert_eq!(
        new,
        changed(&["agent-token"]),
        "a change in a relist is reported as it comes"
    );
    assert_eq!(index.consumers_of(NS, "agent-token").len(), 2);
    index.apply::<Deployment>(watcher::Event::InitDone);
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [consumer(ConsumerKind::Deployment, "new", Via::Env)]
    );
}

#[test]
fn a_relist_of_one_kind_leaves_the_other_kinds_alone() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("agent", env_reading("agent-token")));
    apply(&index, pod("agent", env_reading("agent-token")));
    index.apply::<Pod>(watcher::Event::Init);
    let done = index.apply::<Pod>(watcher::Event::InitDone);
    assert_eq!(done, changed(&["agent-token"]));
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [consumer(ConsumerKind::Deployment, "agent", Via::Env)]
    );
}

#[test]
fn a_restarted_relist_forgets_what_the_broken_one_saw() {
    let index = ConsumerIndex::default();
    apply(&index, deployment("gone", env_reading("agent-token")));
    index.apply::<Deployment>(watcher::Event::Init);
    index.apply(watcher::Event::InitApply(deployment(
        "gone",
        env_reading("agent-token"),
    )));
    // The list broke off (its continue token expired): the watcher starts over.
    index.apply::<Deployment>(watcher::Event::Init);
    assert_eq!(
        index.apply::<Deployment>(watcher::Event::InitDone),
        changed(&["agent-token"])
    );
    assert_eq!(stored(&index), 0);
}

/// A first list of kind `K` with nothing in it.
fn listed<K: Workload>(index: &ConsumerIndex) {
    index.apply::<K>(watcher::Event::Init);
    index.apply::<K>(watcher::Event::InitDone);
}

#[test]
fn the_index_is_ready_once_every_kind_has_listed_once() {
    let index = ConsumerIndex::default();
    listed::<Deployment>(&index);
    listed::<StatefulSet>(&index);
    listed::<DaemonSet>(&index);
    listed::<CronJob>(&index);
    listed::<Job>(&index);
    assert!(!index.is_ready(), "pods are not listed yet");
    index.apply::<Pod>(watcher::Event::Init);
    assert!(!index.is_ready(), "pods are being listed");
    index.apply::<Pod>(watcher::Event::InitDone);
    assert!(index.is_ready());
    index.apply::<Pod>(watcher::Event::Init);
    assert!(index.is_ready(), "a relist does not make the index unready");
}

#[test]
fn a_kind_whose_list_is_forbidden_counts_as_listed_with_nothing() {
    let index = ConsumerIndex::default();
    listed::<Deployment>(&index);
    listed::<StatefulSet>(&index);
    listed::<DaemonSet>(&index);
    listed::<CronJob>(&index);
    listed::<Job>(&index);
    apply(&index, pod("debug", env_reading("agent-token")));
    index.apply::<Pod>(watcher::Event::Init);
    assert!(!index.is_ready());
    assert_eq!(index.failed::<Pod>(&forbidden()), changed(&["agent-token"]));
    assert!(
        index.is_ready(),
        "a forbidden kind does not block readiness"
    );
    assert_eq!(index.consumers_of(NS, "agent-token"), []);
    assert_eq!(
        index.failed::<Pod>(&forbidden()),
        changed(&[]),
        "nothing left to drop"
    );

    // RBAC now grants pods: the next list fills the kind.
    index.apply::<Pod>(watcher::Event::Init);
    index.apply(watcher::Event::InitApply(pod(
        "debug",
        env_reading("agent-token"),
    )));
    index.apply::<Pod>(watcher::Event::InitDone);
    assert!(index.state().forbidden.is_empty());
    assert_eq!(index.consumers_of(NS, "agent-token").len(), 1);
}

#[test]
fn other_watch_errors_keep_what_is_known_and_do_not_make_a_kind_ready() {
    let index = ConsumerIndex::default();
    apply(&index, job("migrate", env_reading("agent-token")));
    let unavailable = Status::failure("etcd is slow", "ServiceUnavailable").with_code(503);
    let error = watcher::Error::InitialListFailed(kube::Error::Api(unavailable.boxed()));
    assert_eq!(index.failed::<Job>(&error), changed(&[]));
    assert_eq!(index.consumers_of(NS, "agent-token").len(), 1);
    assert!(index.state().forbidden.is_empty());
    assert!(!is_forbidden(&watcher::Error::NoResourceVersion));
    let in_watch = Status::failure("forbidden", "Forbidden").with_code(403);
    assert!(is_forbidden(&watcher::Error::WatchError(in_watch.boxed())));
}

// The watches, against a stand-in API server.

/// Answers every list of the six kinds in `team-a` (pods: 403) and holds every watch open.
async fn stand_in_api_server(requests: Arc<Mutex<Vec<String>>>) -> String {
    use axum::body::Body;
    use axum::http::{StatusCode, Uri};
    use axum::response::IntoResponse;

    let answer = move |uri: Uri| {
        let requests = requests.clone();
        async move {
            let path = uri.path().to_string();
            if uri.query().unwrap_or_default().contains("watch=true") {
                let open = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
                return Body::from_stream(open).into_response();
            }
            requests.lock().unwrap().push(uri.to_string());
            if path.ends_with("/pods") {
                let status = Status::failure("pods is forbidden", "Forbidden").with_code(403);
                return (StatusCode::FORBIDDEN, axum_json(&status)).into_response();
            }
            let items = if path.ends_with("/deployments") {
                json!([deployment("web", volume_reading("agent-token"))])
            } else if path.ends_with("/cronjobs") {
                json!([cron_job("report", env_reading("agent-token"))])
            } else {
                json!([])
            };
            let list = json!({ "metadata": { "resourceVersion": "1" }, "items": items });
            axum_json(&list).into_response()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().fallback(answer);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn axum_json(value: &impl serde::Serialize) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::to_vec(value).unwrap();
    ([("content-type", "application/json")], body).into_response()
}

#[tokio::test]
async fn the_watches_list_six_kinds_in_the_namespace_and_a_forbidden_kind_does_not_block() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let url = stand_in_api_server(requests.clone()).await;
    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let (index, changes) = run(client, Some(NS));
    let (seen, mut reported) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(changes.for_each(move |key| {
        let _ = seen.send(key);
        futures::future::ready(())
    }));
    tokio::time::timeout(Duration::from_secs(10), async {
        while !index.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the index gets ready though pods are forbidden");
    assert_eq!(
        index.consumers_of(NS, "agent-token"),
        [
            consumer(ConsumerKind::Deployment, "web", Via::Volume),
            consumer(ConsumerKind::CronJob, "report", Via::Env),
        ]
    );
    assert_eq!(
        reported.recv().await,
        Some((NS.to_string(), "agent-token".to_string()))
    );
    let lists: Vec<String> = requests.lock().unwrap().clone();
    assert!(
        lists.iter().all(|uri| uri.contains("limit=500")),
        "pages of 500: {lists:?}"
    );
    let mut paths: Vec<&str> = lists
        .iter()
        .map(|uri| uri.split('?').next().unwrap())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/team-a/pods",
            "/apis/apps/v1/namespaces/team-a/daemonsets",
            "/apis/apps/v1/namespaces/team-a/deployments",
            "/apis/apps/v1/namespaces/team-a/statefulsets",
            "/apis/batch/v1/namespaces/team-a/cronjobs",
            "/apis/batch/v1/namespaces/team-a/jobs",
        ]
    );
}

#[test]
fn a_workload_reading_many_secrets_is_kept_to_its_first_64_reads() {
    let index = ConsumerIndex::default();
    let env: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({ "name": format!("V{i}"), "valueFrom": { "secretKeyRef": { "name": format!("s{i:03}"), "key": "k" } } }))
        .collect();
    apply(
        &index,
        deployment(
            "wide",
            json!({ "containers": [{ "name": "app", "env": env }] }),
        ),
    );
    assert_eq!(index.consumers_of(NS, "s000").len(), 1);
    assert_eq!(index.consumers_of(NS, "s063").len(), 1);
    assert!(index.consumers_of(NS, "s064").is_empty());
}
