//! The caches issuer resolution reads: every TokenIssuer and ClusterTokenIssuer, and the
//! labels of namespaces (ClusterTokenIssuer's `namespaceSelector` and
//! `workspaceIdNamespaceLabel`). Filled by watches the controller runs.

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use super::resolve::{Candidate, Found, IssuerIdentity, IssuerProblem, ResolvedIssuer, resolve};
use crate::api::{ClusterTokenIssuer, IssuerKind, TokenIssuer, WorkspaceToken};

#[derive(Clone)]
pub struct IssuerCaches {
    pub namespaced: Store<TokenIssuer>,
    pub cluster: Store<ClusterTokenIssuer>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Where ClusterTokenIssuer admin Secrets are read.
    pub cluster_resource_namespace: String,
    /// This operator watches every namespace and keeps the ClusterTokenIssuers' status.
    pub owns_cluster_status: bool,
}

impl IssuerCaches {
    /// Whether every cache has its first full list: before that, an issuer missing from it
    /// may exist (resolving then would say IssuerNotFound, or RevokeImpossible, wrongly).
    pub fn is_ready(&self) -> bool {
        use futures::FutureExt;
        self.namespaced.wait_until_ready().now_or_never().is_some()
            && self.cluster.wait_until_ready().now_or_never().is_some()
            && self.namespaces.wait_until_ready().now_or_never().is_some()
    }

    /// The issuer `wst` mints at: None when it mints locally.
    pub fn for_token(&self, wst: &WorkspaceToken) -> Option<Result<ResolvedIssuer, IssuerProblem>> {
        if wst.spec.removed_issuer.is_some() {
            return Some(Err(inline_issuer_left()));
        }
        let reference = wst.spec.issuer_ref.as_ref()?;
        let namespace = wst.metadata.namespace.as_deref().unwrap_or_default();
        let (namespaced, cluster, ns);
        let found = match reference.kind {
            IssuerKind::TokenIssuer => {
                namespaced = self
                    .namespaced
                    .get(&ObjectRef::new(&reference.name).within(namespace));
                namespaced.as_deref().map(Found::Namespaced)
            }
            IssuerKind::ClusterTokenIssuer => {
                cluster = self.cluster.get(&ObjectRef::new(&reference.name));
                cluster.as_deref().map(Found::Cluster)
            }
        };
        ns = self.namespaces.get(&ObjectRef::new(namespace));
        let candidate = Candidate {
            namespace,
            workspace_id: &wst.spec.workspace_id,
            reference,
            found,
            namespace_labels: ns.as_ref().and_then(|n| n.metadata.labels.as_ref()),
            cluster_resource_namespace: &self.cluster_resource_namespace,
            owns_cluster_status: self.owns_cluster_status,
        };
        Some(resolve(&candidate))
    }

    /// The object `identity` names as it is now, if it is still that object (same uid): where
    /// the versions it minted are revoked. Whether it still allows the token's namespace or is
    /// Ready does not matter: a revocation goes where the token was minted, or nowhere.
    pub fn minted_by(&self, identity: &IssuerIdentity, namespace: &str) -> Option<ResolvedIssuer> {
        let (uid, http, admin_namespace, inventory) = match identity.kind {
            IssuerKind::TokenIssuer => {
                let found = self
                    .namespaced
                    .get(&ObjectRef::new(&identity.name).within(namespace))?;
                let admin_namespace = namespace.to_string();
                (
                    found.metadata.uid.clone(),
                    found.spec.http.clone(),
                    admin_namespace,
                    found.spec.inventory.clone(),
                )
            }
            IssuerKind::ClusterTokenIssuer => {
                let found = self.cluster.get(&ObjectRef::new(&identity.name))?;
                let admin_namespace = self.cluster_resource_namespace.clone();
                (
                    found.metadata.uid.clone(),
                    found.spec.http.clone(),
                    admin_namespace,
                    found.spec.inventory.clone(),
                )
            }
        };
        (uid.as_deref() == Some(identity.uid.as_str())).then(|| ResolvedIssuer {
            identity: identity.clone(),
            http,
            admin_namespace,
            revoke_unmanaged_after: inventory.and_then(|i| i.revoke_unmanaged_after),
        })
    }
}

/// A WorkspaceToken stored by an earlier release with an inline `spec.issuer`: it is not a
/// local token (minting one would hand consumers a token the platform never heard of), and
/// the inline issuer is not to be called. Nothing is minted until it names an issuer.
fn inline_issuer_left() -> IssuerProblem {
    IssuerProblem {
        reason: "IssuerNotFound",
        message: "spec.issuer (an inline issuer of an earlier release) is no longer read: put it \
                  in a TokenIssuer and name that in spec.issuerRef (README: moving an inline \
                  issuer); nothing is minted until then"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn empty_caches() -> IssuerCaches {
        IssuerCaches {
            namespaced: reflector::store().0,
            cluster: reflector::store().0,
            namespaces: reflector::store().0,
            cluster_resource_namespace: "tokenwarden-system".into(),
            owns_cluster_status: true,
        }
    }

    #[test]
    fn a_token_stored_with_an_inline_issuer_is_no_local_token() {
        let wst: WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "t", "namespace": "team-a" },
            "spec": { "workspaceId": "ws", "issuer": { "http": { "url": "http://p" } } }
        }))
        .unwrap();
        let problem = empty_caches()
            .for_token(&wst)
            .expect("not local")
            .unwrap_err();
        assert_eq!(problem.reason, "IssuerNotFound");
        assert!(
            problem.message.contains("moving an inline issuer"),
            "{}",
            problem.message
        );
    }
}
