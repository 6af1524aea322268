//! The WorkspaceToken cache: each object packed (`crate::packed`), beside the few fields the
//! loops over every token read (issuer changes, consumer changes, the gauges). A pass unpacks
//! the one object it works on. At 10k tokens the parsed objects were the operator's largest
//! memory (2.5 KB each, `bench/examples/cache_memory.rs`).

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::api::{IssuerRef, WorkspaceToken};
use crate::contract::{FINALIZER, READY, true_condition};
use crate::packed::{Packable, Packed};

/// A WorkspaceToken as the cache keeps it.
#[derive(Clone, Debug)]
pub struct CachedToken {
    /// Name and namespace only.
    metadata: ObjectMeta,
    /// Its uid's 128 bits (what the controller's memory is kept by).
    pub uid: Option<u128>,
    /// `spec.issuerRef`: which tokens a change of an issuer is about.
    pub issuer_ref: Option<IssuerRef>,
    /// `spec.secretName`: which tokens a change of consumers is about.
    secret_name: Option<String>,
    /// Ready=True in its status.
    pub ready: bool,
    /// The prefixes of every version its status records: whether a token a platform lists is
    /// held anywhere in the cluster is asked of every token.
    pub prefixes: Box<[String]>,
    full: Packed<WorkspaceToken>,
}

impl CachedToken {
    pub fn new(wst: &WorkspaceToken) -> Self {
        let ready =
            (wst.status.as_ref()).is_some_and(|s| true_condition(&s.conditions, READY).is_some());
        CachedToken {
            metadata: ObjectMeta {
                name: wst.metadata.name.clone(),
                namespace: wst.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            uid: wst.metadata.uid.as_deref().and_then(uid_bits),
            issuer_ref: wst.spec.issuer_ref.clone(),
            secret_name: wst.spec.secret_name.clone(),
            ready,
            prefixes: recorded_prefixes(wst).collect(),
            full: Packed::pack(wst),
        }
    }

    /// The object as it arrived (less what `slim` dropped).
    pub fn unpack(&self) -> WorkspaceToken {
        self.full.unpack()
    }

    /// The Secret its pods mount (`S`).
    pub fn mounted_secret(&self) -> &str {
        crate::api::mounted_secret_name(
            self.secret_name.as_deref(),
            self.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

/// The prefixes of every version `wst`'s status records, revoked ones too (a revocation that
/// failed leaves the token live).
pub fn recorded_prefixes(wst: &WorkspaceToken) -> impl Iterator<Item = String> + '_ {
    (wst.status.iter())
        .flat_map(|s| s.versions.iter())
        .filter_map(|v| v.token_prefix.clone())
}

/// The cache's key for a WorkspaceToken named elsewhere (the triggers, the holder index).
pub fn cached_ref(token: &ObjectRef<WorkspaceToken>) -> ObjectRef<CachedToken> {
    let key = ObjectRef::new(&token.name);
    match &token.namespace {
        Some(ns) => key.within(ns),
        None => key,
    }
}

/// The same key, back: what the rest of the operator names tokens by.
pub fn token_ref(cached: &ObjectRef<CachedToken>) -> ObjectRef<WorkspaceToken> {
    let key = ObjectRef::new(&cached.name);
    match &cached.namespace {
        Some(ns) => key.within(ns),
        None => key,
    }
}

/// A WorkspaceToken watch event as the cache takes it.
pub fn cached_event(event: &watcher::Event<WorkspaceToken>) -> watcher::Event<CachedToken> {
    match event {
        watcher::Event::Apply(wst) => watcher::Event::Apply(CachedToken::new(wst)),
        watcher::Event::Delete(wst) => watcher::Event::Delete(CachedToken::new(wst)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(wst) => watcher::Event::InitApply(CachedToken::new(wst)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

impl Resource for CachedToken {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        WorkspaceToken::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        WorkspaceToken::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        WorkspaceToken::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        WorkspaceToken::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The controller's bound: a cached token reads as the WorkspaceToken it packs.
impl<'de> Deserialize<'de> for CachedToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WorkspaceToken::deserialize(deserializer).map(|wst| CachedToken::new(&wst))
    }
}

impl Packable for WorkspaceToken {
    fn dictionary() -> &'static [u8] {
        &DICTIONARY
    }
}

/// A settled token's JSON, in the order it serializes: what every cached object shares.
static DICTIONARY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let (at, sha, trace) = ("2026-01-01T00:00:00Z", "0".repeat(64), "0".repeat(32));
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({ "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": at, "observedGeneration": 1 })
    };
    let sample: WorkspaceToken = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
        "metadata": { "name": "agent", "namespace": "default", "uid": "",
            "resourceVersion": "", "generation": 1, "creationTimestamp": at,
            "finalizers": [FINALIZER] },
        "spec": { "workspaceId": "ws" },
        "status": { "observedGeneration": 1, "currentVersion": 1, "tokenVersion": "v1",
            "tokenPrefix": "AAAAAAAA", "tokenSha256": sha, "lastRotationTime": at,
            "nextRotationTime": at, "lastTraceId": trace,
            "versions": [{ "version": 1, "secretName": "agent-v1", "state": "Active",
                "tokenPrefix": "AAAAAAAA", "tokenSha256": sha, "createdAt": at,
                "activatedAt": at, "traceId": trace }],
            "conditions": [
                condition(READY, "True", "Active", "version 1 is active"),
                condition("Degraded", "False", "AsExpected", "the last reconcile succeeded"),
            ] },
    }))
    .expect("dictionary sample");
    serde_json::to_vec(&sample).expect("sample serializes")
});

/// A uid as the cache and the controller's memory keep it: the 128 bits of the UUID an API
/// server gives every object (as a string, a 48-byte allocation per token, twice in the
/// cache). Not a UUID (never from an API server): `None`, nothing is remembered by it.
pub fn uid_bits(uid: &str) -> Option<u128> {
    let bytes = uid.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut bits = 0u128;
    for (at, byte) in bytes.iter().enumerate() {
        match (at, char::from(*byte).to_digit(16)) {
            (8 | 13 | 18 | 23, _) if *byte == b'-' => {}
            (8 | 13 | 18 | 23, _) | (_, None) => return None,
            (_, Some(digit)) => bits = (bits << 4) | u128::from(digit),
        }
    }
    Some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> WorkspaceToken {
        serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "agent-7", "namespace": "team-a",
                "uid": "0b2f4a6e-9c1d-4e7f-8a3b-5c6d7e8f9a0b",
                "resourceVersion": "42", "generation": 3, "labels": { "team": "a" } },
            "spec": { "workspaceId": "ws-7", "secretName": "agent-token",
                "issuerRef": { "name": "platform" } },
            "status": { "currentVersion": 2, "conditions": [{ "type": "Ready", "status": "True",
                "reason": "Active", "message": "version 2 is active",
                "lastTransitionTime": "2026-11-24T03:00:00Z" }] },
        }))
        .expect("token")
    }

    #[test]
    fn a_cached_token_unpacks_to_the_object_it_was() {
        let cached = CachedToken::new(&token());
        let json = |wst: &WorkspaceToken| serde_json::to_value(wst).expect("serializes");
        assert_eq!(json(&cached.unpack()), json(&token()));
    }

    #[test]
    fn the_fields_every_loop_reads_are_kept_unpacked() {
        let cached = CachedToken::new(&token());
        assert!(cached.ready);
        assert_eq!(*cached.prefixes, [] as [String; 0], "no version recorded");
        assert_eq!(
            cached.issuer_ref.as_ref().map(|r| r.name.as_str()),
            Some("platform")
        );
        assert_eq!(cached.mounted_secret(), "agent-token");
        assert_eq!(cached.uid, Some(0x0b2f4a6e9c1d4e7f8a3b5c6d7e8f9a0b));
        let meta = cached.meta();
        let kept = (meta.name.as_deref(), meta.namespace.as_deref());
        assert_eq!(kept, (Some("agent-7"), Some("team-a")));
        assert_eq!(
            (meta.uid.as_deref(), meta.resource_version.as_deref()),
            (None, None),
            "only the key: a uid string would be allocated twice (here and in the key)"
        );
        let mut not_ready = token();
        not_ready.status = None;
        assert!(!CachedToken::new(&not_ready).ready);
    }

    #[test]
    fn keys_go_back_and_forth_between_the_cache_and_the_operator() {
        let token = ObjectRef::<WorkspaceToken>::new("agent-7").within("team-a");
        let cached = cached_ref(&token);
        assert_eq!(
            cached,
            ObjectRef::from_obj(&CachedToken::new(&self::token()))
        );
        assert_eq!(token_ref(&cached), token);
    }

    #[test]
    fn a_uid_is_kept_as_its_128_bits_and_anything_else_not_at_all() {
        let uid = "0b2f4a6e-9c1d-4e7f-8a3b-5c6d7e8f9a0b";
        assert_eq!(uid_bits(uid), Some(0x0b2f4a6e9c1d4e7f8a3b5c6d7e8f9a0b));
        assert_ne!(
            uid_bits(uid),
            uid_bits("0b2f4a6e-9c1d-4e7f-8a3b-5c6d7e8f9a0c")
        );
        assert_eq!(uid_bits(""), None);
        assert_eq!(uid_bits("not-a-uid"), None);
        assert_eq!(uid_bits("0b2f4a6e9c1d4e7f8a3b5c6d7e8f9a0b----"), None);
        assert_eq!(uid_bits("+b2f4a6e-9c1d-4e7f-8a3b-5c6d7e8f9a0b"), None);
    }
}
