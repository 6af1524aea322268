//! Every name tokenwarden writes on the wire or reads back from it, as `shared/design/api.md`
//! spells it: the labels, annotations and data keys of its Secrets, the annotations users
//! set on a WorkspaceToken, the finalizer, the field manager and the condition types. Tools
//! and tests of others depend on these exact strings; they change only with the contract.

/// `apiVersion` of the WorkspaceToken.
pub const API_VERSION: &str = "tokenwarden.dev/v1alpha1";
/// The finalizer that holds a WorkspaceToken until its tokens are revoked or released.
pub const FINALIZER: &str = "tokenwarden.dev/cleanup";
/// The field manager of every write tokenwarden makes.
pub const FIELD_MANAGER: &str = "tokenwarden";
/// The `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "tokenwarden.dev/controller";

// Conditions on a WorkspaceToken.
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// The condition of `type_` among `conditions` when its status is True (a condition other
/// than True, or none, says nothing).
pub fn true_condition<'c>(
    conditions: &'c [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'c k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    (conditions.iter()).find(|c| c.type_ == type_ && c.status == "True")
}

// Annotations users set on a WorkspaceToken.
/// A new value of this annotation asks for a rotation now (like `cmctl renew`).
pub const ROTATE_ANNOTATION: &str = "tokenwarden.dev/rotate";
/// Why the rotation `tokenwarden.dev/rotate` asks for is wanted (`tokenwarden rotate --reason`):
/// carried by the audit lines of the trace that rotation starts.
pub const ROTATE_REASON_ANNOTATION: &str = "tokenwarden.dev/rotate-reason";
/// `"N"` revokes version N now (rotating first when N is current).
pub const REVOKE_VERSION_ANNOTATION: &str = "tokenwarden.dev/revoke-version";

/// kubectl's copy of the last applied object: never read, dropped from the cache.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

// Labels of every Secret tokenwarden owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`]: the label selector of every watch and list on Secrets.
pub const MANAGED_BY: &str = "tokenwarden";
pub const TOKEN_LABEL: &str = "tokenwarden.dev/token";
pub const VERSION_LABEL: &str = "tokenwarden.dev/version";
pub const ENVIRONMENT_LABEL: &str = "tokenwarden.dev/environment";

// Annotations of the Secrets tokenwarden owns.
pub const TOKEN_SHA256_ANNOTATION: &str = "tokenwarden.dev/token-sha256";
pub const TRACE_ID_ANNOTATION: &str = "tokenwarden.dev/trace-id";
pub const SPEC_HASH_ANNOTATION: &str = "tokenwarden.dev/spec-hash";
pub const ISSUER_TOKEN_ID_ANNOTATION: &str = "tokenwarden.dev/issuer-token-id";
/// On `S-vN`: when the platform last accepted the token in the operator's own call.
pub const VERIFIED_AT_ANNOTATION: &str = "tokenwarden.dev/verified-at";
/// Which `secretTemplate` keys tokenwarden put on a Secret, so removed ones can be removed.
pub const TEMPLATE_KEYS_ANNOTATION: &str = "tokenwarden.dev/template-keys";

/// On a restart target's pod template: the cutover that rolled it.
pub const RESTARTED_AT_ANNOTATION: &str = "tokenwarden.dev/restartedAt";

// Data keys of the Secrets tokenwarden owns.
pub const TOKEN_KEY: &str = "token";
pub const TOKEN_VERSION_KEY: &str = "token-version";
pub const WORKSPACE_ID_KEY: &str = "workspace-id";
/// On `S-vN` written before issuers were resources: the URL of the inline issuer. Only read
/// to match it against the URL of an issuer object (see `apply::platform`), never called.
pub const ISSUER_URL_KEY: &str = "issuer-url";
/// On `S-vN`: the issuer object that minted the version (immutable, like the token). Its
/// revocation goes to that object's URL of the moment, and nowhere once the object is gone.
pub const ISSUER_KIND_KEY: &str = "issuer-kind";
pub const ISSUER_NAME_KEY: &str = "issuer-name";
pub const ISSUER_UID_KEY: &str = "issuer-uid";
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
pub const PREVIOUS_TOKEN_VERSION_KEY: &str = "previous-token-version";

/// The label selector of every watch and list on Secrets.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}
