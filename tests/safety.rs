//! Safety against a real API server: foreign Secrets are never touched, drift is repaired
//! without minting, a crash-left Pending version is adopted, deletion follows the policy,
//! and what the schema can't check surfaces as a condition, not a crash loop.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(30);

fn fingerprint(secret: &Secret, key: &str) -> Option<String> {
    data(secret, key).map(|t| sha256_hex(t.as_bytes()))
}

#[tokio::test]
async fn a_foreign_secret_with_the_target_name_is_left_byte_for_byte_and_reported() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "conflict").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": { "name": "taken", "labels": { "app.kubernetes.io/managed-by": "tokenwarden", "tokenwarden.dev/token": "t" } },
        "stringData": { "token": "not-yours" }
    }))
    .unwrap();
    let before = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-c", "secretName": "taken" }),
    )
    .await;

    let (status, _, message) = eventually(WAIT, "SecretConflict", || async {
        condition(&api, "t", "Ready")
            .await
            .filter(|(_, reason, _)| reason == "SecretConflict")
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("taken"), "{message}");
    eventually(WAIT, "SecretConflict event", || async {
        event_reasons(&client, &ns)
            .await
            .contains(&"SecretConflict".to_string())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = secrets.get("taken").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "never modified"
    );
    assert_eq!(after.data, before.data);
    assert!(
        secrets.get_opt("taken-v1").await.unwrap().is_none(),
        "nothing minted next to a conflict"
    );

    // The conflict is resolved by removing the foreign Secret: the operator then proceeds.
    secrets
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_version(&api, "t", 1, Duration::from_secs(90)).await;
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn drift_of_the_mounted_secret_is_repaired_without_a_new_token() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "drift").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(&api, "t", json!({ "workspaceId": "ws-d" })).await;
    wait_version(&api, "t", 1, WAIT).await;
    let record = fingerprint(&secrets.get("t-v1").await.unwrap(), "token");

    // Edited: restored from S-v1.
    let edit = json!({ "stringData": { "token": "tampered" } });
    secrets
        .patch("t", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    eventually(WAIT, "edited S restored", || async {
        (fingerprint(&secrets.get("t").await.ok()?, "token") == record).then_some(())
    })
    .await;

    // Deleted: recreated from S-v1.
    secrets.delete("t", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "deleted S recreated", || async {
        (fingerprint(&secrets.get_opt("t").await.ok()??, "token") == record).then_some(())
    })
    .await;

    // The record deleted while S holds the token: S-v1 restored from S.
    secrets
        .delete("t-v1", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "deleted S-v1 restored", || async {
        (fingerprint(&secrets.get_opt("t-v1").await.ok()??, "token") == record).then_some(())
    })
    .await;

    assert!(
        secrets.get_opt("t-v2").await.unwrap().is_none(),
        "drift never mints"
    );
    let w = api.get("t").await.unwrap();
    assert_eq!(w.status.unwrap().current_version, Some(1));
    assert!(
        event_reasons(&client, &ns)
            .await
            .contains(&"DriftRepaired".to_string())
    );

    // Both gone: the token is lost, so a new version is minted (TokenLost).
    secrets.delete("t", &DeleteParams::default()).await.unwrap();
    secrets
        .delete("t-v1", &DeleteParams::default())
        .await
        .unwrap();
    wait_version(&api, "t", 2, WAIT).await;
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn a_pending_version_left_by_a_crash_is_adopted_not_minted_again() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "adopt").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let w = create(
        &api,
        "t",
        json!({ "workspaceId": "ws-a", "rotation": { "gracePeriod": "0s" } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;

    // What a crash right after the mint of v2 leaves behind: S-v2 written, S still at v1.
    let planted = "crash-left-token-0123456789abcdefghijklmnop";
    let pending: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "t-v2",
            "labels": { "app.kubernetes.io/managed-by": "tokenwarden", "tokenwarden.dev/token": "t", "tokenwarden.dev/version": "2" },
            "annotations": { "tokenwarden.dev/token-sha256": sha256_hex(planted.as_bytes()) },
            "ownerReferences": [{ "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                                  "name": "t", "uid": w.uid().unwrap(), "controller": true }]
        },
        "immutable": true,
        "stringData": { "token": planted, "token-version": "v2", "workspace-id": "ws-a" }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &pending)
        .await
        .unwrap();

    wait_version(&api, "t", 2, WAIT).await;
    let mounted = secrets.get("t").await.unwrap();
    assert_eq!(
        fingerprint(&mounted, "token"),
        Some(sha256_hex(planted.as_bytes())),
        "the pending token was adopted"
    );
    eventually(WAIT, "v1 revoked at cutover (grace 0)", || async {
        secrets.get_opt("t-v1").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        secrets.get_opt("t-v3").await.unwrap().is_none(),
        "adoption mints nothing"
    );
    let w = api.get("t").await.unwrap();
    let active: Vec<_> = w
        .status
        .unwrap()
        .versions
        .into_iter()
        .filter(|v| format!("{:?}", v.state) == "Active")
        .collect();
    assert_eq!(active.len(), 1);
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn suspend_stops_rotation_and_says_so() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "suspend").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-s", "rotation": { "every": "2s" } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    api.patch(
        "t",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": true } })),
    )
    .await
    .unwrap();
    eventually(WAIT, "Suspended condition", || async {
        condition(&api, "t", "Ready")
            .await
            .filter(|(_, reason, _)| reason == "Suspended")
    })
    .await;
    let version = api
        .get("t")
        .await
        .unwrap()
        .status
        .unwrap()
        .current_version
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        api.get("t").await.unwrap().status.unwrap().current_version,
        Some(version),
        "no rotation while suspended"
    );

    api.patch(
        "t",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": false } })),
    )
    .await
    .unwrap();
    wait_version(&api, "t", version + 1, WAIT).await;
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn history_limit_trims_revoked_versions_in_status() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "history").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(&api, "t", json!({ "workspaceId": "ws-h", "historyLimit": 1, "rotation": { "every": "1s", "gracePeriod": "0s" } })).await;
    // It rotates every second: wait for v4 or later, not for the one second v4 is current.
    let (current, versions) = eventually(WAIT, "t at v4 or later", || async {
        let status = api.get("t").await.ok()?.status?;
        let current = status.current_version.filter(|v| *v >= 4)?;
        Some((current, status.versions))
    })
    .await;
    let revoked = versions
        .iter()
        .filter(|v| format!("{:?}", v.state) == "Revoked")
        .count();
    assert!(revoked <= 1, "{versions:?}");
    assert!(versions[0].version >= current, "newest first: {versions:?}");
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn restart_targets_get_a_restarted_at_annotation_at_cutover() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "restart").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "agent" },
        "spec": {
            "selector": { "matchLabels": { "app": "agent" } },
            "template": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": { "containers": [{ "name": "agent", "image": "example.invalid/agent:1",
                    "volumeMounts": [{ "name": "token", "mountPath": "/var/run/token" }] }],
                    "volumes": [{ "name": "token", "secret": { "secretName": "t" } }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(&api, "t", json!({ "workspaceId": "ws-r", "restartTargets": [{ "kind": "Deployment", "name": "agent" }, { "kind": "StatefulSet", "name": "missing" }] })).await;
    wait_version(&api, "t", 1, WAIT).await;
    let restarted = |d: &Deployment| {
        d.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get("tokenwarden.dev/restartedAt")
            .cloned()
    };
    let first = eventually(WAIT, "restartedAt after v1", || async {
        restarted(&deployments.get("agent").await.ok()?)
    })
    .await;

    api.patch(
        "t",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({ "metadata": { "annotations": { "tokenwarden.dev/rotate": "r1" } } }),
        ),
    )
    .await
    .unwrap();
    wait_version(&api, "t", 2, WAIT).await;
    let second = eventually(WAIT, "restartedAt after v2", || async {
        restarted(&deployments.get("agent").await.ok()?)
            .filter(|at| *at != first || first.is_empty())
    })
    .await;
    assert!(!second.is_empty());
    assert!(
        event_reasons(&client, &ns)
            .await
            .contains(&"RestartTargetNotFound".to_string()),
        "a missing target is reported, not fatal"
    );
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn deletion_with_revoke_removes_the_secrets_and_retain_keeps_them_unowned() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "delete").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(&api, "revoke", json!({ "workspaceId": "ws-del" })).await;
    create(
        &api,
        "retain",
        json!({ "workspaceId": "ws-del", "deletionPolicy": "Retain" }),
    )
    .await;
    let revoke = wait_version(&api, "revoke", 1, WAIT).await;
    let retain = wait_version(&api, "retain", 1, WAIT).await;
    // A local token under Revoke is revoked by deleting its Secrets, which their
    // ownerReferences do: no finalizer. Retain must release them first: a finalizer.
    assert_eq!(revoke.finalizers(), [] as [String; 0]);
    assert_eq!(retain.finalizers(), ["tokenwarden.dev/cleanup"]);

    api.delete("revoke", &DeleteParams::default())
        .await
        .unwrap();
    api.delete("retain", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "both WorkspaceTokens gone", || async {
        (api.get_opt("revoke").await.ok()?.is_none() && api.get_opt("retain").await.ok()?.is_none())
            .then_some(())
    })
    .await;
    eventually(
        GARBAGE_COLLECTION,
        "the garbage collector deleted S and S-v1",
        || async {
            let s = secrets.get_opt("revoke").await.ok()?;
            let v1 = secrets.get_opt("revoke-v1").await.ok()?;
            (s.is_none() && v1.is_none()).then_some(())
        },
    )
    .await;
    // The retained token went through our finalizer pass: its deletion revoked nothing, and
    // no line may say otherwise.
    let lines = operator.audit_lines();
    let retained_revoked = (lines.iter()).filter(|l| {
        l["namespace"] == ns.as_str() && l["name"] == "retain" && l["event"] == "revoked"
    });
    assert_eq!(retained_revoked.count(), 0);
    eventually(WAIT, "a revoked line for the collected v1", || async {
        (operator.audit_lines().iter()).find(|l| {
            l["namespace"] == ns.as_str()
                && l["name"] == "revoke"
                && l["event"] == "revoked"
                && l["token_version"] == "v1"
        })?;
        Some(())
    })
    .await;
    // Retained Secrets outlive their owner: no ownerReference left for the garbage collector.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["retain", "retain-v1"] {
        let s = secrets
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} retained: {e}"));
        assert!(s.owner_references().is_empty(), "{name} released");
        assert!(
            !s.labels().contains_key("app.kubernetes.io/managed-by"),
            "{name} no longer marked as tokenwarden's: its new owners may edit it"
        );
    }
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn what_the_schema_cannot_check_is_a_condition_and_an_event_not_a_crash_loop() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "badspec").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "bad-cron",
        json!({ "workspaceId": "ws-b", "rotation": { "schedule": "61 * * * *" } }),
    )
    .await;
    create(&api, "bad-tz", json!({ "workspaceId": "ws-b", "rotation": { "schedule": "0 3 * * *", "timeZone": "Mars/Olympus" } })).await;
    create(&api, "good-cron", json!({ "workspaceId": "ws-b", "rotation": { "schedule": "0 3 * * 1", "timeZone": "Europe/Berlin" } })).await;
    for (name, needle) in [("bad-cron", "61 * * * *"), ("bad-tz", "Mars/Olympus")] {
        let (status, _, message) = eventually(WAIT, &format!("{name} InvalidSpec"), || async {
            condition(&api, name, "Ready")
                .await
                .filter(|(_, reason, _)| reason == "InvalidSpec")
        })
        .await;
        assert_eq!(status, "False");
        assert!(message.contains(needle), "{message}");
    }
    let good = wait_version(&api, "good-cron", 1, WAIT).await;
    let next = good
        .status
        .unwrap()
        .next_rotation_time
        .expect("nextRotationTime from cron");
    assert!(next.0 > k8s_openapi::jiff::Timestamp::now());
    eventually(WAIT, "InvalidSpec event", || async {
        event_reasons(&client, &ns)
            .await
            .contains(&"InvalidSpec".to_string())
            .then_some(())
    })
    .await;

    // No hot loop: the bad objects are not reconciled over and over.
    let reconciles = || async {
        let (_, metrics) = operator.get("/metrics").expect("metrics");
        metrics
            .lines()
            .filter(|l| l.starts_with("tokenwarden_reconcile_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = reconciles().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = reconciles().await;
    assert!(
        after - before < 200.0,
        "reconciles in 5 s: {}",
        after - before
    );
    assert_eq!(operator.get("/healthz").map(|r| r.0), Some(200));
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints_answer() {
    let _cp = control_plane().await;
    let operator = shared_operator().await;
    let ready = eventually(WAIT, "/readyz 200", || async {
        operator.get("/readyz").filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(ready.1.trim(), "ok");
    assert_eq!(operator.get("/healthz").map(|r| r.0), Some(200));
    let (code, metrics) = operator.get("/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "tokenwarden_reconcile_total",
        "tokenwarden_reconcile_duration_seconds",
        "tokenwarden_rotations_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.starts_with("tokenwarden_")),
        "every metric is prefixed tokenwarden_"
    );
}

/// An admission policy that refuses the mounted Secret and quotes the token it carries in
/// its message, as a careless policy or webhook could. The refusal reaches the operator as
/// the API server's error text; the token is cut from it before it becomes a condition, an
/// event or a log line. Once the policy goes, the token converges with nothing lost.
#[tokio::test]
async fn a_refusal_that_quotes_the_token_is_redacted_everywhere_and_then_recovers() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "quoted").await;
    let name = format!("quote-the-token-{ns}");
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policy = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]
            }] },
            "matchConditions": [{
                "name": "the-mounted-secret",
                "expression": "request.name == 'quoted' || request.name == 'quoted-probe'"
            }],
            "validations": [{
                "expression": "false",
                "messageExpression": "'refused, it holds token=' + (has(object.data) && 'token' in object.data ? string(object.data['token']) : 'none')"
            }]
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");
    let binding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": {
                "matchLabels": { "kubernetes.io/metadata.name": ns }
            } }
        }
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let probe: Secret = serde_json::from_value(json!({
        "metadata": { "name": "quoted-probe" }, "stringData": { "token": "probe" }
    }))
    .unwrap();
    eventually(WAIT, "the policy in force", || async {
        match secrets.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("refused") => Some(()),
            Ok(_) => {
                let _ = secrets
                    .delete("quoted-probe", &DeleteParams::default())
                    .await;
                None
            }
            Err(_) => None,
        }
    })
    .await;

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(&api, "quoted", json!({ "workspaceId": "ws-quoted" })).await;
    let (_, _, message) = eventually(WAIT, "the refusal reported", || async {
        condition(&api, "quoted", "Degraded")
            .await
            .filter(|(status, _, message)| status == "True" && message.contains("refused"))
    })
    .await;
    // The message is never printed: if the cut failed, it holds the token.
    assert!(
        message.contains(tokenwarden::redact::REDACTED),
        "the quote is not cut from the Degraded message"
    );
    let token = data(&secrets.get("quoted-v1").await.expect("S-v1"), "token").expect("token");
    let status = serde_json::to_string(&api.get("quoted").await.unwrap().status).unwrap();
    assert!(!status.contains(&token), "the token is in the status");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        !serde_json::to_string(&events.items)
            .unwrap()
            .contains(&token),
        "the token is in an event"
    );
    for log in [&operator.stdout, &operator.stderr] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains(&token), "the token is in {}", log.display());
    }

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .expect("binding gone");
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .expect("policy gone");
    let w = wait_version(&api, "quoted", 1, Duration::from_secs(60)).await;
    let served = fingerprint(&secrets.get("quoted").await.unwrap(), "token");
    assert_eq!(
        served,
        Some(sha256_hex(token.as_bytes())),
        "S serves the v1 minted before"
    );
    assert_eq!(w.status.unwrap().token_sha256, served);
    dump(&client, &ns, Some(operator)).await;
}
