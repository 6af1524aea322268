//! The `WorkspaceToken` API (`tokenwarden.dev/v1alpha1`): spec, status and the schema rules the
//! API server enforces. Names follow `shared/design/api.md` exactly.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schedule::DURATION_PATTERN;

mod issuer;

pub use issuer::{
    ClusterTokenIssuer, ClusterTokenIssuerSpec, HttpIssuerSpec, InventorySpec, IssuerIdentity,
    IssuerKind, IssuerRef, IssuerStatus, SecretKeyRef, TokenIssuer, TokenIssuerSpec, WorkspaceId,
};

/// Desired state of one workspace bearer token.
// The derive's repeated `printcolumn(type_ = ...)` arguments look like duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tokenwarden.dev",
    version = "v1alpha1",
    kind = "WorkspaceToken",
    namespaced,
    status = "WorkspaceTokenStatus",
    shortname = "wst",
    category = "tokenwarden",
    doc = "A workspace bearer token that tokenwarden mints, writes into versioned Secrets, rotates and revokes.",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceId"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.tokenVersion"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.nextRotationTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)",
        "message": "secretName is immutable",
        "fieldPath": ".secretName"
    },
    {
        "rule": "!has(self.issuer) || (oldSelf.hasValue() && has(oldSelf.value().issuer))",
        "optionalOldSelf": true,
        "message": "spec.issuer was removed: put the http issuer in a TokenIssuer and name it in spec.issuerRef (README: moving an inline issuer)",
        "fieldPath": ".issuer"
    },
    {
        "rule": "!has(self.rotation) || !has(self.rotation.holdUntil) || !has(self.rotation.holdUntil.idleFor) || has(self.issuerRef)",
        "message": "rotation.holdUntil.idleFor needs issuerRef: only a platform knows when a token was last used",
        "fieldPath": ".rotation.holdUntil.idleFor"
    }
]))]
pub struct WorkspaceTokenSpec {
    /// The platform workspace this token is scoped to. Immutable.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "workspaceId is immutable"}])
    )]
    pub workspace_id: String,
    /// Who owns the token, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub user_id: Option<String>,
    /// Automation profile, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub profile_id: Option<String>,
    /// Environment (staging, production, ...): a label on every Secret and an audit field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub environment: Option<String>,
    /// Name of the Secret pods mount; versions go to `<secretName>-v<N>`. Default
    /// `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 240),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
    /// The shape of locally minted tokens.
    #[serde(default)]
    pub token: TokenSpec,
    /// When to rotate.
    #[serde(default)]
    pub rotation: RotationSpec,
    /// The TokenIssuer or ClusterTokenIssuer tokens are minted at; absent: minted locally
    /// from the OS CSPRNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    // Removed: the inline issuer of earlier releases. Kept in the schema only so that the API
    // server refuses it with a message saying where it went, instead of pruning it (which
    // would silently turn a platform token into a local one).
    #[serde(rename = "issuer", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "removed_issuer")]
    pub removed_issuer: Option<serde_json::Value>,
    /// Labels and annotations copied onto every Secret written.
    #[serde(default)]
    pub secret_template: SecretTemplate,
    /// Workloads restarted (pod template annotation) at each cutover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub restart_targets: Vec<RestartTarget>,
    /// Revoked versions kept in status.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub history_limit: u32,
    /// What deleting the WorkspaceToken does to its Secrets and issuer tokens.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// true: no writes and no rotation; the status says so.
    #[serde(default)]
    pub suspend: bool,
}

fn removed_issuer(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Removed: name a TokenIssuer or ClusterTokenIssuer in issuerRef instead.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn default_history_limit() -> u32 {
    10
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// Random bytes per token (entropy), 16..=64.
    #[serde(default = "default_bytes")]
    #[schemars(range(min = 16, max = 64), extend("format" = "int32"))]
    pub bytes: u32,
    /// base64url (unpadded) or hex.
    #[serde(default)]
    pub encoding: Encoding,
    /// A literal prefix, so secret scanners can recognise the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,15}$"))]
    pub prefix: Option<String>,
}

fn default_bytes() -> u32 {
    32
}

impl Default for TokenSpec {
    fn default() -> Self {
        TokenSpec {
            bytes: default_bytes(),
            encoding: Encoding::default(),
            prefix: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Base64url,
    Hex,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.every) && has(self.schedule))", "message": "every and schedule are exclusive: set one", "fieldPath": ".schedule"},
    {"rule": "!has(self.timeZone) || has(self.schedule) || (has(self.windows) && size(self.windows) > 0)", "message": "timeZone is only valid with schedule or windows", "fieldPath": ".timeZone"},
    {"rule": "!(has(self.revokeAfterUse) && self.revokeAfterUse && has(self.holdUntil) && has(self.holdUntil.idleFor))", "message": "revokeAfterUse and holdUntil.idleFor exclude each other: each reads usage with the token the other judges", "fieldPath": ".holdUntil.idleFor"}
]))]
pub struct RotationSpec {
    /// Rotate this long after the last rotation (s, m, h, d units: 720h, 1d12h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub every: Option<String>,
    /// Rotate at the times of this 5-field cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule` and `windows`, default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// A stable per-object offset in [0, jitter] added to every scheduled rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub jitter: Option<String>,
    /// How long the previous version stays valid after cutover; 0 revokes at cutover.
    #[serde(default = "default_grace_period")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub grace_period: String,
    /// Rotate when the token-shaping spec (token, issuerRef, userId, environment) changes.
    #[serde(default = "default_true")]
    pub rotate_on_change: bool,
    /// Issuer tokens: revoke a retiring version before its grace period ends, once the
    /// platform shows the new token used by a consumer after the cutover.
    #[serde(default)]
    pub revoke_after_use: bool,
    /// Hold the revocation of the previous version past `gracePeriod` until each of these holds.
    #[serde(default, skip_serializing_if = "HoldUntil::is_empty")]
    pub hold_until: HoldUntil,
    /// The latest a held version is revoked, after its successor's cutover (Warning
    /// `StaleConsumer`); default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_grace_period: Option<String>,
    /// Scheduled rotations start only inside one of these windows (read in `timeZone`);
    /// manual, spec-change and revoke-now rotations ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub windows: Vec<RotationWindow>,
}

/// A time a scheduled rotation may start in: it opens at each time of `schedule` and stays
/// open for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationWindow {
    /// A 5-field cron expression, in the rotation's `timeZone`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How long the window stays open (s, m, h, d units: 4h, 90m).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
}

/// What must hold before a Retiring version is revoked.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldUntil {
    /// Every restart target finished the rollout the cutover started: all replicas updated
    /// and available, no pod of an older template left (as `kubectl rollout status`).
    #[serde(default)]
    pub rollout_complete: bool,
    /// Issuer tokens: the previous token unused at the platform (its `last_used_at`) for this
    /// long, or not used at all since the cutover. Read by listing with the current token, so
    /// the operator's own calls never touch the token being judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_for: Option<String>,
}

impl HoldUntil {
    pub fn is_empty(&self) -> bool {
        !self.rollout_complete && self.idle_for.is_none()
    }
}

fn default_grace_period() -> String {
    "1h".to_string()
}

fn default_true() -> bool {
    true
}

impl Default for RotationSpec {
    fn default() -> Self {
        RotationSpec {
            every: None,
            schedule: None,
            time_zone: None,
            jitter: None,
            grace_period: default_grace_period(),
            rotate_on_change: true,
            revoke_after_use: false,
            hold_until: HoldUntil::default(),
            max_grace_period: None,
            windows: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(k, !k.startsWith('tokenwarden.dev/') && k != 'app.kubernetes.io/managed-by')", "message": "labels may not set keys tokenwarden owns (tokenwarden.dev/*, app.kubernetes.io/managed-by)"}]))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(k, !k.startsWith('tokenwarden.dev/'))", "message": "annotations may not set keys tokenwarden owns (tokenwarden.dev/*)"}]))]
    pub annotations: BTreeMap<String, String>,
}

/// A DNS-1123 subdomain: the names Deployments, StatefulSets and DaemonSets may have.
const RESTART_TARGET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartTarget {
    pub kind: RestartKind,
    /// A workload in the WorkspaceToken's namespace (a DNS-1123 subdomain).
    #[schemars(length(min = 1, max = 253), regex(pattern = RESTART_TARGET_NAME_PATTERN))]
    pub name: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum RestartKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl RestartKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartKind::Deployment => "Deployment",
            RestartKind::StatefulSet => "StatefulSet",
            RestartKind::DaemonSet => "DaemonSet",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke every live version at the issuer, then delete the Secrets.
    #[default]
    Revoke,
    /// Leave Secrets and issuer tokens; drop the ownerReferences.
    Retain,
}

/// Observed state, recomputed from the cluster on every pass. Hash-only: no token appears here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceTokenStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub current_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_version: Option<String>,
    /// First 8 characters of the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prefix: Option<String>,
    /// Hex SHA-256 of the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trace_id: Option<String>,
    /// The last handled value of the `tokenwarden.dev/rotate` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_request: Option<String>,
    /// The last handled value of the `tokenwarden.dev/revoke-version` annotation: a value is
    /// acted on once, so a stale one never revokes a version that becomes current later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revoke_request: Option<String>,
    /// `v3@2026-11-24T01:02:03Z`: an HTTP mint of version 3 started then and may have been cut
    /// short (see `plan::MintIntent`). Written by the operator alone (status), never by whoever
    /// may edit the WorkspaceToken: it decides which unheld platform tokens are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint_intent: Option<String>,
    /// Newest first; revoked ones trimmed to `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    /// The workloads of the namespace whose pod template reads `S`, and how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,
    /// Issuer tokens live at the platform for this workspace that no WorkspaceToken holds
    /// (the issuer's inventory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged_tokens: Vec<UnmanagedTokenStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    #[schemars(extend("format" = "int64"))]
    pub version: u32,
    pub secret_name: String,
    pub state: VersionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_token_id: Option<String>,
    /// The issuer object that minted it: where it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerIdentity>,
    /// Why a Retiring version outlives its grace period (`Deployment/agent 2/3 updated`);
    /// `retireAt` is then the latest it is revoked (successor's cutover + maxGracePeriod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retire_held_by: Vec<String>,
    /// `holdUntil.idleFor`: when the platform last saw the token used, as of `usageCheckedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// When the platform was last asked about this token's use (with its successor's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_checked_at: Option<Time>,
}

/// A workload whose pod template reads `S`, one way (a workload reading it two ways is listed
/// twice).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// Deployment, StatefulSet, DaemonSet, CronJob, Job or Pod (a bare one).
    pub kind: String,
    pub name: String,
    /// volume, projected, env, envFrom or subPath: the last three never see a new token
    /// without a restart.
    pub via: String,
    /// Named in `spec.restartTargets`: rolled at each cutover.
    pub restart_target: bool,
}

/// A token live at the platform for this workspace that no version of any WorkspaceToken
/// holds: minted by hand or by another tool, the workspace's registration token, or one a
/// restore of the cluster forgot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedTokenStatus {
    /// Its first 8 characters, as the platform lists it.
    pub prefix: String,
    pub created_at: Time,
    /// The platform's last use of it (kept to the hour: a newer use within the hour of the
    /// recorded one is not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// When tokenwarden first saw it held by none: `inventory.revokeUnmanagedAfter` counts
    /// from here.
    pub unmanaged_since: Time,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum VersionState {
    Pending,
    Active,
    Retiring,
    Revoked,
}

impl WorkspaceTokenSpec {
    /// The Secret pods mount.
    pub fn secret_name<'a>(&'a self, object_name: &'a str) -> &'a str {
        mounted_secret_name(self.secret_name.as_deref(), object_name)
    }
}

/// `S`: `spec.secretName`, else the WorkspaceToken's own name.
pub(crate) fn mounted_secret_name<'a>(
    secret_name: Option<&'a str>,
    object_name: &'a str,
) -> &'a str {
    secret_name.unwrap_or(object_name)
}

/// `<secretName>-v<N>`: the immutable record of version N.
pub(crate) fn versioned_secret_name(secret_name: &str, version: u32) -> String {
    format!("{secret_name}-v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn defaults_follow_the_contract() {
        let spec: WorkspaceTokenSpec =
            serde_json::from_value(serde_json::json!({ "workspaceId": "ws-1" })).unwrap();
        assert_eq!(spec.token.bytes, 32);
        assert_eq!(spec.token.encoding, Encoding::Base64url);
        assert_eq!(spec.rotation.grace_period, "1h");
        assert!(spec.rotation.rotate_on_change);
        assert_eq!(spec.history_limit, 10);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Revoke);
        assert!(!spec.suspend);
        assert_eq!(spec.secret_name("agent"), "agent");
    }

    #[test]
    fn crd_names_match_the_contract() {
        let crd = WorkspaceToken::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("workspacetokens.tokenwarden.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["wst".to_string()]));
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["tokenwarden".to_string()])
        );
        let columns: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.to_uppercase())
            .collect();
        assert_eq!(
            columns,
            ["WORKSPACE", "VERSION", "READY", "NEXT ROTATION", "AGE"]
        );
    }
}
