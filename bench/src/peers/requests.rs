//! What the API server served, by `"VERB resource[/subresource]"`, from the deltas of its
//! `apiserver_request_total`, reads (GET/LIST/WATCH) included.
//!
//! The counter has no client label, so a phase's count is everyone's: the operator's, the
//! bench's own (known: subtracted), and the control plane's. Counted as the operator's are
//! its own API groups and the built-in resources either operator reads or writes (Secrets,
//! Events, ConfigMaps, Pods, Namespaces, and the workload kinds tokenwarden watches for its
//! consumers); the rest is `background`: the non-resource paths (discovery, /metrics),
//! leases (kube-controller-manager's and the API server's renewals; neither operator runs
//! leader election here), endpoints, services (the API server's own repair loops), other
//! operators' CRDs and the other built-in kinds (kube-controller-manager's garbage collector
//! and quota informers watch every resource and re-WATCH each every 5 to 10 minutes). Their
//! re-WATCHes of the counted resources stay mixed in: a few per phase.
//! A WATCH is counted by the API server when it ends, not when it starts.

use std::collections::BTreeMap;

pub type ByKind = BTreeMap<String, u64>;

/// Counts as served so far, by (API group, kind).
pub type Raw = BTreeMap<(String, String), u64>;

/// A phase's requests: those an operator may have sent, and the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    pub counted: ByKind,
    pub background: ByKind,
}

/// The verbs that change state (`APPLY` is a server-side apply).
pub const MUTATING: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Whether requests on `group`/`resource` count as the operator's, whose own API groups
/// `own_group` recognises.
pub fn counted(own_group: fn(&str) -> bool, group: &str, resource: &str) -> bool {
    match group {
        "" => matches!(
            resource,
            "secrets" | "events" | "configmaps" | "pods" | "namespaces"
        ),
        "apps" => matches!(resource, "deployments" | "statefulsets" | "daemonsets"),
        "batch" => matches!(resource, "jobs" | "cronjobs"),
        "events.k8s.io" => resource == "events",
        g => !resource.is_empty() && own_group(g),
    }
}

/// Parses a metrics page: every `apiserver_request_total` sample, summed by group and kind.
pub fn parse(page: &str) -> Raw {
    let mut raw = Raw::new();
    for sample in tokenwarden_testenv::apiserver::served(page) {
        let kind = match sample.resource.as_str() {
            "" => format!("{} (non-resource)", sample.verb),
            _ => sample.kind(),
        };
        *raw.entry((sample.group, kind)).or_insert(0) += sample.count;
    }
    raw
}

/// Splits what was served into the operator's (see [`counted`]) and the background.
pub fn split(raw: &Raw, own_group: fn(&str) -> bool) -> Requests {
    let mut requests = Requests::default();
    for ((group, kind), n) in raw {
        let resource = kind.split([' ', '/']).nth(1).unwrap_or_default();
        let resource = if kind.ends_with("(non-resource)") {
            ""
        } else {
            resource
        };
        let bucket = if counted(own_group, group, resource) {
            &mut requests.counted
        } else {
            &mut requests.background
        };
        *bucket.entry(kind.clone()).or_insert(0) += n;
    }
    requests
}

/// Everything the API server has served so far.
pub async fn snapshot(client: &kube::Client) -> Raw {
    parse(&tokenwarden_testenv::apiserver::metrics(client).await)
}

/// `after - before` per key, keys that did not change left out.
pub fn delta<K: Ord + Clone>(
    before: &BTreeMap<K, u64>,
    after: &BTreeMap<K, u64>,
) -> BTreeMap<K, u64> {
    after
        .iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `by_kind` less the bench's own requests (`own`), kind by kind, never below zero.
pub fn subtract(by_kind: &ByKind, own: &ByKind) -> ByKind {
    delta(own, by_kind)
}

pub fn total(by_kind: &ByKind) -> u64 {
    by_kind.values().sum()
}

/// The mutating requests of a by-kind count.
pub fn mutating(by_kind: &ByKind) -> u64 {
    by_kind
        .iter()
        .filter(|(kind, _)| MUTATING.iter().any(|v| kind.split(' ').next() == Some(*v)))
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="external-secrets.io",resource="externalsecrets",scope="resource",subresource="status",verb="PUT",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="generators.external-secrets.io",resource="passwords",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 9
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="endpoints",scope="resource",subresource="",verb="GET",version="v1"} 4
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="nodes",scope="cluster",subresource="",verb="WATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="replicasets",scope="cluster",subresource="",verb="WATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="cluster",subresource="",verb="WATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="tokenwarden.dev",resource="workspacetokens",scope="cluster",subresource="",verb="WATCH",version="v1alpha1"} 1
"#;

    fn kinds(pairs: &[(&str, u64)]) -> ByKind {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    fn eso_group(group: &str) -> bool {
        group == "external-secrets.io" || group.ends_with(".external-secrets.io")
    }

    fn tokenwarden_group(group: &str) -> bool {
        group == "tokenwarden.dev"
    }

    #[test]
    fn parses_every_verb_and_keeps_what_the_operator_cannot_have_sent_apart() {
        let r = split(&parse(PAGE), eso_group);
        assert_eq!(
            r.counted,
            kinds(&[
                ("LIST secrets", 2),
                ("POST secrets", 8),
                ("PUT externalsecrets/status", 5),
                ("WATCH deployments", 1),
                ("WATCH passwords", 1),
            ])
        );
        assert_eq!(
            r.background,
            kinds(&[
                ("GET (non-resource)", 9),
                ("GET endpoints", 4),
                ("PUT leases", 50),
                ("WATCH nodes", 1),
                ("WATCH replicasets", 1),
                ("WATCH workspacetokens", 1),
            ])
        );
        // The same page for tokenwarden: ESO's groups are background, its own counted.
        let r = split(&parse(PAGE), tokenwarden_group);
        assert_eq!(r.counted.get("WATCH workspacetokens"), Some(&1));
        assert_eq!(r.counted.get("WATCH passwords"), None);
        assert_eq!(r.background.get("PUT externalsecrets/status"), Some(&5));
    }

    #[test]
    fn a_label_is_matched_whole_not_as_the_tail_of_another() {
        let line =
            r#"apiserver_request_total{group="",resource="pods",subresource="log",verb="GET"} 3"#;
        let r = split(&parse(line), tokenwarden_group);
        assert_eq!(r.counted, kinds(&[("GET pods/log", 3)]));
    }

    #[test]
    fn deltas_subtract_and_sum() {
        let before = parse(PAGE);
        let after = parse(&PAGE.replace("} 7\n", "} 10\n").replace("} 5\n", "} 6\n"));
        let d = split(&delta(&before, &after), eso_group);
        assert_eq!(
            d.counted,
            kinds(&[("POST secrets", 3), ("PUT externalsecrets/status", 1)])
        );
        assert!(d.background.is_empty());
        let own = kinds(&[("POST secrets", 2), ("LIST secrets", 1)]);
        let operator = subtract(&d.counted, &own);
        assert_eq!(
            operator,
            kinds(&[("POST secrets", 1), ("PUT externalsecrets/status", 1)])
        );
        assert_eq!(total(&operator), 2);
        let reads = kinds(&[
            ("LIST secrets", 4),
            ("WATCH secrets", 1),
            ("APPLY x/status", 2),
        ]);
        assert_eq!(mutating(&reads), 2);
        assert_eq!(mutating(&d.counted), 4);
    }
}
