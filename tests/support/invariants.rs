//! What must hold for every WorkspaceToken once the operator has converged, whatever faults
//! came before: the checks the fault suites share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokenwarden::api::{VersionState, WorkspaceToken};
use tokenwarden::token::sha256_hex;

use super::{data, mutating_requests};

/// Settled: Ready, status caught up with the spec, and no version Pending or Retiring.
pub fn is_settled(w: &WorkspaceToken) -> bool {
    let Some(s) = w.status.as_ref() else {
        return false;
    };
    let ready = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let in_flight = s
        .versions
        .iter()
        .any(|v| matches!(v.state, VersionState::Pending | VersionState::Retiring));
    ready && !in_flight && s.observed_generation == w.metadata.generation
}

/// Waits until `count` WorkspaceTokens in `ns` exist and every one satisfies `done`.
pub async fn wait_all(
    api: &Api<WorkspaceToken>,
    count: usize,
    timeout: Duration,
    what: &str,
    done: impl Fn(&WorkspaceToken) -> bool,
) -> Vec<WorkspaceToken> {
    let mut last = String::new();
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                let pending: Vec<String> = list
                    .items
                    .iter()
                    .filter(|w| !done(w))
                    .map(|w| w.name_any())
                    .collect();
                if list.items.len() == count && pending.is_empty() {
                    return list.items;
                }
                last = format!(
                    "{} of {count} exist; not yet: {pending:?}",
                    list.items.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}: {last}"))
}

/// For every WorkspaceToken in `ns`: exactly one Active version and it is the current one;
/// the versions status lists are consecutive (numbers neither skip nor repeat); `S` and
/// `S-vN` hold the same token, the one status records by hash; and every version status
/// lists as live has its Secret. Returns the served token's hash per WorkspaceToken.
pub async fn assert_consistent(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let tokens = Api::<WorkspaceToken>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list WorkspaceTokens")
        .items;
    let secrets: BTreeMap<String, Secret> = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let token_hash = |name: &str| {
        secrets
            .get(name)
            .and_then(|s| data(s, "token"))
            .map(|t| sha256_hex(t.as_bytes()))
    };
    let mut served = BTreeMap::new();
    for w in &tokens {
        let name = w.name_any();
        let status = w
            .status
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: status"));
        let current = status
            .current_version
            .unwrap_or_else(|| panic!("{name}: a current version"));
        let active: Vec<u32> = status
            .versions
            .iter()
            .filter(|v| v.state == VersionState::Active)
            .map(|v| v.version)
            .collect();
        assert_eq!(active, [current], "{name}: exactly one Active version");
        let numbers: Vec<u32> = status.versions.iter().map(|v| v.version).collect();
        let consecutive: Vec<u32> = (0..numbers.len() as u32).map(|i| current - i).collect();
        assert_eq!(
            numbers, consecutive,
            "{name}: versions newest first, none skipped or repeated"
        );

        let mounted = w.spec.secret_name(&name).to_string();
        let versioned = format!("{mounted}-v{current}");
        let in_s =
            token_hash(&mounted).unwrap_or_else(|| panic!("{name}: {mounted} holds a token"));
        let in_v =
            token_hash(&versioned).unwrap_or_else(|| panic!("{name}: {versioned} holds a token"));
        assert_eq!(in_s, in_v, "{name}: {mounted} serves {versioned}");
        assert_eq!(
            status.token_sha256.as_deref(),
            Some(in_s.as_str()),
            "{name}: status hash"
        );
        for v in status
            .versions
            .iter()
            .filter(|v| v.state != VersionState::Revoked)
        {
            assert!(
                secrets.contains_key(&v.secret_name),
                "{name}: live version v{} has its Secret {}",
                v.version,
                v.secret_name
            );
        }
        served.insert(name, in_s);
    }
    served
}

/// Calls a rotation storm off: every WorkspaceToken in `api`'s namespace gets `every: 24h`, a
/// schedule change, which rotates nothing. Whatever a pass left half done still finishes.
pub async fn call_off_rotations(api: &Api<WorkspaceToken>) {
    let calm = serde_json::json!({ "spec": { "rotation": { "every": "24h" } } });
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list WorkspaceTokens")
        .items
        .iter()
        .map(|w| w.name_any())
        .collect();
    for name in names {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&calm))
            .await
            .expect("call the storm off");
    }
}

/// Calls the rotations off, waits until the `count` WorkspaceTokens of `ns` have settled, and
/// asserts [`assert_consistent`] over them. Returns them and the served token hash of each.
pub async fn call_off_and_settle(
    client: &Client,
    ns: &str,
    count: usize,
    timeout: Duration,
) -> (Vec<WorkspaceToken>, BTreeMap<String, String>) {
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), ns);
    call_off_rotations(&api).await;
    let settled = wait_all(&api, count, timeout, "every token settled", is_settled).await;
    let served = assert_consistent(client, ns).await;
    (settled, served)
}

/// No create, update, patch, apply or delete on Secrets or WorkspaceTokens for `window`:
/// a converged operator stays quiet.
pub async fn assert_quiet(client: &Client, window: Duration) {
    let before = mutating_requests(client).await;
    tokio::time::sleep(window).await;
    let after = mutating_requests(client).await;
    assert_eq!(
        after - before,
        0,
        "writes to Secrets or WorkspaceTokens in {window:?} after convergence"
    );
}

/// Every token hash each versioned Secret (`<name>-v<N>`) ever held, from a watch.
#[derive(Default)]
pub struct VersionLedger(Mutex<BTreeMap<String, BTreeSet<String>>>);

impl VersionLedger {
    /// Starts recording every Secret of `ns` from a watch, for as long as the test runs.
    pub fn watch(client: &Client, ns: &str) -> Arc<VersionLedger> {
        let ledger = Arc::new(VersionLedger::default());
        let feed = ledger.clone();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        tokio::spawn(
            watcher(secrets, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(move |s| {
                    if let Ok(s) = s {
                        feed.record(&s);
                    }
                    futures::future::ready(())
                }),
        );
        ledger
    }

    fn record(&self, secret: &Secret) {
        let name = secret.name_any();
        let versioned = name
            .split_once("-v")
            .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
        if let (true, Some(token)) = (versioned, data(secret, "token")) {
            let mut seen = self.0.lock().unwrap();
            seen.entry(name)
                .or_default()
                .insert(sha256_hex(token.as_bytes()));
        }
    }

    /// [`VersionLedger::check`] for every token at its current version; returns the highest.
    pub fn check_every(&self, tokens: &[WorkspaceToken]) -> u32 {
        let mut highest = 0;
        for w in tokens {
            let current = w.status.as_ref().and_then(|s| s.current_version).unwrap();
            self.check(&w.name_any(), current);
            highest = highest.max(current);
        }
        highest
    }

    /// Panics unless each versioned Secret held one token, and `token`'s versions ever written
    /// are exactly 1..=`current`.
    pub fn check(&self, token: &str, current: u32) {
        let seen = self.0.lock().unwrap();
        let mut versions = Vec::new();
        for (name, hashes) in seen.iter() {
            let Some((owner, n)) = name.split_once("-v") else {
                continue;
            };
            if owner == token {
                assert_eq!(
                    hashes.len(),
                    1,
                    "{name} held {} different tokens",
                    hashes.len()
                );
                versions.push(n.parse::<u32>().unwrap());
            }
        }
        versions.sort();
        let expected: Vec<u32> = (1..=current).collect();
        assert_eq!(
            versions, expected,
            "{token}: versions written, none skipped or repeated"
        );
    }
}
