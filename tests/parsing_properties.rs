//! Property tests: no input a user can put in a manifest makes the duration, cron or spec
//! parsing, or the planner on top of them, panic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use tokenwarden::api::WorkspaceTokenSpec;
use tokenwarden::plan::{Observed, plan};
use tokenwarden::schedule::{Schedule, parse_duration};

fn cron_like() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("*".to_string()),
        "[0-9]{1,3}",
        "[0-9]{1,2}-[0-9]{1,2}",
        "\\*/[0-9]{1,3}",
        "[0-9]{1,2}(,[0-9]{1,2}){0,3}",
        "[A-Za-z]{3}",
        "[LW#?]{1,2}",
    ];
    prop::collection::vec(field, 1..8).prop_map(|f| f.join(" "))
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_000_000_000i64..250_000_000_000i64)
        .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_duration_string_parses_or_errors_without_panic(s in "\\PC{0,24}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn well_formed_durations_always_parse(parts in prop::collection::vec((0u64..100_000, "[smhd]"), 1..5)) {
        let s: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
        prop_assert!(parse_duration(&s).is_ok(), "{}", s);
    }

    #[test]
    fn any_schedule_parses_or_errors_and_next_never_panics(
        every in proptest::option::of("[0-9]{0,12}[smhdw]?"),
        cron in proptest::option::of(cron_like()),
        zone in proptest::option::of(prop_oneof![Just("Europe/Berlin".to_string()), Just("Asia/Kolkata".to_string()), "[A-Za-z/_]{0,20}"]),
        last in instant(),
    ) {
        if let Ok(Some(schedule)) = Schedule::parse(every.as_deref(), cron.as_deref(), zone.as_deref()) {
            let _ = schedule.next_after(last);
        }
    }

    #[test]
    fn any_spec_the_schema_could_let_through_plans_without_panic(
        every in proptest::option::of("[0-9]{1,15}[smhd]"),
        grace in "[0-9]{1,15}[smhd]",
        jitter in proptest::option::of("[0-9]{1,15}[smhd]"),
        cron in proptest::option::of(cron_like()),
        bytes in 16u32..=64,
        now in instant(),
    ) {
        let mut rotation = serde_json::json!({ "gracePeriod": grace });
        if let Some(e) = &every { rotation["every"] = serde_json::json!(e); }
        if let Some(j) = &jitter { rotation["jitter"] = serde_json::json!(j); }
        if every.is_none() && let Some(c) = &cron { rotation["schedule"] = serde_json::json!(c); }
        let spec: WorkspaceTokenSpec = serde_json::from_value(serde_json::json!({
            "workspaceId": "ws", "token": { "bytes": bytes }, "rotation": rotation,
        })).unwrap();
        let annotations = BTreeMap::new();
        let observed = Observed {
            name: "t", uid: "uid", generation: Some(1), spec: &spec, annotations: &annotations,
            status: None, deleting: false, has_finalizer: true, versioned: BTreeMap::new(),
            mounted: None, foreign: Vec::new(), mint_intent: None, issuer_problem: None,
            rollouts: Default::default(), usage: None,
                consumers: None, inventory: None, versions_seen: None,
        };
        let _ = plan(&observed, now);
    }
}
