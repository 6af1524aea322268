//! The Secrets tokenwarden owns: a hash-only cache of them, and what the planner sees in it.
//!
//! The watch on Secrets is label-selected (`app.kubernetes.io/managed-by=tokenwarden`) and
//! every object is hashed on arrival: token values become their SHA-256 before they reach
//! memory that outlives the event. Plaintext is read with a GET only when a step needs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::WorkspaceToken;
use crate::plan::{
    ISSUER_TOKEN_ID_ANNOTATION, MANAGED_BY, MountedSecret, SPEC_HASH_ANNOTATION, SecretMetadata,
    TOKEN_LABEL, TRACE_ID_ANNOTATION, VersionedSecret,
};
use crate::token::{prefix_of, sha256_hex};

pub const TOKEN_KEY: &str = "token";
pub const TOKEN_VERSION_KEY: &str = "token-version";
pub const WORKSPACE_ID_KEY: &str = "workspace-id";
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
pub const PREVIOUS_TOKEN_VERSION_KEY: &str = "previous-token-version";
/// Hashed caches keep the token's first characters under this key, for status prefixes.
const PREFIX_KEY: &str = "tokenwarden.dev/prefix";
const PREVIOUS_PREFIX_KEY: &str = "tokenwarden.dev/previous-prefix";

/// The label selector of every watch and list on Secrets.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}=tokenwarden")
}

/// Replaces token values by their SHA-256 (and keeps the 8-char prefix), drops managedFields.
pub fn hash_in_place(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
    if let Some(data) = secret.data.as_mut() {
        for (key, prefix_key) in [
            (TOKEN_KEY, PREFIX_KEY),
            (PREVIOUS_TOKEN_KEY, PREVIOUS_PREFIX_KEY),
        ] {
            if let Some(value) = data.get(key) {
                let prefix = prefix_of(&String::from_utf8_lossy(&value.0));
                let hashed = sha256_hex(&value.0);
                data.insert(key.into(), ByteString(hashed.into_bytes()));
                data.insert(prefix_key.into(), ByteString(prefix.into_bytes()));
            }
        }
    }
}

type Key = (String, String);

/// Owned Secrets grouped by (namespace, WorkspaceToken name), fed by one watch.
#[derive(Clone, Default)]
pub struct SecretIndex {
    inner: Arc<RwLock<IndexState>>,
}

#[derive(Default)]
struct IndexState {
    by_token: HashMap<Key, BTreeMap<String, Arc<Secret>>>,
    relisting: Option<HashMap<Key, BTreeMap<String, Arc<Secret>>>>,
    ready: bool,
}

fn key_of(secret: &Secret) -> Option<Key> {
    let token = secret.labels().get(TOKEN_LABEL)?;
    Some((secret.namespace()?, token.clone()))
}

impl SecretIndex {
    /// Applies one (already hashed) watch event; returns the WorkspaceToken it concerns.
    pub fn apply(&self, event: &watcher::Event<Secret>) -> Option<Key> {
        let mut state = self.inner.write().expect("secret index lock");
        match event {
            watcher::Event::Apply(s) => {
                let key = key_of(s)?;
                state
                    .by_token
                    .entry(key.clone())
                    .or_default()
                    .insert(s.name_any(), Arc::new(s.clone()));
                Some(key)
            }
            watcher::Event::Delete(s) => {
                let key = key_of(s)?;
                if let Some(group) = state.by_token.get_mut(&key) {
                    group.remove(&s.name_any());
                    if group.is_empty() {
                        state.by_token.remove(&key);
                    }
                }
                Some(key)
            }
            watcher::Event::Init => {
                state.relisting = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(s) => {
                let key = key_of(s)?;
                state
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .entry(key.clone())
                    .or_default()
                    .insert(s.name_any(), Arc::new(s.clone()));
                Some(key)
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = state.relisting.take() {
                    state.by_token = fresh;
                }
                state.ready = true;
                None
            }
        }
    }

    /// Whether the first list completed: before that, absence means nothing.
    pub fn is_ready(&self) -> bool {
        self.inner.read().expect("secret index lock").ready
    }

    pub fn secrets_of(&self, namespace: &str, token: &str) -> Vec<Arc<Secret>> {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .get(&(namespace.to_string(), token.to_string()))
            .map(|group| group.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The 8-char prefixes of every token any owned Secret holds (current and previous).
    pub fn held_prefixes(&self) -> std::collections::BTreeSet<String> {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|s| s.data.as_ref())
            .flat_map(|d| [d.get(PREFIX_KEY), d.get(PREVIOUS_PREFIX_KEY)])
            .flatten()
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .collect()
    }

    pub fn len(&self) -> usize {
        let state = self.inner.read().expect("secret index lock");
        state.by_token.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the planner sees of a WorkspaceToken's Secrets.
pub struct SecretsView {
    pub versioned: BTreeMap<u32, VersionedSecret>,
    pub mounted: Option<MountedSecret>,
    pub foreign: Vec<String>,
    /// The cached objects by name, for the apply side (resourceVersion, uid, annotations).
    pub objects: BTreeMap<String, Arc<Secret>>,
}

/// Sorts a WorkspaceToken's cached Secrets into the mounted one, versioned ones and
/// look-alikes it does not control.
pub fn view(wst: &WorkspaceToken, secrets: &[Arc<Secret>]) -> SecretsView {
    let name = wst.name_any();
    let uid = wst.uid().unwrap_or_default();
    let mounted_name = wst.spec.secret_name(&name).to_string();
    let mut view = SecretsView {
        versioned: BTreeMap::new(),
        mounted: None,
        foreign: Vec::new(),
        objects: BTreeMap::new(),
    };
    for secret in secrets {
        let secret_name = secret.name_any();
        let version = secret_name
            .strip_prefix(&format!("{mounted_name}-v"))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0 && format!("{mounted_name}-v{n}") == secret_name);
        if secret_name != mounted_name && version.is_none() {
            continue; // labelled for us but not a name we use: not ours to judge
        }
        if !controlled_by(&secret.metadata, &uid) {
            view.foreign.push(secret_name);
            continue;
        }
        view.objects.insert(secret_name.clone(), secret.clone());
        let metadata = SecretMetadata {
            labels: secret.labels().clone(),
            annotations: secret.annotations().clone(),
        };
        match version {
            Some(n) => {
                view.versioned.insert(
                    n,
                    VersionedSecret {
                        version: n,
                        token_sha256: data_str(secret, TOKEN_KEY),
                        token_prefix: data_str(secret, PREFIX_KEY),
                        trace_id: secret.annotations().get(TRACE_ID_ANNOTATION).cloned(),
                        spec_hash: secret.annotations().get(SPEC_HASH_ANNOTATION).cloned(),
                        issuer_token_id: secret
                            .annotations()
                            .get(ISSUER_TOKEN_ID_ANNOTATION)
                            .cloned(),
                        verified: secret
                            .annotations()
                            .contains_key(crate::apply::VERIFIED_AT_ANNOTATION),
                        created_at: secret
                            .metadata
                            .creation_timestamp
                            .as_ref()
                            .map(crate::time::from_time),
                        metadata,
                    },
                );
            }
            None => {
                view.mounted = Some(MountedSecret {
                    version: data_str(secret, TOKEN_VERSION_KEY).and_then(|v| parse_version(&v)),
                    token_sha256: data_str(secret, TOKEN_KEY),
                    previous_version: data_str(secret, PREVIOUS_TOKEN_VERSION_KEY)
                        .and_then(|v| parse_version(&v)),
                    previous_sha256: data_str(secret, PREVIOUS_TOKEN_KEY),
                    metadata,
                });
            }
        }
    }
    view
}

/// Whether the WorkspaceToken with `uid` is the object's controller: the only Secrets
/// tokenwarden ever modifies or deletes.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "WorkspaceToken")
}

/// One data value of a fetched Secret as text (the plaintext: for a step that needs it, never
/// for the cache).
pub fn take_string(secret: Secret, key: &str) -> Option<String> {
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .and_then(|v| String::from_utf8(v.0).ok())
}

fn data_str(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// `v3` -> 3.
pub fn parse_version(s: &str) -> Option<u32> {
    s.strip_prefix('v')?.parse().ok().filter(|n| *n > 0)
}

pub fn created_at(secret: &Secret) -> Option<DateTime<Utc>> {
    secret
        .metadata
        .creation_timestamp
        .as_ref()
        .map(crate::time::from_time)
}
