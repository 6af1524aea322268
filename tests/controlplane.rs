//! The local control plane is a real one: the API server enforces OpenAPI schemas and CEL
//! rules, RBAC denies an identity without grants, and the garbage collector follows
//! ownerReferences.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.testenv.tokenwarden.dev" },
        "spec": {
            "group": "testenv.tokenwarden.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": { "type": "integer", "minimum": 1, "maximum": 10 },
                            "minReplicas": { "type": "integer" },
                            "maxReplicas": { "type": "integer" }
                        },
                        "x-kubernetes-validations": [{
                            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                            "message": "minReplicas must not exceed maxReplicas",
                            "fieldPath": ".minReplicas"
                        }]
                    }}
                }}
            }]
        }
    }))
    .expect("widget CRD")
}

async fn install_widget_crd(client: &kube::Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    match crds.create(&PostParams::default(), &widget_crd()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("install widget CRD: {e}"),
    }
    let established = await_condition(
        crds,
        "widgets.testenv.tokenwarden.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in 30 s")
        .expect("watch CRD");
}

fn widgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("testenv.tokenwarden.dev", "v1", "Widget");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "testenv.tokenwarden.dev/v1",
        "kind": "Widget",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("widget object")
}

async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> String {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => panic!("the API server accepted an invalid object: {:?}", obj.data),
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "an invalid object is Unprocessable: {status:?}"
            );
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn api_server_enforces_crd_schema_and_cel_rules_naming_the_field() {
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    install_widget_crd(&client).await;
    let ns = tokenwarden_testenv::namespace(&client, "schema").await;
    let api = widgets(&client, &ns);

    let too_big = rejection(&api, &widget("too-big", json!({ "size": 11 }))).await;
    assert!(too_big.contains("spec.size"), "{too_big}");

    let missing = rejection(&api, &widget("missing", json!({}))).await;
    assert!(missing.contains("spec.size"), "{missing}");

    let cel = rejection(
        &api,
        &widget(
            "inverted",
            json!({ "size": 1, "minReplicas": 3, "maxReplicas": 2 }),
        ),
    )
    .await;
    assert!(
        cel.contains("spec.minReplicas") && cel.contains("minReplicas must not exceed maxReplicas"),
        "{cel}"
    );

    let valid = widget(
        "valid",
        json!({ "size": 3, "minReplicas": 1, "maxReplicas": 2 }),
    );
    api.create(&PostParams::default(), &valid)
        .await
        .expect("a valid object is accepted");
}

#[tokio::test]
async fn garbage_collector_deletes_owned_objects_with_their_owner() {
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "gc").await;
    let owners = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    let owner = owners
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap(),
        )
        .await
        .expect("create owner");
    let owned: Secret = serde_json::from_value(json!({
        "metadata": { "name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.expect("owner uid"), "controller": true
        }]},
        "stringData": { "key": "value" }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .expect("create owned");

    owners
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    let gone = await_condition(secrets, "owned", conditions::is_deleted(""));
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("the garbage collector deletes the owned Secret within 60 s")
        .expect("watch owned Secret");
}

#[tokio::test]
async fn unprivileged_identity_is_forbidden_until_rbac_grants_it() {
    let cp = tokenwarden_testenv::shared();
    let admin = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&admin, "rbac").await;
    let as_user = Api::<Secret>::namespaced(cp.unprivileged_client().await, &ns);

    match as_user.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected Forbidden, got {other:?}"),
    }

    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "read-secrets" },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["list"] }]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "read-secrets" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": tokenwarden_testenv::UNPRIVILEGED_USER }]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    // RBAC caches refresh quickly but not instantly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match as_user.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("still denied after the grant: {e}"),
        }
    }
}

#[test]
fn kubectl_from_the_same_build_talks_to_the_control_plane() {
    let cp = tokenwarden_testenv::shared();
    let output = cp
        .kubectl()
        .args(["get", "--raw", "/version"])
        .output()
        .expect("run kubectl");
    assert!(output.status.success(), "{output:?}");
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).expect("version JSON");
    assert!(
        version["gitVersion"]
            .as_str()
            .unwrap_or("")
            .starts_with("v1."),
        "{version}"
    );
}
