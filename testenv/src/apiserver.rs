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

/// Requests with one of `verbs` on `resources` by `"VERB resource[/subresource]"`.
pub fn requests_by_kind(
    metrics: &str,
    resources: &[&str],
    verbs: &[&str],
) -> std::collections::BTreeMap<String, u64> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_string())
    };
    let mut by_kind = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (Some(verb), Some(resource)) = (label(line, "verb"), label(line, "resource")) else {
            continue;
        };
        if !verbs.contains(&verb.as_str()) || !resources.contains(&resource.as_str()) {
            continue;
        }
        let subresource = label(line, "subresource").unwrap_or_default();
        let kind = match subresource.as_str() {
            "" => format!("{verb} {resource}"),
            sub => format!("{verb} {resource}/{sub}"),
        };
        let count = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        *by_kind.entry(kind).or_insert(0) += count;
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
