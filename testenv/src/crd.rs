//! Installing a CustomResourceDefinition and waiting until the API server serves it.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

/// Applies `crd` (server-side, as `field_manager`) and waits up to 30 s for `Established`.
/// Panics otherwise: a test, the bench or the demo cannot go on without it.
pub async fn install(client: &kube::Client, crd: &CustomResourceDefinition, field_manager: &str) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.metadata.name.clone().expect("a named CRD");
    crds.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("install the CRD {name}: {e}"));
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 30 s"))
        .unwrap_or_else(|e| panic!("watch the CRD {name}: {e}"));
}

/// Waits (up to 90 s) until kube-controller-manager's garbage collector tracks the kind of
/// `owner`, a valid object of a custom resource installed after the controller manager
/// started. Until its discovery resync (every 30 s) the collector does not watch that kind,
/// and reads each owner of a dependent it meets with a GET of its own: requests a test or
/// the bench counting the API server's GETs would take for an operator's.
///
/// The probe: `owner` with a ConfigMap depending on it, deleted in the foreground. Only a
/// collector that watches the kind sees the owner waiting on its dependents, deletes the
/// ConfigMap and lets the owner go. Call it before any controller of the kind runs (one
/// would take the probe for its own, and finalize it).
pub async fn await_garbage_collector_tracks(
    client: &kube::Client,
    resource: &ApiResource,
    owner: DynamicObject,
) {
    let ns = owner
        .metadata
        .namespace
        .clone()
        .expect("a namespaced owner");
    let owners: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, resource);
    let name = owner.metadata.name.clone().expect("a named owner");
    let created = owners
        .create(&PostParams::default(), &owner)
        .await
        .unwrap_or_else(|e| panic!("create the garbage collector's probe {name}: {e}"));
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-dependent")),
            owner_references: Some(vec![OwnerReference {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
                name: name.clone(),
                uid: created.metadata.uid.clone().expect("a uid"),
                block_owner_deletion: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap_or_else(|e| panic!("create the probe's dependent: {e}"));
    owners
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap_or_else(|e| panic!("delete the probe {name}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match owners.get_metadata_opt(&name).await {
            Ok(None) => return,
            Ok(Some(_)) => {}
            // A failed read says nothing about the probe: read again.
            Err(e) => eprintln!("testenv: read the garbage collector's probe {name}: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the garbage collector did not track {} within 90 s",
            resource.kind
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
