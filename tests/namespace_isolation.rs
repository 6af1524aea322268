//! A WorkspaceToken reaches nothing outside its own namespace: the TokenIssuer it names and
//! the Secrets it writes are always in the namespace it lives in, whatever its spec says.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;

const WAIT: Duration = Duration::from_secs(45);

#[tokio::test]
async fn a_token_issuer_in_another_namespace_is_never_used() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let holder = tokenwarden_testenv::namespace(&client, "admin-holder").await;
    let tenant = tokenwarden_testenv::namespace(&client, "admin-tenant").await;
    let platform = TestPlatform::start().await;
    platform.create_workspace("ws-iso").await;
    // The issuer and its admin token exist only in the other namespace.
    platform
        .admin_secret(&client, &holder, &platform.admin.clone())
        .await;

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &tenant);
    // A `namespace` in the reference is no field of the API: the API server prunes it.
    let spec = platform.spec("ws-iso", json!({ "issuerRef": { "namespace": holder } }));
    let created = create(&api, "t", spec).await;
    let stored = serde_json::to_value(&created.spec).expect("spec as JSON");
    assert_eq!(
        stored["issuerRef"],
        json!({ "kind": "TokenIssuer", "name": "platform" }),
        "the reference has no namespace"
    );
    let (ready, _, message) = eventually(WAIT, "IssuerNotFound", || async {
        condition(&api, "t", "Ready")
            .await
            .filter(|(_, reason, _)| reason == "IssuerNotFound")
    })
    .await;
    assert_eq!(ready, "False");
    assert!(
        message.contains(&format!("in namespace {tenant}")),
        "{message}"
    );
    assert!(platform.live("ws-iso").await.is_empty(), "nothing minted");

    // The same issuer in its own namespace is all it takes.
    platform
        .admin_secret(&client, &tenant, &platform.admin.clone())
        .await;
    wait_version(&api, "t", 1, WAIT).await;
    assert_eq!(platform.live("ws-iso").await.len(), 1);
    dump(&client, &tenant, Some(operator)).await;
}

#[tokio::test]
async fn a_secret_name_never_reaches_a_secret_in_another_namespace() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let other = tokenwarden_testenv::namespace(&client, "secret-other").await;
    let tenant = tokenwarden_testenv::namespace(&client, "secret-tenant").await;
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": { "name": "shared-creds" },
        "stringData": { "token": "belongs-to-someone-else" }
    }))
    .expect("Secret");
    let others: Api<Secret> = Api::namespaced(client.clone(), &other);
    let foreign = others
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret");

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &tenant);
    // A path-like name is refused by the schema, naming the field.
    let refused = api
        .create(
            &PostParams::default(),
            &wst(
                "path",
                json!({ "workspaceId": "ws", "secretName": format!("{other}/shared-creds") }),
            ),
        )
        .await
        .expect_err("a secretName with a namespace is refused");
    assert!(refused.to_string().contains("secretName"), "{refused}");

    // The same name as the foreign Secret: written in the tenant's own namespace.
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws", "secretName": "shared-creds" }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let tenants: Api<Secret> = Api::namespaced(client.clone(), &tenant);
    for name in ["shared-creds", "shared-creds-v1"] {
        let secret = tenants.get(name).await.expect("the tenant's Secret");
        assert_eq!(
            secret.labels()["app.kubernetes.io/managed-by"],
            "tokenwarden"
        );
    }
    let after = others.get("shared-creds").await.expect("foreign Secret");
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "untouched"
    );
    assert_eq!(after.data, foreign.data);
    assert!(
        others
            .get_opt("shared-creds-v1")
            .await
            .expect("get")
            .is_none()
    );
    dump(&client, &tenant, Some(operator)).await;
}
