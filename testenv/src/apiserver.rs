//! Figures from the API server's own `/metrics`: what it served, not what a client believes
//! it sent.

/// The API server's metrics page.
pub async fn metrics(client: &kube::Client) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("GET /metrics request");
    client
        .request_text(request)
        .await
        .expect("API server /metrics")
}

/// The verbs that change state, as `apiserver_request_total` names them: a server-side apply
/// is `APPLY`, not `PATCH`.
pub const MUTATING_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Mutating requests (POST/PUT/PATCH/APPLY/DELETE/DELETECOLLECTION) served on any of
/// `resources`, summed over every label combination of `apiserver_request_total`.
pub fn mutating_requests(metrics: &str, resources: &[&str]) -> u64 {
    mutating_requests_by_kind(metrics, resources).values().sum()
}

/// Mutating requests on `resources` by `"VERB resource[/subresource]"`: where writes went.
pub fn mutating_requests_by_kind(
    metrics: &str,
    resources: &[&str],
) -> std::collections::BTreeMap<String, u64> {
    requests_by_kind(metrics, resources, &MUTATING_VERBS)
}

/// The verbs that read.
pub const READ_VERBS: [&str; 3] = ["GET", "LIST", "WATCH"];

/// One sample of `apiserver_request_total`: requests served of one verb on one kind (the
/// counter has no client label: everyone's requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub verb: String,
    pub group: String,
    /// Empty for the non-resource paths (discovery, /metrics).
    pub resource: String,
    pub subresource: String,
    pub count: u64,
}

impl Served {
    /// `"VERB resource[/subresource]"`.
    pub fn kind(&self) -> String {
        match self.subresource.as_str() {
            "" => format!("{} {}", self.verb, self.resource),
            sub => format!("{} {}/{sub}", self.verb, self.resource),
        }
    }
}

/// Every `apiserver_request_total` sample of a metrics page.
pub fn served(metrics: &str) -> impl Iterator<Item = Served> + '_ {
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|line| {
            Some(Served {
                verb: label(line, "verb")?,
                group: label(line, "group")?,
                resource: label(line, "resource")?,
                subresource: label(line, "subresource").unwrap_or_default(),
                count: line.rsplit(' ').next()?.parse::<f64>().ok()? as u64,
            })
        })
}

/// The value of label `name` in one sample line (`subresource` is not `resource`).
fn label(line: &str, name: &str) -> Option<String> {
    let start = line
        .find(&format!(",{name}=\""))
        .or_else(|| line.find(&format!("{{{name}=\"")))?
        + name.len()
        + 3;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// Requests with one of `verbs` on `resources` by `"VERB resource[/subresource]"`.
pub fn requests_by_kind(
    metrics: &str,
    resources: &[&str],
    verbs: &[&str],
) -> std::collections::BTreeMap<String, u64> {
    let mut by_kind = std::collections::BTreeMap::new();
    for sample in served(metrics) {
        if verbs.contains(&sample.verb.as_str()) && resources.contains(&sample.resource.as_str()) {
            *by_kind.entry(sample.kind()).or_insert(0) += sample.count;
        }
    }
    by_kind
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 100
apiserver_request_total{code="200",component="apiserver",dry_run="",group="tokenwarden.dev",resource="workspacetokens",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="tokenwarden.dev",resource="workspacetokens",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 50
"#;

    #[test]
    fn reads_each_label_by_its_whole_name_whatever_the_order() {
        let line = r#"apiserver_request_total{subresource="status",resource="workspacetokens",group="tokenwarden.dev",verb="APPLY"} 4"#;
        let samples: Vec<Served> = served(line).collect();
        let want = Served {
            verb: "APPLY".into(),
            group: "tokenwarden.dev".into(),
            resource: "workspacetokens".into(),
            subresource: "status".into(),
            count: 4,
        };
        assert_eq!(samples, [want]);
        assert_eq!(samples[0].kind(), "APPLY workspacetokens/status");
    }

    #[test]
    fn counts_only_mutating_verbs_on_the_named_resources_server_side_apply_included() {
        assert_eq!(mutating_requests(PAGE, &["secrets"]), 7);
        assert_eq!(mutating_requests(PAGE, &["secrets", "workspacetokens"]), 12);
        assert_eq!(mutating_requests(PAGE, &["leases"]), 50);
        assert_eq!(mutating_requests(PAGE, &["events"]), 0);
    }

    #[test]
    fn breaks_mutating_requests_down_by_verb_and_subresource() {
        let by_kind = mutating_requests_by_kind(PAGE, &["secrets", "workspacetokens"]);
        let want = [
            ("APPLY workspacetokens/status", 2),
            ("PATCH workspacetokens/status", 3),
            ("POST secrets", 7),
        ];
        let want = want.map(|(k, v)| (k.to_string(), v)).into_iter().collect();
        assert_eq!(by_kind, want);
    }

    #[test]
    fn breaks_reads_down_alike() {
        let by_kind = requests_by_kind(PAGE, &["secrets"], &READ_VERBS);
        assert_eq!(by_kind, [("GET secrets".to_string(), 100)].into());
    }
}
