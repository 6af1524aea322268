//! Bad input is refused by the API server itself, with a message naming the field, and the
//! checked-in CRD is exactly what `tokenwarden crd` prints.

mod support;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;
use tokenwarden::api::WorkspaceToken;

/// (case, spec, a field name the error must mention)
fn invalid_specs() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("missing workspaceId", json!({}), "workspaceId"),
        (
            "empty workspaceId",
            json!({ "workspaceId": "" }),
            "workspaceId",
        ),
        (
            "workspaceId with a slash",
            json!({ "workspaceId": "a/b" }),
            "workspaceId",
        ),
        (
            "bytes below 16",
            json!({ "workspaceId": "w", "token": { "bytes": 15 } }),
            "token.bytes",
        ),
        (
            "bytes above 64",
            json!({ "workspaceId": "w", "token": { "bytes": 65 } }),
            "token.bytes",
        ),
        (
            "unknown encoding",
            json!({ "workspaceId": "w", "token": { "encoding": "base32" } }),
            "token.encoding",
        ),
        (
            "prefix with upper case",
            json!({ "workspaceId": "w", "token": { "prefix": "WST_" } }),
            "token.prefix",
        ),
        (
            "prefix too long",
            json!({ "workspaceId": "w", "token": { "prefix": "abcdefghijklmnopq" } }),
            "token.prefix",
        ),
        (
            "every and schedule",
            json!({ "workspaceId": "w", "rotation": { "every": "1h", "schedule": "0 3 * * *" } }),
            "rotation.schedule",
        ),
        (
            "timeZone without schedule",
            json!({ "workspaceId": "w", "rotation": { "every": "1h", "timeZone": "UTC" } }),
            "rotation.timeZone",
        ),
        (
            "timeZone with an empty windows list",
            json!({ "workspaceId": "w", "rotation": { "every": "1h", "timeZone": "UTC", "windows": [] } }),
            "rotation.timeZone",
        ),
        (
            "a window without a unit in its duration",
            json!({ "workspaceId": "w", "rotation": { "every": "1h",
                "windows": [{ "schedule": "0 2 * * *", "duration": "4" }] } }),
            "rotation.windows[0].duration",
        ),
        (
            "a restart target name that is no object name",
            json!({ "workspaceId": "w", "restartTargets": [{ "kind": "Deployment", "name": "a,x=1" }] }),
            "restartTargets[0].name",
        ),
        (
            "every without unit",
            json!({ "workspaceId": "w", "rotation": { "every": "720" } }),
            "rotation.every",
        ),
        (
            "every with a week unit",
            json!({ "workspaceId": "w", "rotation": { "every": "1w" } }),
            "rotation.every",
        ),
        (
            "fractional jitter",
            json!({ "workspaceId": "w", "rotation": { "every": "1h", "jitter": "1.5m" } }),
            "rotation.jitter",
        ),
        (
            "negative gracePeriod",
            json!({ "workspaceId": "w", "rotation": { "gracePeriod": "-1h" } }),
            "rotation.gracePeriod",
        ),
        (
            "secretName not DNS-1123",
            json!({ "workspaceId": "w", "secretName": "Agent_Token" }),
            "secretName",
        ),
        (
            "unknown restart kind",
            json!({ "workspaceId": "w", "restartTargets": [{ "kind": "Pod", "name": "x" }] }),
            "restartTargets[0].kind",
        ),
        (
            "historyLimit above 100",
            json!({ "workspaceId": "w", "historyLimit": 101 }),
            "historyLimit",
        ),
        (
            "unknown deletionPolicy",
            json!({ "workspaceId": "w", "deletionPolicy": "Orphan" }),
            "deletionPolicy",
        ),
        (
            "the removed inline issuer",
            json!({ "workspaceId": "w", "issuer": { "http": { "url": "https://x", "adminTokenSecretRef": { "name": "a", "key": "b" } } } }),
            "issuer",
        ),
        (
            "issuerRef of an unknown kind",
            json!({ "workspaceId": "w", "issuerRef": { "kind": "Issuer", "name": "p" } }),
            "issuerRef.kind",
        ),
        (
            "issuerRef name not DNS-1123",
            json!({ "workspaceId": "w", "issuerRef": { "name": "Platform_1" } }),
            "issuerRef.name",
        ),
        (
            "template label owned by tokenwarden",
            json!({ "workspaceId": "w", "secretTemplate": { "labels": { "tokenwarden.dev/version": "9" } } }),
            "secretTemplate.labels",
        ),
        (
            "environment with spaces",
            json!({ "workspaceId": "w", "environment": "prod us" }),
            "environment",
        ),
        (
            "idleFor on a local token (no platform knows its use)",
            json!({ "workspaceId": "w", "rotation": { "holdUntil": { "idleFor": "10m" } } }),
            "rotation.holdUntil.idleFor",
        ),
        (
            "idleFor with revokeAfterUse (each lists with the other's token)",
            json!({ "workspaceId": "w", "issuerRef": { "name": "p" },
                    "rotation": { "revokeAfterUse": true, "holdUntil": { "idleFor": "10m" } } }),
            "rotation.holdUntil.idleFor",
        ),
        (
            "idleFor not a duration",
            json!({ "workspaceId": "w", "issuerRef": { "name": "p" },
                    "rotation": { "holdUntil": { "idleFor": "ten minutes" } } }),
            "rotation.holdUntil.idleFor",
        ),
    ]
}

#[tokio::test]
async fn api_server_refuses_invalid_manifests_naming_the_field() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "invalid").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<WorkspaceToken>(&()),
    );
    let cases = invalid_specs();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (i, (case, spec, field)) in cases.into_iter().enumerate() {
        let manifest: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "WorkspaceToken",
            "metadata": { "name": format!("invalid-{i}") },
            "spec": spec,
        }))
        .unwrap();
        match dynamic.create(&PostParams::default(), &manifest).await {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(kube::Error::Api(s)) if s.code == 422 => {
                if !s.message.contains(&format!("spec.{field}")) {
                    failures.push(format!(
                        "{case}: message does not name spec.{field}: {}",
                        s.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{case}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn workspace_id_and_secret_name_are_immutable() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "immutable").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-1", "secretName": "s" }),
    )
    .await;
    for (patch, field) in [
        (
            json!({ "spec": { "workspaceId": "ws-2" } }),
            "spec.workspaceId",
        ),
        (
            json!({ "spec": { "secretName": "other" } }),
            "spec.secretName",
        ),
        (json!({ "spec": { "secretName": null } }), "spec.secretName"),
    ] {
        match api
            .patch("t", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(
                    s.message.contains(field) && s.message.contains("immutable"),
                    "{}",
                    s.message
                );
            }
            other => panic!("{patch} was not refused: {other:?}"),
        }
    }
    // A valid change is still accepted.
    api.patch(
        "t",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "historyLimit": 3 } })),
    )
    .await
    .expect("a valid update");
}

#[test]
fn checked_in_crd_is_exactly_what_tokenwarden_crd_prints() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg("crd")
        .output()
        .expect("run tokenwarden crd");
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    let checked_in: Vec<String> = tokenwarden::cli::CRD_FILES
        .iter()
        .map(|file| {
            let path = format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
        })
        .collect();
    assert!(
        printed == checked_in.join("---\n"),
        "crds/ drifted from `tokenwarden crd`: regenerate each file from `tokenwarden::cli::crds()`"
    );
}

/// The API server accepts the CRDs without a warning (it warned about `format: uint32`,
/// which OpenAPI validation does not know): `kubectl apply` prints nothing on stderr.
#[tokio::test]
async fn the_crd_installs_without_a_warning() {
    let cp = control_plane().await;
    let output = cp
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/"))
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "warnings from the API server"
    );
}

/// (case, TokenIssuer spec, a field name the error must mention)
fn invalid_issuer_specs() -> Vec<(&'static str, Value, &'static str)> {
    let http = |extra: Value| {
        let mut http = json!({ "url": "https://platform.example", "adminTokenSecretRef": { "name": "a", "key": "token" } });
        for (k, v) in extra.as_object().unwrap() {
            http[k] = v.clone();
        }
        json!({ "http": http })
    };
    vec![
        (
            "http:// without allowInsecureHttp",
            http(json!({ "url": "http://platform.example" })),
            "http.url",
        ),
        (
            "http:// with allowInsecureHttp false",
            http(json!({ "url": "http://p", "allowInsecureHttp": false })),
            "http.url",
        ),
        (
            "not a URL",
            http(json!({ "url": "ftp://platform.example" })),
            "http.url",
        ),
        (
            "credentials in the URL",
            http(json!({ "url": "https://user:pw@platform.example" })),
            "http.url",
        ),
        (
            "timeout 0",
            http(json!({ "timeoutSeconds": 0 })),
            "http.timeoutSeconds",
        ),
        (
            "caBundle not PEM",
            http(json!({ "caBundle": "bm90IGEgY2VydGlmaWNhdGU=" })),
            "http.caBundle",
        ),
        (
            "caBundle not base64",
            http(json!({ "caBundle": "not base64!" })),
            "http.caBundle",
        ),
        (
            "admin Secret name not DNS-1123",
            http(json!({ "adminTokenSecretRef": { "name": "Admin_1", "key": "token" } })),
            "http.adminTokenSecretRef.name",
        ),
        (
            "workspace id with a slash",
            json!({ "http": http(json!({}))["http"], "workspaceIds": ["a/b"] }),
            "workspaceIds",
        ),
    ]
}

/// The issuer resources refuse what would send a credential in plaintext or somewhere
/// unparseable, naming the field; `allowInsecureHttp: true` admits http:// on purpose.
#[tokio::test]
async fn api_server_refuses_invalid_issuers_naming_the_field() {
    use tokenwarden::api::{ClusterTokenIssuer, TokenIssuer};
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "invalid-issuer").await;
    let namespaced: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<TokenIssuer>(&()),
    );
    let cluster: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<ClusterTokenIssuer>(&()),
    );
    let mut failures = Vec::new();
    for (i, (case, spec, field)) in invalid_issuer_specs().into_iter().enumerate() {
        for (kind, api) in [
            ("TokenIssuer", &namespaced),
            ("ClusterTokenIssuer", &cluster),
        ] {
            let manifest: kube::api::DynamicObject = serde_json::from_value(json!({
                "apiVersion": "tokenwarden.dev/v1alpha1", "kind": kind,
                "metadata": { "name": format!("invalid-{i}") }, "spec": spec,
            }))
            .unwrap();
            match api.create(&PostParams::default(), &manifest).await {
                Ok(_) => failures.push(format!("{kind} {case}: accepted")),
                Err(kube::Error::Api(s)) if s.code == 422 => {
                    if !s.message.contains(&format!("spec.{field}")) {
                        failures.push(format!(
                            "{kind} {case}: does not name spec.{field}: {}",
                            s.message
                        ));
                    }
                }
                Err(e) => failures.push(format!("{kind} {case}: unexpected error {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let insecure: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenIssuer",
        "metadata": { "name": "on-purpose" },
        "spec": { "http": { "url": "http://platform.example", "allowInsecureHttp": true,
                            "adminTokenSecretRef": { "name": "a", "key": "token" } } },
    }))
    .unwrap();
    namespaced
        .create(&PostParams::default(), &insecure)
        .await
        .expect("http:// with allowInsecureHttp: true is accepted");
}

#[tokio::test]
async fn a_time_zone_for_windows_alone_is_accepted() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "windows").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let spec = json!({ "workspaceId": "w", "rotation": { "every": "720h",
        "timeZone": "Europe/Berlin",
        "windows": [{ "schedule": "0 2 * * 1-5", "duration": "4h" }] } });
    api.create(&PostParams::default(), &support::wst("t", spec))
        .await
        .expect("every + windows in a time zone is a valid spec");
}
