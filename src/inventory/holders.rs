//! Which WorkspaceTokens name each workspace, kept from the WorkspaceToken watch: a listing
//! of a workspace is judged against those alone, never by scanning every token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::WorkspaceToken;

/// A WorkspaceToken as the index holds it: `namespace/name` in one shared allocation (an
/// `ObjectRef` with its uid and resourceVersion, held twice, was 540 B a token at 10k).
type Holder = Arc<str>;

fn holder(wst: &WorkspaceToken) -> Holder {
    format!("{}/{}", wst.namespace().unwrap_or_default(), wst.name_any()).into()
}

fn object_ref(holder: &str) -> ObjectRef<WorkspaceToken> {
    let (namespace, name) = holder.split_once('/').unwrap_or(("", holder));
    ObjectRef::new(name).within(namespace)
}

#[derive(Clone, Default)]
pub struct HolderIndex {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Each workspace's name is allocated once, here, and shared by `workspace_of`.
    by_workspace: HashMap<Arc<str>, HashSet<Holder>>,
    workspace_of: HashMap<Holder, Arc<str>>,
    /// The tokens a relist has shown so far; the others go when it is done.
    relisted: Option<HashSet<Holder>>,
}

impl HolderIndex {
    pub fn apply(&self, event: &watcher::Event<WorkspaceToken>) {
        let mut state = self.inner.lock().expect("holder index");
        match event {
            watcher::Event::Init => state.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(wst) => {
                let key = state.put(holder(wst), &wst.spec.workspace_id);
                if let Some(seen) = state.relisted.as_mut() {
                    seen.insert(key);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = state.relisted.take() {
                    let gone: Vec<Holder> = (state.workspace_of.keys())
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        state.remove(&key);
                    }
                }
            }
            watcher::Event::Apply(wst) => {
                state.put(holder(wst), &wst.spec.workspace_id);
            }
            watcher::Event::Delete(wst) => state.remove(&holder(wst)),
        }
    }

    /// Whether the WorkspaceToken watch is listing (its cache still shows what it saw
    /// before).
    pub fn is_relisting(&self) -> bool {
        self.inner.lock().expect("holder index").relisted.is_some()
    }

    /// The WorkspaceTokens naming `workspace`, by namespace and name.
    pub fn of(&self, workspace: &str) -> Vec<ObjectRef<WorkspaceToken>> {
        let state = self.inner.lock().expect("holder index");
        let mut holders: Vec<&Holder> = (state.by_workspace.get(workspace))
            .map(|keys| keys.iter().collect())
            .unwrap_or_default();
        holders.sort_by_key(|h| h.split_once('/'));
        holders.into_iter().map(|h| object_ref(h)).collect()
    }
}

impl State {
    /// Files `key` under `workspace`; returns the key as the index holds it.
    fn put(&mut self, key: Holder, workspace: &str) -> Holder {
        if let Some((held, now)) = self.workspace_of.get_key_value(&key)
            && **now == *workspace
        {
            return held.clone();
        }
        self.remove(&key);
        let workspace: Arc<str> = match self.by_workspace.get_key_value(workspace) {
            Some((shared, _)) => shared.clone(),
            None => workspace.into(),
        };
        (self.by_workspace.entry(workspace.clone()))
            .or_default()
            .insert(key.clone());
        self.workspace_of.insert(key.clone(), workspace);
        key
    }

    fn remove(&mut self, key: &str) {
        let Some(workspace) = self.workspace_of.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_workspace.get_mut(&workspace) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_workspace.remove(&workspace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(ns: &str, name: &str, workspace: &str) -> WorkspaceToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "WorkspaceToken",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "workspaceId": workspace },
        }))
        .expect("WorkspaceToken")
    }

    fn names(index: &HolderIndex, workspace: &str) -> Vec<String> {
        index.of(workspace).into_iter().map(|k| k.name).collect()
    }

    #[test]
    fn a_token_is_held_under_the_workspace_it_names_now() {
        let index = HolderIndex::default();
        index.apply(&watcher::Event::Apply(token("a", "one", "ws-1")));
        index.apply(&watcher::Event::Apply(token("b", "two", "ws-1")));
        assert_eq!(names(&index, "ws-1"), ["one", "two"]);
        index.apply(&watcher::Event::Apply(token("a", "one", "ws-2")));
        assert_eq!(names(&index, "ws-1"), ["two"]);
        assert_eq!(names(&index, "ws-2"), ["one"]);
        index.apply(&watcher::Event::Delete(token("b", "two", "ws-1")));
        assert!(names(&index, "ws-1").is_empty());
    }

    #[test]
    fn a_relist_drops_the_tokens_it_no_longer_shows() {
        let index = HolderIndex::default();
        index.apply(&watcher::Event::Apply(token("a", "one", "ws-1")));
        index.apply(&watcher::Event::Apply(token("a", "gone", "ws-1")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(token("a", "one", "ws-1")));
        assert_eq!(
            names(&index, "ws-1"),
            ["gone", "one"],
            "kept until the relist is done"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "ws-1"), ["one"]);
    }
}
