//! Which WorkspaceTokens name each workspace, kept from the WorkspaceToken watch: a listing
//! of a workspace is judged against those alone, never by scanning every token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::WorkspaceToken;

type Key = ObjectRef<WorkspaceToken>;

#[derive(Clone, Default)]
pub struct HolderIndex {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    by_workspace: HashMap<String, HashSet<Key>>,
    workspace_of: HashMap<Key, String>,
    /// The tokens a relist has shown so far; the others go when it is done.
    relisted: Option<HashSet<Key>>,
}

impl HolderIndex {
    pub fn apply(&self, event: &watcher::Event<WorkspaceToken>) {
        let mut state = self.inner.lock().expect("holder index");
        match event {
            watcher::Event::Init => state.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(wst) => {
                let key = ObjectRef::from_obj(wst);
                if let Some(seen) = state.relisted.as_mut() {
                    seen.insert(key.clone());
                }
                state.put(key, &wst.spec.workspace_id);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = state.relisted.take() {
                    let gone: Vec<Key> = (state.workspace_of.keys())
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        state.remove(&key);
                    }
                }
            }
            watcher::Event::Apply(wst) => {
                state.put(ObjectRef::from_obj(wst), &wst.spec.workspace_id)
            }
            watcher::Event::Delete(wst) => state.remove(&ObjectRef::from_obj(wst)),
        }
    }

    /// Whether the WorkspaceToken watch is listing (its cache still shows what it saw
    /// before).
    pub fn is_relisting(&self) -> bool {
        self.inner.lock().expect("holder index").relisted.is_some()
    }

    /// The WorkspaceTokens naming `workspace`.
    pub fn of(&self, workspace: &str) -> Vec<Key> {
        let state = self.inner.lock().expect("holder index");
        (state.by_workspace.get(workspace))
            .map(|keys| {
                let mut keys: Vec<Key> = keys.iter().cloned().collect();
                keys.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                keys
            })
            .unwrap_or_default()
    }
}

impl State {
    fn put(&mut self, key: Key, workspace: &str) {
        if self.workspace_of.get(&key).map(String::as_str) == Some(workspace) {
            return;
        }
        self.remove(&key);
        (self.by_workspace.entry(workspace.to_string()))
            .or_default()
            .insert(key.clone());
        self.workspace_of.insert(key, workspace.to_string());
    }

    fn remove(&mut self, key: &Key) {
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
