//! The chart's alerts (charts/tokenwarden/files/alerts.yaml) and dashboard
//! (files/dashboard.json) under promtool, built from the Go module proxy: every alert fires in
//! one unit test and stays silent in another, every dashboard query is evaluated, and the
//! operations guide says what to do for each alert. That the operator serves every series
//! they read is tests/metrics.rs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::tool;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| tool("promtool"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs promtool with `args` in the repository; panics with its output unless it succeeds.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn alert_names() -> BTreeSet<String> {
    let rules = yaml("charts/tokenwarden/files/alerts.yaml");
    let groups = rules["groups"].as_array().expect("groups");
    (groups.iter())
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

#[test]
fn the_alert_rules_are_valid_and_every_unit_test_passes() {
    run_promtool(&["check", "rules", "charts/tokenwarden/files/alerts.yaml"]);
    let passed = run_promtool(&["test", "rules", "tests/alerts/alerts_test.yaml"]);
    assert!(passed.contains("SUCCESS"), "{passed}");
}

#[test]
fn every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_silent() {
    let tests = yaml("tests/alerts/alerts_test.yaml");
    let checks: Vec<&Value> = (tests["tests"].as_array().expect("tests").iter())
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for alert in alert_names() {
        let of_it = || checks.iter().filter(|c| c["alertname"] == alert.as_str());
        let fired = of_it().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let silent = of_it().any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        assert!(fired, "{alert}: no unit test makes it fire");
        assert!(silent, "{alert}: no unit test keeps it silent");
    }
}

/// Every query of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read("charts/tokenwarden/files/dashboard.json"))
        .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    (panels.iter())
        .flat_map(|p| p["targets"].as_array().expect("targets"))
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect()
}

#[test]
fn every_dashboard_query_is_evaluated_by_promtool_over_the_operators_series() {
    let tests = yaml("tests/alerts/dashboard_test.yaml");
    let evaluated: BTreeSet<&str> = (tests["tests"].as_array().expect("tests").iter())
        .flat_map(|t| t["promql_expr_test"].as_array().into_iter().flatten())
        .filter_map(|e| e["expr"].as_str())
        .collect();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for query in &queries {
        assert!(evaluated.contains(query.as_str()), "not evaluated: {query}");
    }
    let passed = run_promtool(&["test", "rules", "tests/alerts/dashboard_test.yaml"]);
    assert!(passed.contains("SUCCESS"), "{passed}");
}

#[test]
fn the_operations_guide_says_what_to_do_when_each_alert_fires() {
    let guide = read("docs/operations.md");
    for alert in alert_names() {
        assert!(
            guide.contains(&format!("### {alert}")),
            "docs/operations.md has no section `### {alert}` (the alert's description links it)"
        );
    }
}
