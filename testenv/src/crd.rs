//! Installing a CustomResourceDefinition and waiting until the API server serves it.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
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
