//! What each kind of request the operator sends costs the API server, measured in this run:
//! `sample` requests of one kind at a time, at the operator's concurrency, on the twin CRD
//! (`replay.rs`) so the operator never sees them. A kind's cost is in Secret-create units:
//! the Secret-create rate over its rate. `api_cost_per_token` weighs the kinds convergence
//! actually sent per token (the user's create included) by their costs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;

use crate::cluster::bulk;
use crate::replay::{self, GROUP};

/// Untimed WorkspaceToken creates before the timing starts.
const WARM_UP: usize = 200;

/// The unit every cost is expressed in.
pub const UNIT: &str = "POST secrets";

/// Requests per second of each kind, timed alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestCosts {
    pub sample: usize,
    pub per_s: BTreeMap<String, f64>,
}

/// A token's cost at the API server, from what convergence sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TokenCost {
    /// Secret-create units per token.
    pub units: f64,
    /// Each kind's share: requests per token x its cost.
    pub by_kind: BTreeMap<String, f64>,
    /// Kinds convergence sent that were not timed: counted at the dearest timed cost.
    pub untimed: Vec<String>,
}

impl RequestCosts {
    /// A kind's cost in Secret-create units.
    pub fn units(&self, kind: &str) -> Option<f64> {
        Some(self.per_s.get(UNIT)? / self.per_s.get(kind)?)
    }

    /// Weighs `by_kind` (requests during convergence of `n` tokens) by the timed costs.
    pub fn per_token(&self, by_kind: &BTreeMap<String, u64>, n: usize) -> TokenCost {
        let dearest = (self.per_s.keys())
            .filter_map(|k| self.units(k))
            .fold(1.0, f64::max);
        let mut cost = TokenCost::default();
        for (kind, count) in by_kind {
            let units = self.units(kind).unwrap_or_else(|| {
                cost.untimed.push(kind.clone());
                dearest
            });
            let share = *count as f64 / n as f64 * units;
            cost.by_kind.insert(kind.clone(), share);
            cost.units += share;
        }
        cost
    }
}

/// Times each kind alone: Secret creates, WorkspaceToken creates, finalizer patches, status
/// applies and Event creates, `sample` of each, in namespace `ns`.
pub async fn measure(client: &Client, ns: &str, sample: usize, concurrency: usize) -> RequestCosts {
    replay::install_twin(client).await;
    let tokens: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &replay::twin_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut costs = RequestCosts {
        sample,
        per_s: BTreeMap::new(),
    };
    let mut timed = |kind: &str, took: std::time::Duration| {
        let rate = sample as f64 / took.as_secs_f64();
        eprintln!("bench: {kind:<30} {rate:>7.0}/s alone");
        costs.per_s.insert(kind.to_string(), rate);
    };
    let name = |i: usize| format!("cost-{i:06}");
    let owner = json!([]);
    // Untimed first: the first writes to a CRD just established are slow for a while.
    bulk(WARM_UP, concurrency, |i| {
        let object = replay::twin_object(&format!("warm-{i:06}"));
        let tokens = tokens.clone();
        async move { tokens.create(&PostParams::default(), &object).await }
    })
    .await;

    let took = bulk(sample, concurrency, |i| {
        let secret = replay::token_secret(&name(i), &name(i), Some(1), owner.clone());
        let secrets = secrets.clone();
        async move { secrets.create(&PostParams::default(), &secret).await }
    })
    .await;
    timed(UNIT, took);

    let took = bulk(sample, concurrency, |i| {
        let object = replay::twin_object(&name(i));
        let tokens = tokens.clone();
        async move { tokens.create(&PostParams::default(), &object).await }
    })
    .await;
    timed("POST workspacetokens", took);

    let took = bulk(sample, concurrency, |i| {
        let patch = json!({ "metadata": { "finalizers": ["tokenwarden.dev/cleanup"] } });
        let tokens = tokens.clone();
        async move {
            (tokens.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch))).await
        }
    })
    .await;
    timed("PATCH workspacetokens", took);

    let took = bulk(sample, concurrency, |i| {
        let status = json!({ "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "WorkspaceToken",
            "status": replay::twin_status(&name(i)) });
        let (tokens, apply) = (tokens.clone(), PatchParams::apply("tokenwarden").force());
        async move {
            tokens
                .patch_status(&name(i), &apply, &Patch::Apply(&status))
                .await
        }
    })
    .await;
    timed("APPLY workspacetokens/status", took);

    let took = bulk(sample, concurrency, |i| {
        let event = replay::twin_event(&name(i), "0", Some(ns), "Minted", "Mint");
        let events = events.clone();
        async move { events.create(&PostParams::default(), &event).await }
    })
    .await;
    timed("POST events", took);
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs() -> RequestCosts {
        let per_s = [
            (UNIT, 2000.0),
            ("POST workspacetokens", 1000.0),
            ("POST events", 2500.0),
        ];
        RequestCosts {
            sample: 100,
            per_s: per_s.map(|(k, v)| (k.to_string(), v)).into_iter().collect(),
        }
    }

    #[test]
    fn a_kind_costs_the_secret_create_rate_over_its_own() {
        assert_eq!(costs().units("POST workspacetokens"), Some(2.0));
        assert_eq!(costs().units("POST events"), Some(0.8));
        assert_eq!(costs().units("DELETE secrets"), None);
    }

    #[test]
    fn a_token_costs_what_convergence_sent_per_token_weighed_by_kind() {
        // 10 tokens: a create each, two Secrets each, one Event each.
        let sent = [
            (UNIT, 20),
            ("POST workspacetokens", 10),
            ("POST events", 10),
        ];
        let sent = sent.map(|(k, v)| (k.to_string(), v)).into_iter().collect();
        let cost = costs().per_token(&sent, 10);
        assert!((cost.units - (2.0 + 2.0 + 0.8)).abs() < 1e-9, "{cost:?}");
        assert!(cost.untimed.is_empty());
    }

    #[test]
    fn an_untimed_kind_is_counted_at_the_dearest_timed_cost_and_named() {
        let sent = [("PATCH secrets".to_string(), 10)].into_iter().collect();
        let cost = costs().per_token(&sent, 10);
        assert_eq!(cost.untimed, ["PATCH secrets"]);
        assert!((cost.units - 2.0).abs() < 1e-9);
    }
}
