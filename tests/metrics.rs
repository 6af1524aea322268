//! The operator's /metrics as Prometheus scrapes it, against a real API server and the
//! reference platform: per-token and per-issuer series that follow each object and go with
//! it, Warnings counted by reason, platform call latency, and every series the chart's alerts
//! and dashboard read is one the operator serves.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::platform::{ISSUER, TestPlatform, merge};
use support::*;
use tokenwarden::api::WorkspaceToken;

const WAIT: Duration = Duration::from_secs(45);

/// The operator's page now.
async fn scrape() -> String {
    let operator = shared_operator().await;
    let page = || async { operator.get("/metrics").map(|(_, body)| body) };
    eventually(WAIT, "the metrics page", page).await
}

/// The value of the series `name{labels}` (labels exactly as rendered), if served.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the page serves `series` with a value `want` accepts; returns the page.
async fn serves(series: &str, want: impl Fn(f64) -> bool) -> String {
    eventually(WAIT, series, || async {
        let page = scrape().await;
        value(&page, series).filter(|v| want(*v)).map(|_| page)
    })
    .await
}

fn epoch(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> f64 {
    time.expect("a time in status").0.as_second() as f64
}

/// A namespace with a TokenIssuer of a fresh reference platform that has `workspace`.
async fn with_a_platform(
    prefix: &str,
    workspace: &str,
) -> (kube::Client, String, Api<WorkspaceToken>, TestPlatform) {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, prefix).await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let platform = TestPlatform::start().await;
    platform.create_workspace(workspace).await;
    platform.admin_secret(&client, &ns, &platform.admin).await;
    (client, ns, api, platform)
}

#[tokio::test]
async fn per_token_series_follow_each_token_through_a_rotation_and_go_with_it() {
    let (client, ns, api, platform) = with_a_platform("metrics", "ws-m").await;
    let every = json!({ "rotation": { "every": "720h", "gracePeriod": "1s" } });
    create(&api, "t", platform.spec("ws-m", every.clone())).await;
    let mut local = json!({ "workspaceId": "ws-local" });
    merge(&mut local, every);
    create(&api, "local", local).await;
    let t = wait_version(&api, "t", 1, WAIT).await;
    wait_version(&api, "local", 1, WAIT).await;

    let of = |name: &str| format!(r#"{{namespace="{ns}",name="{name}"}}"#);
    let info = |name: &str, ws: &str, version: u32, issuer: &str| {
        format!(
            r#"tokenwarden_token_info{{namespace="{ns}",name="{name}",workspace_id="{ws}",version="{version}",issuer="{issuer}"}}"#
        )
    };
    let issuer = format!("TokenIssuer/{ns}/{ISSUER}");
    serves(&info("t", "ws-m", 1, &issuer), |v| v == 1.0).await;
    serves(&info("local", "ws-local", 1, "local"), |v| v == 1.0).await;
    let page = serves(&format!("tokenwarden_token_ready{}", of("t")), |v| v == 1.0).await;
    let status = t.status.as_ref().unwrap();
    let next = value(
        &page,
        &format!(
            "tokenwarden_token_next_rotation_timestamp_seconds{}",
            of("t")
        ),
    );
    assert_eq!(next, Some(epoch(status.next_rotation_time.as_ref())));
    let last = value(
        &page,
        &format!(
            "tokenwarden_token_last_rotation_timestamp_seconds{}",
            of("t")
        ),
    );
    assert_eq!(last, Some(epoch(status.last_rotation_time.as_ref())));
    let degraded = format!(r#"tokenwarden_token_degraded{{namespace="{ns}",name="t",reason=""}}"#);
    assert_eq!(value(&page, &degraded), Some(0.0));
    let ready_issuer = format!(
        r#"tokenwarden_issuer_ready{{kind="TokenIssuer",namespace="{ns}",name="{ISSUER}"}}"#
    );
    assert_eq!(value(&page, &ready_issuer), Some(1.0));
    let mints = r#"tokenwarden_issuer_request_duration_seconds_count{operation="mint"}"#;
    assert!(
        value(&page, mints).is_some_and(|n| n >= 1.0),
        "mint latency observed"
    );

    request_rotation(&api, "t", "metrics").await;
    wait_version(&api, "t", 2, WAIT).await;
    let page = serves(&info("t", "ws-m", 2, &issuer), |v| v == 1.0).await;
    assert_eq!(
        value(&page, &info("t", "ws-m", 1, &issuer)),
        None,
        "one info series per token"
    );

    api.delete("local", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "local's series gone", || async {
        let page = scrape().await;
        let mine = format!(r#"namespace="{ns}",name="local""#);
        (!page.contains(&mine)).then_some(())
    })
    .await;
    dump(&client, &ns, Some(shared_operator().await)).await;
}

#[tokio::test]
async fn a_warning_is_counted_by_reason_whether_or_not_its_event_is_posted() {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "metrics-warn").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let series = r#"tokenwarden_warnings_total{reason="SecretConflict"}"#;
    let before = value(&scrape().await, series).unwrap_or(0.0);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": { "name": "taken" }, "stringData": { "token": "not-ours" }
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create(&api, "taken", json!({ "workspaceId": "ws-taken" })).await;
    serves(series, |v| v > before).await;
    dump(&client, &ns, Some(shared_operator().await)).await;
}

/// Every `tokenwarden_*` name in `text` (a rule file, a dashboard).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tokenwarden_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn every_series_the_alerts_and_the_dashboard_read_is_served() {
    let (client, ns, api, platform) = with_a_platform("metrics-names", "ws-n").await;
    // Scheduled, so that it has a next rotation (this test may run before the others).
    let every = json!({ "rotation": { "every": "720h" } });
    create(&api, "t", platform.spec("ws-n", every)).await;
    wait_version(&api, "t", 1, WAIT).await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tokenwarden/files");
    let read = |file: &str| std::fs::read_to_string(format!("{chart}/{file}")).expect(file);
    let wanted = names_in(&(read("alerts.yaml") + &read("dashboard.json")));
    assert!(wanted.len() > 10, "the names were found: {wanted:?}");
    let is_served = |page: &str, name: &str| {
        (page.lines())
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    let mut missing = Vec::new();
    for _ in 0..90 {
        let page = scrape().await;
        missing = (wanted.iter()).filter(|n| !is_served(&page, n)).collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "read by the alerts or the dashboard, never served: {missing:?}"
    );
    dump(&client, &ns, Some(shared_operator().await)).await;
}
