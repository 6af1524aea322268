//! The Secrets tokenwarden owns: a hash-only cache of them, and what the planner sees in it.
//!
//! The watch on Secrets is label-selected (`app.kubernetes.io/managed-by=tokenwarden`) and
//! every object is hashed on arrival: token values become their SHA-256 before they reach
//! memory that outlives the event. Plaintext is read with a GET only when a step needs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::WorkspaceToken;
/// The label selector of the operator's Secrets (its watch, and whoever must list the same).
pub use crate::contract::managed_selector;
use crate::contract::{
    PREVIOUS_TOKEN_KEY, PREVIOUS_TOKEN_VERSION_KEY, SPEC_HASH_ANNOTATION, TOKEN_KEY, TOKEN_LABEL,
    TOKEN_VERSION_KEY, TRACE_ID_ANNOTATION, VERIFIED_AT_ANNOTATION,
};
use crate::plan::{MountedSecret, SecretMetadata, VersionedSecret};
use crate::secret_packing::{PREFIX_KEY, PREVIOUS_PREFIX_KEY, SecretGroup};
use crate::token::{prefix_of, sha256_hex};

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

/// A WorkspaceToken as the index keys it: `namespace/name`, one allocation (a namespace has no
/// `/`); a pair of strings took two and a larger table slot, 10k times over.
type Key = Box<str>;

fn key(namespace: &str, token: &str) -> Key {
    format!("{namespace}/{token}").into_boxed_str()
}

/// Owned Secrets grouped by (namespace, WorkspaceToken name), fed by one watch.
#[derive(Clone, Default)]
pub struct SecretIndex {
    inner: Arc<RwLock<IndexState>>,
}

#[derive(Default)]
struct IndexState {
    by_token: HashMap<Key, Group>,
    relisting: Option<HashMap<Key, Group>>,
    ready: bool,
}

/// The few Secrets of one token (`S` and one `S-vN` per live version), sorted by name and
/// packed together (`crate::secret_packing`): a token's Secrets repeat its uid, hashes, trace
/// id and names, which one packed frame holds once. Lists, not maps: a node would cost more
/// than the handful of entries they hold, 10k times over. Each Secret's name and
/// resourceVersion are kept unpacked, so checking that the cache has seen our own writes
/// unpacks nothing.
#[derive(Default)]
struct Group {
    /// In the order `packed` holds the Secrets.
    entries: Box<[Entry]>,
    packed: Option<Packed>,
}

struct Entry {
    name: Box<str>,
    resource_version: Option<u64>,
}

impl Group {
    fn insert(&mut self, secret: &Secret) {
        let mut secrets = self.unpack();
        let name = secret.metadata.name.as_deref();
        match secrets.binary_search_by(|s| s.metadata.name.as_deref().cmp(&name)) {
            Ok(at) => secrets[at] = secret.clone(),
            Err(at) => secrets.insert(at, secret.clone()),
        }
        self.repack(secrets);
    }

    fn remove(&mut self, name: &str) {
        if self.entries.iter().any(|e| *e.name == *name) {
            let mut secrets = self.unpack();
            secrets.retain(|s| s.metadata.name.as_deref() != Some(name));
            self.repack(secrets);
        }
    }

    fn repack(&mut self, secrets: Vec<Secret>) {
        self.entries = (secrets.iter())
            .map(|s| Entry {
                name: s.name_any().into_boxed_str(),
                resource_version: s.resource_version().and_then(|rv| rv.parse().ok()),
            })
            .collect();
        let group = SecretGroup(secrets);
        self.packed = (!group.0.is_empty()).then(|| Packed::pack(&group));
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn unpack(&self) -> Vec<Secret> {
        (self.packed.as_ref()).map_or_else(Vec::new, |p| p.unpack().0)
    }
}

/// Hashed Secrets packed: a tenth of the memory of the parsed objects (a dozen maps and
/// strings each). A group is unpacked by the pass reconciling its token, by each watch event
/// of its token (to repack it) and by the inventory (the prefixes held).
type Packed = crate::packed::Packed<SecretGroup>;

/// The namespace and WorkspaceToken a Secret is labelled for.
fn token_of(secret: &Secret) -> Option<(String, String)> {
    let token = secret.labels().get(TOKEN_LABEL)?;
    Some((secret.namespace()?, token.clone()))
}

impl SecretIndex {
    /// Applies one (already hashed) watch event; returns the WorkspaceToken it concerns.
    pub fn apply(&self, event: &watcher::Event<Secret>) -> Option<(String, String)> {
        let mut state = self.inner.write().expect("secret index lock");
        match event {
            watcher::Event::Apply(s) => {
                let token = token_of(s)?;
                let group = state.by_token.entry(key(&token.0, &token.1));
                group.or_default().insert(s);
                Some(token)
            }
            watcher::Event::Delete(s) => {
                let token = token_of(s)?;
                let key = key(&token.0, &token.1);
                if let Some(group) = state.by_token.get_mut(&key) {
                    group.remove(&s.name_any());
                    if group.is_empty() {
                        state.by_token.remove(&key);
                    }
                }
                Some(token)
            }
            watcher::Event::Init => {
                state.relisting = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(s) => {
                let token = token_of(s)?;
                state
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .entry(key(&token.0, &token.1))
                    .or_default()
                    .insert(s);
                Some(token)
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
    pub(crate) fn is_ready(&self) -> bool {
        self.inner.read().expect("secret index lock").ready
    }

    /// Whether a list is under way: until it is done, the index still shows what the watch
    /// saw before it (after a restore of the cluster, another world than the one listed).
    pub(crate) fn is_relisting(&self) -> bool {
        self.inner
            .read()
            .expect("secret index lock")
            .relisting
            .is_some()
    }

    pub(crate) fn secrets_of(&self, namespace: &str, token: &str) -> Vec<Arc<Secret>> {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .get(&key(namespace, token))
            .map(|group| group.unpack().into_iter().map(Arc::new).collect())
            .unwrap_or_default()
    }

    /// The names and resourceVersions of a token's cached Secrets, without unpacking them.
    pub(crate) fn resource_versions_of(
        &self,
        namespace: &str,
        token: &str,
    ) -> Vec<(String, Option<u64>)> {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .get(&key(namespace, token))
            .map(|group| {
                let entries = group.entries.iter();
                entries
                    .map(|e| (e.name.to_string(), e.resource_version))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The 8-char prefixes of every token any owned Secret holds (current and previous).
    pub(crate) fn held_prefixes(&self) -> std::collections::BTreeSet<String> {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .values()
            .flat_map(Group::unpack)
            .filter_map(|secret| secret.data)
            .flat_map(|mut d| [d.remove(PREFIX_KEY), d.remove(PREVIOUS_PREFIX_KEY)])
            .flatten()
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .collect()
    }

    pub fn len(&self) -> usize {
        let state = self.inner.read().expect("secret index lock");
        state
            .by_token
            .values()
            .map(|group| group.entries.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the planner sees of a WorkspaceToken's Secrets.
pub(crate) struct SecretsView {
    pub versioned: BTreeMap<u32, VersionedSecret>,
    pub mounted: Option<MountedSecret>,
    pub foreign: Vec<String>,
    /// The cached objects by name, for the apply side (resourceVersion, uid, annotations).
    pub objects: BTreeMap<String, Arc<Secret>>,
}

impl SecretsView {
    /// The SHA-256 of every token the cached Secrets hold (as `token` or `previous-token`).
    pub(crate) fn token_hashes(&self) -> std::collections::BTreeSet<String> {
        self.objects
            .values()
            .filter_map(|s| s.data.as_ref())
            .flat_map(|data| [data.get(TOKEN_KEY), data.get(PREVIOUS_TOKEN_KEY)])
            .flatten()
            .map(|hash| String::from_utf8_lossy(&hash.0).into_owned())
            .collect()
    }
}

/// Sorts a WorkspaceToken's cached Secrets into the mounted one, versioned ones and
/// look-alikes it does not control.
pub(crate) fn view(wst: &WorkspaceToken, secrets: &[Arc<Secret>]) -> SecretsView {
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
                        verified: secret.annotations().contains_key(VERIFIED_AT_ANNOTATION),
                        verified_at: (secret.annotations().get(VERIFIED_AT_ANNOTATION))
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.to_utc()),
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
pub(crate) fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "WorkspaceToken")
}

/// One data value of a fetched Secret as text (the plaintext: for a step that needs it, never
/// for the cache).
pub(crate) fn take_string(secret: Secret, key: &str) -> Option<String> {
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
pub(crate) fn parse_version(s: &str) -> Option<u32> {
    s.strip_prefix('v')?.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::MANAGED_BY_LABEL;

    fn secret(name: &str, token: &str) -> Secret {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "team-a", "resourceVersion": "7",
                "labels": { MANAGED_BY_LABEL: "tokenwarden", TOKEN_LABEL: "agent" },
                "managedFields": [{ "manager": "tokenwarden", "operation": "Apply" }],
            },
            "data": { TOKEN_KEY: k8s_openapi::ByteString(token.as_bytes().to_vec()) },
        }))
        .expect("Secret");
        hash_in_place(&mut secret);
        secret
    }

    fn names(index: &SecretIndex) -> Vec<String> {
        let secrets = index.secrets_of("team-a", "agent");
        secrets.iter().map(|s| s.name_any()).collect()
    }

    #[test]
    fn the_index_gives_back_what_it_was_given_hashed_and_without_managed_fields() {
        let index = SecretIndex::default();
        let key = index.apply(&watcher::Event::Apply(secret("agent-v1", "tw_secret-one")));
        assert_eq!(key, Some(("team-a".into(), "agent".into())));
        let cached = index.secrets_of("team-a", "agent");
        assert_eq!(cached.len(), 1);
        let data = cached[0].data.as_ref().expect("data");
        assert_eq!(data[TOKEN_KEY].0, sha256_hex(b"tw_secret-one").into_bytes());
        assert_eq!(data[PREFIX_KEY].0, b"tw_secre".to_vec());
        assert_eq!(cached[0].metadata.managed_fields, None);
        assert_eq!(cached[0].resource_version().as_deref(), Some("7"));
        let versions = index.resource_versions_of("team-a", "agent");
        assert_eq!(versions, [("agent-v1".to_string(), Some(7))]);
        assert_eq!(
            index.held_prefixes().into_iter().collect::<Vec<_>>(),
            ["tw_secre"]
        );
    }

    #[test]
    fn a_relist_replaces_the_cache_only_when_it_completes() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("agent-v1", "a")));
        assert!(!index.is_ready());
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("agent-v2", "b")));
        assert_eq!(
            names(&index),
            ["agent-v1"],
            "the old cache serves until InitDone"
        );
        index.apply(&watcher::Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(names(&index), ["agent-v2"]);
        index.apply(&watcher::Event::Delete(secret("agent-v2", "b")));
        assert!(index.is_empty());
        let state = index.inner.read().expect("lock");
        assert!(
            state.by_token.is_empty(),
            "an emptied group goes with its last Secret"
        );
    }

    #[test]
    fn deleting_a_secret_the_index_does_not_hold_changes_nothing() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("agent-v1", "a")));
        let key = index.apply(&watcher::Event::Delete(secret("agent-v9", "a")));
        assert_eq!(key, Some(("team-a".into(), "agent".into())));
        assert_eq!(names(&index), ["agent-v1"]);
        let mut elsewhere = secret("other-v1", "a");
        (elsewhere.metadata.labels.as_mut().expect("labels"))
            .insert(TOKEN_LABEL.into(), "other".into());
        index.apply(&watcher::Event::Delete(elsewhere));
        assert_eq!(names(&index), ["agent-v1"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_tokens_secrets_come_back_sorted_by_name_whatever_the_order_they_arrived_in() {
        let index = SecretIndex::default();
        for name in ["agent-v2", "agent", "agent-v1"] {
            index.apply(&watcher::Event::Apply(secret(name, "a")));
        }
        index.apply(&watcher::Event::Apply(secret("agent-v1", "b")));
        assert_eq!(names(&index), ["agent", "agent-v1", "agent-v2"]);
        let hashes = |index: &SecretIndex| -> Vec<Vec<u8>> {
            let secrets = index.secrets_of("team-a", "agent");
            secrets
                .iter()
                .map(|s| s.data.as_ref().expect("data")[TOKEN_KEY].0.clone())
                .collect()
        };
        assert_eq!(hashes(&index)[1], sha256_hex(b"b").into_bytes());
        index.apply(&watcher::Event::Delete(secret("agent-v1", "b")));
        assert_eq!(names(&index), ["agent", "agent-v2"]);
        let a = sha256_hex(b"a").into_bytes();
        assert_eq!(hashes(&index), [a.clone(), a]);
        let versions = index.resource_versions_of("team-a", "agent");
        assert_eq!(
            versions,
            [("agent".into(), Some(7)), ("agent-v2".into(), Some(7))]
        );
    }
}
