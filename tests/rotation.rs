//! The rotation controller against a real API server: minting, the Secrets' contract,
//! rotation triggers, grace, revocation and the CLI. Token values are only ever compared by
//! their SHA-256, so a failing assertion can't print one.

mod support;

use std::time::Duration;

use chrono::{DurationRound, Timelike};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(30);

fn fingerprint(secret: &Secret, key: &str) -> Option<String> {
    data(secret, key).map(|t| sha256_hex(t.as_bytes()))
}

#[tokio::test]
async fn first_version_is_minted_into_versioned_and_mounted_secrets_as_the_contract_says() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "mint").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "agent-alpha",
        json!({
            "workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b",
            "userId": "19047492-ea90-4138-9afc-d2df61de2b06",
            "profileId": "p-001",
            "environment": "staging",
            "secretName": "agent-alpha-token",
            "token": { "prefix": "wst_" },
            "secretTemplate": { "labels": { "team": "a" }, "annotations": { "owner": "platform" } }
        }),
    )
    .await;
    let wst = wait_version(&api, "agent-alpha", 1, WAIT).await;
    let status = wst.status.clone().unwrap();

    let versioned = secret(&client, &ns, "agent-alpha-token-v1")
        .await
        .expect("S-v1");
    let mounted = secret(&client, &ns, "agent-alpha-token").await.expect("S");
    let token = data(&versioned, "token").expect("token key");
    assert_eq!(token.len(), 4 + 43, "prefix + 43 base64url chars");
    assert!(token.starts_with("wst_"));
    assert_eq!(
        fingerprint(&mounted, "token"),
        fingerprint(&versioned, "token")
    );
    for s in [&versioned, &mounted] {
        assert_eq!(data(s, "token-version").as_deref(), Some("v1"));
        assert_eq!(
            data(s, "workspace-id").as_deref(),
            Some("948bab9a-2cad-4a3f-af1f-01bfe260f85b")
        );
        let owner = &s.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("WorkspaceToken", Some(true))
        );
        assert_eq!(owner.uid, wst.uid().unwrap());
        let labels = s.labels();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("tokenwarden")
        );
        assert_eq!(
            labels.get("tokenwarden.dev/token").map(String::as_str),
            Some("agent-alpha")
        );
        assert_eq!(
            labels
                .get("tokenwarden.dev/environment")
                .map(String::as_str),
            Some("staging")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        let annotations = s.annotations();
        assert_eq!(
            annotations.get("owner").map(String::as_str),
            Some("platform")
        );
        assert_eq!(
            annotations.get("tokenwarden.dev/token-sha256"),
            status.token_sha256.as_ref()
        );
        assert_eq!(
            annotations.get("tokenwarden.dev/trace-id"),
            status.last_trace_id.as_ref()
        );
    }
    assert_eq!(versioned.immutable, Some(true));
    assert_eq!(
        versioned
            .labels()
            .get("tokenwarden.dev/version")
            .map(String::as_str),
        Some("1")
    );
    assert!(data(&mounted, "previous-token").is_none());

    // Status: hash and prefix only.
    assert_eq!(status.token_version.as_deref(), Some("v1"));
    assert_eq!(status.token_prefix.as_deref(), Some(&token[..8]));
    assert_eq!(
        status.token_sha256.as_deref(),
        Some(sha256_hex(token.as_bytes()).as_str())
    );
    assert_eq!(status.versions.len(), 1);
    assert_eq!(status.observed_generation, wst.metadata.generation);
    let trace_id = status.last_trace_id.clone().unwrap();
    assert_eq!(trace_id.len(), 32);

    // Audit: one JSON line per step with the seed's fields, one trace id for the rotation.
    let lines = eventually(WAIT, "audit lines for agent-alpha", || async {
        let lines: Vec<_> = operator
            .audit_lines()
            .into_iter()
            .filter(|l| l["namespace"] == ns.as_str())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(events, ["minted", "activated"]);
    for line in &lines {
        for key in [
            "timestamp",
            "trace_id",
            "workspace_id",
            "user_id",
            "profile_id",
            "token_version",
            "event",
            "status",
        ] {
            assert!(!line[key].is_null(), "audit field {key} missing in {line}");
        }
        assert_eq!(line["trace_id"], trace_id.as_str());
        assert_eq!(line["token_version"], "v1");
        assert_eq!(line["status"], "success");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // One Event for a first token (minted and served in one pass), two for a rotation.
    eventually(WAIT, "the Minted Event", || async {
        event_reasons(&client, &ns)
            .await
            .contains(&"Minted".to_string())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(event_reasons(&client, &ns).await, ["Minted"]);
    // A local token under deletionPolicy Revoke goes with its Secrets: no finalizer to write.
    assert_eq!(wst.finalizers(), [] as [String; 0]);

    // With no grace period v1 is revoked at the cutover: no previous version either, yet a
    // rotation, so it keeps its Activated Event.
    let no_grace = json!({ "spec": { "rotation": { "gracePeriod": "0s" } } });
    (api.patch(
        "agent-alpha",
        &PatchParams::default(),
        &Patch::Merge(&no_grace),
    ))
    .await
    .unwrap();
    request_rotation(&api, "agent-alpha", "second").await;
    wait_version(&api, "agent-alpha", 2, WAIT).await;
    eventually(WAIT, "Minted and Activated for v2", || async {
        let reasons = event_reasons(&client, &ns).await;
        (reasons.iter().filter(|r| *r == "Minted").count() == 2
            && reasons.contains(&"Activated".to_string()))
        .then_some(())
    })
    .await;
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn rotation_on_every_keeps_the_previous_token_through_grace_then_revokes_it() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "every").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-every", "rotation": { "every": "4s", "gracePeriod": "3s" } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let v1 = secret(&client, &ns, "t-v1").await.expect("t-v1");

    let w = wait_version(&api, "t", 2, WAIT).await;
    let mounted = secret(&client, &ns, "t").await.unwrap();
    let v2 = secret(&client, &ns, "t-v2").await.expect("t-v2");
    assert_eq!(fingerprint(&mounted, "token"), fingerprint(&v2, "token"));
    if secret(&client, &ns, "t-v1").await.is_some() {
        // Inside the grace period the old token is still mounted as previous-token.
        assert_eq!(
            fingerprint(&mounted, "previous-token"),
            fingerprint(&v1, "token")
        );
        assert_eq!(
            data(&mounted, "previous-token-version").as_deref(),
            Some("v1")
        );
        let retiring = w
            .status
            .as_ref()
            .unwrap()
            .versions
            .iter()
            .find(|v| v.version == 1)
            .unwrap();
        assert!(retiring.retire_at.is_some());
    }

    // After grace: S-v1 deleted, previous-token gone, v1 Revoked in status.
    eventually(WAIT, "v1 revoked", || async {
        let gone = secret(&client, &ns, "t-v1").await.is_none();
        let mounted = secret(&client, &ns, "t").await?;
        let w = api.get("t").await.ok()?;
        let v1_revoked = w
            .status?
            .versions
            .iter()
            .any(|v| v.version == 1 && format!("{:?}", v.state) == "Revoked");
        (gone && data(&mounted, "previous-token").is_none() && v1_revoked).then_some(())
    })
    .await;
    assert_eq!(operator.get("/healthz").map(|r| r.0), Some(200));
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn spec_change_rotates_but_a_secret_template_change_updates_in_place() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "change").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-change", "secretTemplate": { "labels": { "tier": "one" } } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let before = secret(&client, &ns, "t").await.unwrap();

    // secretTemplate only: same token, new label, old label removed, no v2.
    let patch = json!({ "spec": { "secretTemplate": { "labels": { "tier2": "two" } } } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let patch = json!({ "spec": { "secretTemplate": { "labels": { "tier": null } } } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(WAIT, "template applied to both Secrets", || async {
        let mounted = secret(&client, &ns, "t").await?;
        let versioned = secret(&client, &ns, "t-v1").await?;
        let ok = [&mounted, &versioned].iter().all(|s| {
            s.labels().get("tier2").map(String::as_str) == Some("two")
                && !s.labels().contains_key("tier")
        });
        ok.then_some(())
    })
    .await;
    let after = secret(&client, &ns, "t").await.unwrap();
    assert_eq!(fingerprint(&after, "token"), fingerprint(&before, "token"));
    assert!(
        secret(&client, &ns, "t-v2").await.is_none(),
        "a template change must not mint"
    );

    // Token shape: a new token of the new shape.
    let patch = json!({ "spec": { "token": { "bytes": 16, "encoding": "hex" } } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_version(&api, "t", 2, WAIT).await;
    let v2 = secret(&client, &ns, "t-v2").await.unwrap();
    let token = data(&v2, "token").unwrap();
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "16 bytes as hex"
    );
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn cli_rotate_and_revoke_drive_rotation_through_annotations() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "cli").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-cli", "rotation": { "gracePeriod": "1h" } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;

    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .args(args)
            .env("KUBECONFIG", cp.admin_kubeconfig())
            .output()
            .expect("run tokenwarden");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(
            artifacts_dir().join(format!("{ns}-cli-{}.txt", args[0])),
            &text,
        )
        .unwrap();
        (output.status.success(), text)
    };

    let (ok, out) = cli(&["rotate", "t", "-n", &ns, "--wait", "--timeout", "30"]);
    assert!(ok, "{out}");
    assert!(out.contains("rotated to v2"), "{out}");
    let w = wait_version(&api, "t", 2, WAIT).await;
    assert!(
        secret(&client, &ns, "t-v3").await.is_none(),
        "one request, one rotation"
    );
    assert!(
        w.status
            .unwrap()
            .versions
            .iter()
            .any(|v| v.version == 1 && format!("{:?}", v.state) == "Retiring")
    );

    // Revoke the retiring version now, ahead of its 1h grace.
    let (ok, out) = cli(&["revoke", "t", "--version", "1", "-n", &ns]);
    assert!(ok, "{out}");
    eventually(WAIT, "v1 revoked on request", || async {
        let mounted = secret(&client, &ns, "t").await?;
        (secret(&client, &ns, "t-v1").await.is_none() && data(&mounted, "previous-token").is_none())
            .then_some(())
    })
    .await;

    // Revoking the current version rotates first, so a valid token always exists.
    let (ok, out) = cli(&["revoke", "t", "--version", "2", "-n", &ns]);
    assert!(ok, "{out}");
    wait_version(&api, "t", 3, WAIT).await;
    eventually(WAIT, "v2 revoked after the rotation", || async {
        secret(&client, &ns, "t-v2").await.is_none().then_some(())
    })
    .await;

    let (ok, out) = cli(&["status", "t", "-n", &ns]);
    assert!(
        ok && out.contains("v3") && out.contains("Active") && out.contains("Revoked"),
        "{out}"
    );
    let (ok, out) = cli(&["status", "-n", &ns, "-o", "json"]);
    assert!(ok && out.contains("\"tokenVersion\": \"v3\""), "{out}");
    let (ok, out) = cli(&["revoke", "t", "--version", "1", "-n", &ns]);
    assert!(
        !ok && out.trim().lines().count() == 1 && out.contains("already revoked"),
        "{out}"
    );
    let (ok, out) = cli(&["rotate", "missing", "-n", &ns]);
    assert!(!ok && out.contains("not found"), "{out}");
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn cron_schedule_in_a_time_zone_rotates_at_the_next_fire_time() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "cron").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    // Every minute, in a zone with a half-hour offset from UTC.
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-cron", "rotation": { "schedule": "* * * * *", "timeZone": "Asia/Kolkata", "gracePeriod": "0s" } }),
    )
    .await;
    let w = wait_version(&api, "t", 1, WAIT).await;
    let next = w
        .status
        .unwrap()
        .next_rotation_time
        .expect("nextRotationTime");
    assert_eq!(next.0.as_second() % 60, 0, "a minute boundary: {next:?}");
    let w = wait_version(&api, "t", 2, Duration::from_secs(90)).await;
    let activated = w.status.unwrap().last_rotation_time.unwrap();
    assert!(
        activated.0 >= next.0,
        "rotated at {activated:?}, not before {next:?}"
    );
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn jitter_adds_a_stable_per_object_offset_to_the_schedule() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "jitter").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    for i in 0..6 {
        create(
            &api,
            &format!("t{i}"),
            json!({ "workspaceId": "ws-j", "rotation": { "every": "1h", "jitter": "30m" } }),
        )
        .await;
    }
    let mut offsets = Vec::new();
    for i in 0..6 {
        let w = wait_version(&api, &format!("t{i}"), 1, WAIT).await;
        let s = w.status.unwrap();
        let offset = s.next_rotation_time.unwrap().0.as_second()
            - s.last_rotation_time.unwrap().0.as_second()
            - 3600;
        assert!(
            (0..=1800).contains(&offset),
            "t{i}: offset {offset}s outside [0, 30m]"
        );
        offsets.push(offset);
    }
    offsets.sort();
    offsets.dedup();
    assert!(
        offsets.len() > 1,
        "objects spread over the jitter window: {offsets:?}"
    );
    // Stable: the same object plans the same next rotation on every pass.
    let before = api
        .get("t0")
        .await
        .unwrap()
        .status
        .unwrap()
        .next_rotation_time;
    api.patch(
        "t0",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "historyLimit": 5 } })),
    )
    .await
    .unwrap();
    eventually(WAIT, "t0 observed generation 2", || async {
        let s = api.get("t0").await.ok()?.status?;
        (s.observed_generation == Some(2)).then_some(())
    })
    .await;
    assert_eq!(
        api.get("t0")
            .await
            .unwrap()
            .status
            .unwrap()
            .next_rotation_time,
        before
    );
    dump(&client, &ns, Some(operator)).await;
}

#[tokio::test]
async fn rotate_l_rotates_exactly_the_selected_fleet_under_one_trace_id_with_its_reason() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "fleet").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    for i in 0..25 {
        let mut token = wst(
            &format!("t{i}"),
            json!({ "workspaceId": format!("ws-{i}") }),
        );
        let team = if i < 20 { "a" } else { "b" };
        token.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        api.create(&kube::api::PostParams::default(), &token)
            .await
            .unwrap();
    }
    for i in 0..25 {
        wait_version(&api, &format!("t{i}"), 1, WAIT).await;
    }

    let reason = "team change: alice left team a";
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["rotate", "-l", "team=a", "-n", &ns, "--reason", reason])
        .args(["--revoke-now", "--wait", "--timeout", "90"])
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .output()
        .expect("run tokenwarden rotate -l");
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    std::fs::write(artifacts_dir().join(format!("{ns}-fleet.txt")), &out).unwrap();
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace_id = out
        .lines()
        .find_map(|l| l.strip_prefix("rotating 20 WorkspaceTokens (trace id "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a progress header: {out}"))
        .to_string();
    assert_eq!(out.matches(" rotated to v2 (prefix ").count(), 20, "{out}");

    for i in 0..25 {
        let status = api.get(&format!("t{i}")).await.unwrap().status.unwrap();
        let state = |n: u32| {
            status
                .versions
                .iter()
                .find(|v| v.version == n)
                .map(|v| v.state)
        };
        if i < 20 {
            assert_eq!(status.current_version, Some(2), "t{i}");
            assert_eq!(
                state(1),
                Some(tokenwarden::api::VersionState::Revoked),
                "t{i}: --revoke-now"
            );
        } else {
            assert_eq!(status.current_version, Some(1), "t{i} is not in team a");
        }
    }
    let minted: Vec<_> = operator
        .audit_lines()
        .into_iter()
        .filter(|l| l["namespace"] == ns.as_str() && l["event"] == "minted")
        .filter(|l| l["token_version"] == "v2")
        .collect();
    assert_eq!(minted.len(), 20);
    for line in &minted {
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["reason"], reason, "{line}");
    }

    // A selector that picks nothing is an error, not a silent success.
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["rotate", "-l", "team=nobody", "-n", &ns])
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("matches -l team=nobody"));
    dump(&client, &ns, Some(operator)).await;
}

/// A pod template reading `S` one way: `how` is `volume`, `projected`, `env`, `envFrom` or
/// `subPath`.
fn pod_spec(secret: &str, how: &str) -> serde_json::Value {
    let container = |extra: serde_json::Value| {
        let mut c = json!({ "name": "app", "image": "tokenwarden.test/busybox:local" });
        support::platform::merge(&mut c, extra);
        c
    };
    let volume = |source: serde_json::Value| {
        let mut volume = json!({ "name": "token" });
        support::platform::merge(&mut volume, source);
        json!([volume])
    };
    match how {
        "volume" => json!({
            "containers": [container(json!({ "volumeMounts": [{ "name": "token", "mountPath": "/t" }] }))],
            "volumes": volume(json!({ "secret": { "secretName": secret } })),
        }),
        "projected" => json!({
            "containers": [container(json!({ "volumeMounts": [{ "name": "token", "mountPath": "/t" }] }))],
            "volumes": volume(json!({ "projected": { "sources": [{ "secret": { "name": secret } }] } })),
        }),
        "subPath" => json!({
            "containers": [container(json!({ "volumeMounts": [{ "name": "token", "mountPath": "/t/token", "subPath": "token" }] }))],
            "volumes": volume(json!({ "secret": { "secretName": secret } })),
        }),
        "env" => json!({
            "containers": [container(json!({ "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": secret, "key": "token" } } }] }))],
        }),
        "envFrom" => json!({
            "containers": [container(json!({ "envFrom": [{ "secretRef": { "name": secret } }] }))],
        }),
        other => panic!("no pod template reads a Secret through {other}"),
    }
}

/// A workload of `kind` named `name` whose pods read `secret` through `how`.
fn workload(kind: &str, name: &str, secret: &str, how: &str) -> serde_json::Value {
    let labels = json!({ "app": name });
    let template = json!({ "metadata": { "labels": labels }, "spec": pod_spec(secret, how) });
    let (api_version, spec) = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => (
            "apps/v1",
            json!({ "selector": { "matchLabels": labels }, "template": template }),
        ),
        "Job" => {
            let mut template = template;
            template["spec"]["restartPolicy"] = json!("Never");
            ("batch/v1", json!({ "template": template }))
        }
        "CronJob" => {
            let mut template = template;
            template["spec"]["restartPolicy"] = json!("Never");
            (
                "batch/v1",
                json!({ "schedule": "0 0 1 1 *", "jobTemplate": { "spec": { "template": template } } }),
            )
        }
        "Pod" => ("v1", pod_spec(secret, how)),
        other => panic!("no workload of kind {other}"),
    };
    json!({ "apiVersion": api_version, "kind": kind, "metadata": { "name": name }, "spec": spec })
}

/// `status.consumers` lists the namespace's workloads whose pod template reads `S`, through
/// each path and of each kind, with whether a cutover rolls them; a consumer that reads
/// through env, envFrom or subPath and is no restart target gets a `ConsumerNeedsRestart`
/// Warning at the cutover; a workload going away leaves the list.
#[tokio::test]
async fn consumers_of_every_kind_and_path_are_listed_and_those_a_cutover_misses_are_warned() {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "consumers").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let readers = [
        ("Deployment", "mounts", "volume"),
        ("Deployment", "restarted", "env"),
        ("StatefulSet", "projects", "projected"),
        ("DaemonSet", "env-reader", "env"),
        ("CronJob", "report", "envFrom"),
        ("Job", "copies", "subPath"),
        ("Pod", "bare", "env"),
    ];
    let objects = readers
        .iter()
        .map(|(kind, name, how)| workload(kind, name, "t", how))
        .chain([workload("Deployment", "elsewhere", "another-secret", "env")]);
    for object in objects {
        apply_object(&client, &ns, object).await;
    }
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-consumers",
                "rotation": { "gracePeriod": "0s" },
                "restartTargets": [{ "kind": "Deployment", "name": "restarted" }] }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let expected: Vec<(String, String, String, bool)> = readers
        .iter()
        .map(|(kind, name, how)| {
            (
                kind.to_string(),
                name.to_string(),
                how.to_string(),
                *name == "restarted",
            )
        })
        .collect();
    let listed = || async {
        let wst = api.get("t").await.ok()?;
        let consumers = wst.status?.consumers;
        Some(
            consumers
                .into_iter()
                .map(|c| (c.kind, c.name, c.via, c.restart_target))
                .collect::<Vec<_>>(),
        )
    };
    eventually(WAIT, "every consumer listed", || async {
        listed().await.filter(|l| *l == expected)
    })
    .await;

    request_rotation(&api, "t", "r1").await;
    wait_version(&api, "t", 2, WAIT).await;
    let mut warned = eventually(WAIT, "ConsumerNeedsRestart for the 4 it misses", || async {
        let messages = event_messages(&client, &ns, "ConsumerNeedsRestart").await;
        (messages.len() >= 4).then_some(messages)
    })
    .await;
    warned.sort();
    let named: Vec<&str> = warned
        .iter()
        .map(|m| m.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(
        named,
        [
            "CronJob/report",
            "DaemonSet/env-reader",
            "Job/copies",
            "Pod/bare"
        ],
        "{warned:#?}"
    );
    assert!(
        warned
            .iter()
            .all(|m| m.contains("version 2 is current now"))
    );

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    pods.delete("bare", &Default::default()).await.unwrap();
    eventually(WAIT, "the deleted Pod leaves the list", || async {
        let listed = listed().await?;
        (listed.len() == expected.len() - 1 && !listed.iter().any(|c| c.1 == "bare")).then_some(())
    })
    .await;
    assert_eq!(
        event_messages(&client, &ns, "ConsumerNeedsRestart")
            .await
            .len(),
        4,
        "once per cutover: the passes after it (the consumer change among them) repeat none"
    );
}

/// Creates `object` (any kind) in `ns` with a server-side apply.
async fn apply_object(client: &kube::Client, ns: &str, object: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    api.patch(
        &object.name_any(),
        &PatchParams::apply("tokenwarden-test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
}

/// `rotation.windows`: a scheduled rotation waits for the next open window, and
/// `nextRotationTime` says when that is; a manual rotation does not wait.
#[tokio::test]
async fn a_closed_window_delays_a_scheduled_rotation_but_not_a_manual_one() {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "windows").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    // Due every 2 s, but the only window opens each day for a minute, next in about 12 h.
    let opens = (chrono::Utc::now() + chrono::TimeDelta::hours(12))
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap();
    let schedule = format!("{} {} * * *", opens.minute(), opens.hour());
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-windows",
                "rotation": { "every": "2s", "gracePeriod": "0s",
                              "windows": [{ "schedule": schedule, "duration": "1m" }] } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let next = eventually(WAIT, "nextRotationTime at the window's opening", || async {
        let status = api.get("t").await.ok()?.status?;
        status.next_rotation_time.map(|t| t.0)
    })
    .await;
    let opens = opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(next.to_string(), opens, "the next window opens then");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = api.get("t").await.unwrap().status.unwrap();
    assert_eq!(
        status.current_version,
        Some(1),
        "3 periods due, none outside the window"
    );

    request_rotation(&api, "t", "now").await;
    wait_version(&api, "t", 2, WAIT).await;
}
