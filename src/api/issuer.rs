//! The issuer resources (`tokenwarden.dev/v1alpha1`): `TokenIssuer`, usable by the
//! WorkspaceTokens of its own namespace, and `ClusterTokenIssuer`, usable by those of the
//! namespaces it selects. They hold the platform's address and the admin credential, so that
//! whoever may write a WorkspaceToken only names a platform, never chooses one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schedule::DURATION_PATTERN;

/// A platform token API that the WorkspaceTokens of this namespace may mint at.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tokenwarden.dev",
    version = "v1alpha1",
    kind = "TokenIssuer",
    namespaced,
    status = "IssuerStatus",
    category = "tokenwarden",
    doc = "A platform token API that the WorkspaceTokens of its namespace may mint at.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.http.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TokenIssuerSpec {
    pub http: HttpIssuerSpec,
    /// The workspaces whose tokens may be minted here; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub workspace_ids: Option<Vec<WorkspaceId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventorySpec>,
}

/// A platform token API for the WorkspaceTokens of every namespace it selects. Its admin
/// Secret is read from the operator's `--cluster-resource-namespace`, never a tenant's.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tokenwarden.dev",
    version = "v1alpha1",
    kind = "ClusterTokenIssuer",
    status = "IssuerStatus",
    category = "tokenwarden",
    doc = "A platform token API for the WorkspaceTokens of the namespaces it selects.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.http.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTokenIssuerSpec {
    pub http: HttpIssuerSpec,
    /// The workspaces whose tokens may be minted here; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub workspace_ids: Option<Vec<WorkspaceId>>,
    /// The namespaces whose WorkspaceTokens may use it; absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// A label of the namespace that a WorkspaceToken's `workspaceId` must equal: one
    /// namespace, one workspace, whatever its tenants write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 317),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        )
    )]
    pub workspace_id_namespace_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventorySpec>,
}

/// A platform workspace id, as `WorkspaceToken.spec.workspaceId` spells it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(transparent)]
pub struct WorkspaceId(
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub String,
);

/// The platform token API (seed 001).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.url.startsWith('https://') || (has(self.allowInsecureHttp) && self.allowInsecureHttp && self.url.startsWith('http://'))",
        "message": "url must be https:// (http:// only with allowInsecureHttp: true: bearer tokens in plaintext)",
        "fieldPath": ".url"
    }
]))]
pub struct HttpIssuerSpec {
    /// Base URL of the platform, e.g. https://platform.example.com
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
    )]
    pub url: String,
    /// Allow an `http://` URL: tokens then cross the network in plaintext.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The Secret holding the platform admin token: in the TokenIssuer's namespace, or for a
    /// ClusterTokenIssuer in the operator's `--cluster-resource-namespace`.
    pub admin_token_secret_ref: SecretKeyRef,
    /// Extra roots (PEM certificates, base64) for the platform's certificate, besides the
    /// system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 262144),
        extend("format" = "byte"),
        extend("x-kubernetes-validations" = [{
            "rule": "string(self).contains('-----BEGIN CERTIFICATE-----')",
            "message": "caBundle must be base64 of PEM certificates (-----BEGIN CERTIFICATE-----)"
        }])
    )]
    pub ca_bundle: Option<String>,
    /// Per-request timeout.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 300), extend("format" = "int32"))]
    pub timeout_seconds: u32,
}

pub(crate) fn default_timeout_seconds() -> u32 {
    45
}

/// A key of a Secret in a namespace the issuer decides (never a WorkspaceToken's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// The tokens of the platform that no WorkspaceToken holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventorySpec {
    /// Revoke live tokens no WorkspaceToken holds once this old; absent: report only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub revoke_unmanaged_after: Option<String>,
}

/// The issuer as the operator last checked it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the admin Secret resolves, the URL is allowed, the caBundle parses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Which issuer resource a WorkspaceToken names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IssuerKind {
    #[default]
    TokenIssuer,
    ClusterTokenIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::TokenIssuer => "TokenIssuer",
            IssuerKind::ClusterTokenIssuer => "ClusterTokenIssuer",
        }
    }

    pub fn parse(value: &str) -> Option<IssuerKind> {
        match value {
            "TokenIssuer" => Some(IssuerKind::TokenIssuer),
            "ClusterTokenIssuer" => Some(IssuerKind::ClusterTokenIssuer),
            _ => None,
        }
    }
}

/// The issuer object that minted a version, in the version's status (only the operator
/// writes status) and on its `S-vN`: its revocation goes to that object's URL of the moment,
/// and to nothing once the object is gone (a new object of the same name has another uid).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerIdentity {
    pub kind: IssuerKind,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for IssuerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// `spec.issuerRef`: the issuer a WorkspaceToken mints at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// TokenIssuer (default: of the WorkspaceToken's namespace) or ClusterTokenIssuer.
    #[serde(default)]
    pub kind: IssuerKind,
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn issuer_crds_are_named_as_the_contract_says() {
        let namespaced = TokenIssuer::crd();
        assert_eq!(
            namespaced.metadata.name.as_deref(),
            Some("tokenissuers.tokenwarden.dev")
        );
        assert_eq!(namespaced.spec.scope, "Namespaced");
        let cluster = ClusterTokenIssuer::crd();
        assert_eq!(
            cluster.metadata.name.as_deref(),
            Some("clustertokenissuers.tokenwarden.dev")
        );
        assert_eq!(cluster.spec.scope, "Cluster");
    }

    #[test]
    fn an_issuer_spec_defaults_to_https_and_45_seconds() {
        let spec: TokenIssuerSpec = serde_json::from_value(serde_json::json!({
            "http": { "url": "https://p", "adminTokenSecretRef": { "name": "a", "key": "t" } }
        }))
        .unwrap();
        assert!(!spec.http.allow_insecure_http);
        assert_eq!(spec.http.timeout_seconds, 45);
        let reference: IssuerRef =
            serde_json::from_value(serde_json::json!({ "name": "p" })).unwrap();
        assert_eq!(reference.kind, IssuerKind::TokenIssuer);
    }
}
