//! The issuers' own controller: keeps each TokenIssuer's and ClusterTokenIssuer's `Ready`
//! condition true to what a WorkspaceToken relies on: its URL is allowed, its caBundle parses,
//! its admin Secret exists and holds the key. A WorkspaceToken mints only at a Ready issuer.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::{ClusterTokenIssuer, HttpIssuerSpec, IssuerStatus, TokenIssuer};
use crate::contract::{FIELD_MANAGER, READY};
use crate::issuer::client::spec_problem;

/// How often a Ready issuer is checked again (its admin Secret may go), and a not-Ready one.
const RECHECK_READY: Duration = Duration::from_secs(300);
const RECHECK_NOT_READY: Duration = Duration::from_secs(10);

/// What the two issuer kinds share.
pub trait Issuer:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    fn http(&self) -> &HttpIssuerSpec;
    fn status(&self) -> Option<&IssuerStatus>;
    /// Where its admin Secret is read.
    fn admin_namespace(&self, cluster_resource_namespace: &str) -> String;
    /// The API its status is written through.
    fn api(&self, client: Client) -> Api<Self>;
}

impl Issuer for TokenIssuer {
    fn http(&self) -> &HttpIssuerSpec {
        &self.spec.http
    }
    fn status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn admin_namespace(&self, _: &str) -> String {
        self.namespace().unwrap_or_default()
    }
    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl Issuer for ClusterTokenIssuer {
    fn http(&self) -> &HttpIssuerSpec {
        &self.spec.http
    }
    fn status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn admin_namespace(&self, cluster_resource_namespace: &str) -> String {
        cluster_resource_namespace.to_string()
    }
    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
}

/// What was found of an issuer's admin Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminSecret {
    Missing,
    NoKey,
    Present,
}

/// Whether an issuer is Ready: (reason, message) of its condition, Ok when it is.
pub fn readiness(
    http: &HttpIssuerSpec,
    admin_namespace: &str,
    admin: AdminSecret,
) -> Result<(&'static str, String), (&'static str, String)> {
    if let Some((reason, e)) = spec_problem(http) {
        return Err((reason, e.to_string()));
    }
    let secret = &http.admin_token_secret_ref;
    match admin {
        AdminSecret::Missing => Err((
            "AdminSecretMissing",
            format!("Secret {admin_namespace}/{} not found", secret.name),
        )),
        AdminSecret::NoKey => Err((
            "AdminSecretMissing",
            format!(
                "Secret {admin_namespace}/{} has no non-empty key {:?}",
                secret.name, secret.key
            ),
        )),
        AdminSecret::Present => Ok((
            "Ready",
            format!("the admin Secret resolves and {} may be called", http.url),
        )),
    }
}

struct Context {
    client: Client,
    cluster_resource_namespace: String,
}

/// Runs the controller of TokenIssuers (of `namespace`, None: all) and, when it watches every
/// namespace, of ClusterTokenIssuers, until `shutdown`. An operator of one namespace leaves
/// ClusterTokenIssuer status alone (see `issuer::resolve::Candidate::owns_cluster_status`).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    cluster_resource_namespace: String,
    shutdown: impl future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        cluster_resource_namespace,
    });
    let namespaced: Api<TokenIssuer> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let one = Controller::new(namespaced, watcher::Config::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::<TokenIssuer>, error_policy, ctx.clone())
        .for_each(|_| future::ready(()));
    if namespace.is_some() {
        one.await;
        return;
    }
    let all = Controller::new(
        Api::<ClusterTokenIssuer>::all(client),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile::<ClusterTokenIssuer>, error_policy, ctx)
    .for_each(|_| future::ready(()));
    future::join(one, all).await;
}

async fn reconcile<I: Issuer>(issuer: Arc<I>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let admin_namespace = issuer.admin_namespace(&ctx.cluster_resource_namespace);
    let admin = admin_secret(&ctx.client, &admin_namespace, issuer.http()).await?;
    let verdict = readiness(issuer.http(), &admin_namespace, admin);
    let ready = verdict.is_ok();
    let (reason, message) = verdict.unwrap_or_else(|e| e);
    let generation = issuer.meta().generation;
    let previous = (issuer.status().map(|s| s.conditions.as_slice()))
        .and_then(|c| c.iter().find(|c| c.type_ == READY));
    let status = if ready { "True" } else { "False" };
    let unchanged = previous.is_some_and(|p| {
        p.status == status
            && p.reason == reason
            && p.message == message
            && p.observed_generation == generation
    });
    if !unchanged {
        let since = previous.filter(|p| p.status == status).map_or_else(
            || crate::time::to_time(crate::time::now()),
            |p| p.last_transition_time.clone(),
        );
        let condition = Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        };
        write_status(&ctx.client, issuer.as_ref(), generation, condition).await?;
    }
    Ok(Action::requeue(if ready {
        RECHECK_READY
    } else {
        RECHECK_NOT_READY
    }))
}

async fn admin_secret(
    client: &Client,
    namespace: &str,
    http: &HttpIssuerSpec,
) -> Result<AdminSecret, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let reference = &http.admin_token_secret_ref;
    Ok(match secrets.get_opt(&reference.name).await? {
        None => AdminSecret::Missing,
        Some(secret) => match crate::secrets::take_string(secret, &reference.key) {
            Some(value) if !value.trim().is_empty() => AdminSecret::Present,
            _ => AdminSecret::NoKey,
        },
    })
}

async fn write_status<I: Issuer>(
    client: &Client,
    issuer: &I,
    generation: Option<i64>,
    condition: Condition,
) -> Result<(), kube::Error> {
    let api = issuer.api(client.clone());
    let patch =
        json!({ "status": { "observedGeneration": generation, "conditions": [condition] } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&issuer.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn error_policy<I: Issuer>(_: Arc<I>, error: &kube::Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "issuer check failed; retrying");
    Action::requeue(RECHECK_NOT_READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str, insecure: bool, ca_bundle: Option<&str>) -> HttpIssuerSpec {
        serde_json::from_value(json!({
            "url": url,
            "allowInsecureHttp": insecure,
            "caBundle": ca_bundle,
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" }
        }))
        .unwrap()
    }

    #[test]
    fn an_issuer_is_ready_when_its_url_is_allowed_and_its_admin_secret_resolves() {
        let ready = readiness(&http("https://p", false, None), "ns", AdminSecret::Present);
        assert_eq!(ready.map(|r| r.0), Ok("Ready"));
        let insecure = readiness(&http("http://p", true, None), "ns", AdminSecret::Present);
        assert!(
            insecure.is_ok(),
            "http:// is allowed with allowInsecureHttp"
        );
    }

    #[test]
    fn an_issuer_is_not_ready_for_each_thing_a_token_would_trip_on() {
        let plaintext = readiness(&http("http://p", false, None), "ns", AdminSecret::Present);
        assert_eq!(plaintext.unwrap_err().0, "InsecureUrl");
        let bad_bundle = readiness(
            &http("https://p", false, Some("bm90IGEgcGVt")),
            "ns",
            AdminSecret::Present,
        );
        assert_eq!(bad_bundle.unwrap_err().0, "InvalidCaBundle");
        let missing = readiness(&http("https://p", false, None), "ns", AdminSecret::Missing);
        assert_eq!(
            missing.unwrap_err(),
            (
                "AdminSecretMissing",
                "Secret ns/platform-admin not found".to_string()
            )
        );
        let no_key = readiness(&http("https://p", false, None), "ns", AdminSecret::NoKey);
        assert_eq!(no_key.unwrap_err().0, "AdminSecretMissing");
    }
}
