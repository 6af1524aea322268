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
        let (uid, http, admin_namespace) = match identity.kind {
            IssuerKind::TokenIssuer => {
                let found = self
                    .namespaced
                    .get(&ObjectRef::new(&identity.name).within(namespace))?;
                let admin_namespace = namespace.to_string();
                (
                    found.metadata.uid.clone(),
                    found.spec.http.clone(),
                    admin_namespace,
                )
            }
            IssuerKind::ClusterTokenIssuer => {
                let found = self.cluster.get(&ObjectRef::new(&identity.name))?;
                let admin_namespace = self.cluster_resource_namespace.clone();
                (
                    found.metadata.uid.clone(),
                    found.spec.http.clone(),
                    admin_namespace,
                )
            }
        };
        (uid.as_deref() == Some(identity.uid.as_str())).then(|| ResolvedIssuer {
            identity: identity.clone(),
            http,
            admin_namespace,
        })
    }
}
