//! Per-token and per-issuer series, as cert-manager has per Certificate: drawn at each
//! scrape from the caches the controller keeps anyway. Nothing is kept per series, so a token
//! or an issuer gone from the cache is gone from the next scrape, and 10k tokens cost memory
//! only while a scrape renders them.

use std::fmt::{self, Debug};
use std::sync::{Arc, OnceLock};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::api::{IssuerKind, IssuerStatus, VersionState, WorkspaceToken};
use crate::contract::{DEGRADED, READY, true_condition};
use crate::issuer::caches::IssuerCaches;
use crate::token_cache::CachedToken;

/// What the series of one WorkspaceToken say.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenFacts {
    pub namespace: String,
    pub name: String,
    pub workspace_id: String,
    /// The current version, if one was issued.
    pub version: Option<u32>,
    /// `local`, or the issuer: `TokenIssuer/NAMESPACE/NAME`, `ClusterTokenIssuer/NAME`.
    pub issuer: String,
    pub ready: bool,
    /// The Degraded condition's reason while it is True (`IssuerTimeout`, ...).
    pub degraded: Option<String>,
    /// Unix seconds; none while suspended (nothing is scheduled) or before the first issue.
    pub next_rotation: Option<i64>,
    pub last_rotation: Option<i64>,
    /// Versions in `Retiring`.
    pub retiring: usize,
    /// Retiring versions whose revocation a `holdUntil` condition holds past its gracePeriod.
    pub held: usize,
    /// Issuer tokens of the workspace that no WorkspaceToken holds (`status.unmanagedTokens`).
    pub unmanaged: usize,
}

/// What the series of one issuer say.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuerFacts {
    pub kind: IssuerKind,
    /// Empty for a ClusterTokenIssuer.
    pub namespace: String,
    pub name: String,
    pub ready: bool,
}

/// Everything one scrape renders.
#[derive(Default)]
pub struct Snapshot {
    pub tokens: Vec<TokenFacts>,
    pub issuers: Vec<IssuerFacts>,
}

/// The facts of `wst` as its status and spec say them.
pub fn facts(wst: &WorkspaceToken) -> TokenFacts {
    let status = wst.status.as_ref();
    let condition = |type_: &str| status.and_then(|s| true_condition(&s.conditions, type_));
    let versions = || status.iter().flat_map(|s| &s.versions);
    let retiring = || versions().filter(|v| v.state == VersionState::Retiring);
    let seconds = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.as_second())
    };
    let namespace = wst.namespace().unwrap_or_default();
    let issuer = match &wst.spec.issuer_ref {
        None => "local".to_string(),
        Some(r) if r.kind == IssuerKind::TokenIssuer => {
            format!("TokenIssuer/{namespace}/{}", r.name)
        }
        Some(r) => format!("{}/{}", r.kind.as_str(), r.name),
    };
    let suspended = wst.spec.suspend;
    TokenFacts {
        namespace,
        name: wst.name_any(),
        workspace_id: wst.spec.workspace_id.clone(),
        version: status.and_then(|s| s.current_version),
        issuer,
        ready: condition(READY).is_some(),
        degraded: condition(DEGRADED).map(|c| c.reason.clone()),
        next_rotation: (!suspended)
            .then(|| seconds(status.and_then(|s| s.next_rotation_time.as_ref())))
            .flatten(),
        last_rotation: seconds(status.and_then(|s| s.last_rotation_time.as_ref())),
        retiring: retiring().count(),
        held: retiring().filter(|v| !v.retire_held_by.is_empty()).count(),
        unmanaged: status.map_or(0, |s| s.unmanaged_tokens.len()),
    }
}

/// Every token and issuer as the controller's caches show them now.
pub fn snapshot(tokens: &Store<CachedToken>, issuers: &IssuerCaches) -> Snapshot {
    let ready = |status: Option<&IssuerStatus>| {
        status.is_some_and(|s| true_condition(&s.conditions, READY).is_some())
    };
    let namespaced = issuers.namespaced.state().into_iter().map(|i| IssuerFacts {
        kind: IssuerKind::TokenIssuer,
        namespace: i.namespace().unwrap_or_default(),
        name: i.name_any(),
        ready: ready(i.status.as_ref()),
    });
    let cluster = issuers.cluster.state().into_iter().map(|i| IssuerFacts {
        kind: IssuerKind::ClusterTokenIssuer,
        namespace: String::new(),
        name: i.name_any(),
        ready: ready(i.status.as_ref()),
    });
    Snapshot {
        tokens: (tokens.state().iter())
            .map(|t| facts(&t.unpack()))
            .collect(),
        issuers: namespaced.chain(cluster).collect(),
    }
}

/// Where a scrape draws its snapshot from.
type Source = Box<dyn Fn() -> Snapshot + Send + Sync>;

/// The collector of the per-token and per-issuer series: empty until the controller says
/// where they are drawn from ([`PerToken::draw_from`]).
#[derive(Clone, Default)]
pub struct PerToken(Arc<OnceLock<Source>>);

impl PerToken {
    /// Draws every later scrape's series from `source` (the first call wins).
    pub fn draw_from(&self, source: impl Fn() -> Snapshot + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(source));
    }
}

impl Debug for PerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerToken")
    }
}

type Of<'a> = [(&'static str, &'a str); 2];

fn of(t: &TokenFacts) -> Of<'_> {
    [("namespace", &t.namespace), ("name", &t.name)]
}

impl Collector for PerToken {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let Snapshot { tokens, issuers } = source();
        let info = tokens.iter().map(|t| {
            let version = t.version.map(|v| v.to_string()).unwrap_or_default();
            let labels = [
                ("namespace", t.namespace.clone()),
                ("name", t.name.clone()),
                ("workspace_id", t.workspace_id.clone()),
                ("version", version),
                ("issuer", t.issuer.clone()),
            ];
            (labels, 1)
        });
        let help = "1 per WorkspaceToken, its identity in labels (version: the current one)";
        gauges(&mut encoder, "token_info", help, None, info)?;
        let per_token = |value: fn(&TokenFacts) -> Option<i64>| {
            tokens.iter().filter_map(move |t| Some((of(t), value(t)?)))
        };
        let help = "1 while the WorkspaceToken is Ready";
        let ready = per_token(|t| Some(i64::from(t.ready)));
        gauges(&mut encoder, "token_ready", help, None, ready)?;
        let help = "1 while the WorkspaceToken is Degraded (it serves its token, a step fails), \
                    with the condition's reason (Issuer*: the platform's calls fail)";
        let degraded = tokens.iter().map(|t| {
            let reason = t.degraded.as_deref().unwrap_or_default();
            let labels = [
                ("namespace", &*t.namespace),
                ("name", &*t.name),
                ("reason", reason),
            ];
            (labels, i64::from(t.degraded.is_some()))
        });
        gauges(&mut encoder, "token_degraded", help, None, degraded)?;
        let seconds = Some(&Unit::Seconds);
        let help = "When the next scheduled rotation is due (Unix time; none while suspended)";
        let next = per_token(|t| t.next_rotation);
        gauges(
            &mut encoder,
            "token_next_rotation_timestamp",
            help,
            seconds,
            next,
        )?;
        let help = "When the WorkspaceToken last rotated (Unix time)";
        let last = per_token(|t| t.last_rotation);
        gauges(
            &mut encoder,
            "token_last_rotation_timestamp",
            help,
            seconds,
            last,
        )?;
        let help = "Versions Retiring: replaced, still valid, revoked when their hold ends";
        let retiring = per_token(|t| Some(t.retiring as i64));
        gauges(
            &mut encoder,
            "token_retiring_versions",
            help,
            None,
            retiring,
        )?;
        let help = "Retiring versions kept past gracePeriod by a holdUntil condition";
        let held = per_token(|t| Some(t.held as i64));
        gauges(&mut encoder, "token_held_versions", help, None, held)?;
        let help = "Live issuer tokens of the workspace that no WorkspaceToken holds";
        let unmanaged = per_token(|t| Some(t.unmanaged as i64));
        gauges(
            &mut encoder,
            "token_unmanaged_tokens",
            help,
            None,
            unmanaged,
        )?;
        let issuers = issuers.iter().map(|i| {
            let labels = [
                ("kind", i.kind.as_str().to_string()),
                ("namespace", i.namespace.clone()),
                ("name", i.name.clone()),
            ];
            (labels, i64::from(i.ready))
        });
        let help = "1 while the TokenIssuer or ClusterTokenIssuer is Ready";
        gauges(&mut encoder, "issuer_ready", help, None, issuers)
    }
}

/// One gauge family, one series per row.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl Iterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Mutex;

    fn token(status: serde_json::Value) -> WorkspaceToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "agent", "namespace": "team-a" },
            "spec": { "workspaceId": "ws-1", "issuerRef": { "name": "platform" } },
            "status": status,
        }))
        .expect("a WorkspaceToken")
    }

    fn rotated_with_a_held_version() -> WorkspaceToken {
        token(serde_json::json!({
            "currentVersion": 3,
            "lastRotationTime": "2026-12-01T00:00:00Z",
            "nextRotationTime": "2026-12-31T00:00:00Z",
            "versions": [
                { "version": 3, "secretName": "agent-v3", "state": "Active" },
                { "version": 2, "secretName": "agent-v2", "state": "Retiring",
                  "retireHeldBy": ["Deployment/agent 2/3 updated"] },
            ],
            "unmanagedTokens": [ { "prefix": "abc12345", "createdAt": "2026-11-01T00:00:00Z",
                                   "unmanagedSince": "2026-11-01T00:00:00Z" } ],
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "Active", "message": "",
                  "lastTransitionTime": "2026-12-01T00:00:00Z" },
                { "type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
                  "lastTransitionTime": "2026-12-01T00:00:00Z" },
            ],
        }))
    }

    #[test]
    fn a_tokens_facts_are_what_its_status_says() {
        let facts = facts(&rotated_with_a_held_version());
        assert_eq!(
            facts,
            TokenFacts {
                namespace: "team-a".into(),
                name: "agent".into(),
                workspace_id: "ws-1".into(),
                version: Some(3),
                issuer: "TokenIssuer/team-a/platform".into(),
                ready: true,
                degraded: None,
                next_rotation: Some(1_798_675_200),
                last_rotation: Some(1_796_083_200),
                retiring: 1,
                held: 1,
                unmanaged: 1,
            }
        );
    }

    #[test]
    fn a_suspended_token_has_no_next_rotation_and_a_new_one_no_version() {
        let mut suspended = rotated_with_a_held_version();
        suspended.spec.suspend = true;
        assert_eq!(facts(&suspended).next_rotation, None);
        let new = facts(&token(serde_json::json!({})));
        assert_eq!(
            (new.version, new.ready, new.last_rotation),
            (None, false, None)
        );
    }

    #[test]
    fn each_scrape_renders_the_tokens_there_are_and_none_that_went() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("tokenwarden_token_info{"));
        let tokens = Arc::new(Mutex::new(vec![facts(&rotated_with_a_held_version())]));
        let issuers = vec![IssuerFacts {
            kind: IssuerKind::ClusterTokenIssuer,
            namespace: String::new(),
            name: "shared".into(),
            ready: false,
        }];
        let seen = tokens.clone();
        metrics.per_token().draw_from(move || Snapshot {
            tokens: seen.lock().unwrap().clone(),
            issuers: issuers.clone(),
        });
        let page = metrics.render();
        let of = r#"{namespace="team-a",name="agent"}"#;
        for line in [
            r#"tokenwarden_token_info{namespace="team-a",name="agent",workspace_id="ws-1",version="3",issuer="TokenIssuer/team-a/platform"} 1"#.to_string(),
            format!("tokenwarden_token_ready{of} 1"),
            r#"tokenwarden_token_degraded{namespace="team-a",name="agent",reason=""} 0"#.into(),
            format!("tokenwarden_token_next_rotation_timestamp_seconds{of} 1798675200"),
            format!("tokenwarden_token_last_rotation_timestamp_seconds{of} 1796083200"),
            format!("tokenwarden_token_retiring_versions{of} 1"),
            format!("tokenwarden_token_held_versions{of} 1"),
            format!("tokenwarden_token_unmanaged_tokens{of} 1"),
            r#"tokenwarden_issuer_ready{kind="ClusterTokenIssuer",namespace="",name="shared"} 0"#.into(),
            "# UNIT tokenwarden_token_next_rotation_timestamp_seconds seconds".into(),
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in:\n{page}");
        }
        tokens.lock().unwrap().clear();
        let page = metrics.render();
        assert!(
            !page.contains(r#"name="agent""#),
            "the token went, its series too:\n{page}"
        );
        assert!(page.ends_with("# EOF\n"));
    }
}
