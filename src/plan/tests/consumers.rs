//! `status.consumers` and `ConsumerNeedsRestart`: who reads `S` and how, and a Warning at
//! each cutover for every consumer that cannot see the new token without a restart.

use super::*;
use crate::consumers::{Consumer, ConsumerKind, Via};

fn consumer(kind: ConsumerKind, name: &str, via: Via) -> Consumer {
    Consumer {
        kind,
        name: name.into(),
        via,
    }
}

fn read_by_four() -> World {
    let mut world = World::new(spec(json!({
        "rotation": { "every": "720h", "gracePeriod": "1h" },
        "restartTargets": [{ "kind": "Deployment", "name": "api" }],
    })));
    world.consumers = vec![
        consumer(ConsumerKind::Deployment, "api", Via::Env),
        consumer(ConsumerKind::Deployment, "web", Via::Volume),
        consumer(ConsumerKind::CronJob, "report", Via::EnvFrom),
        consumer(ConsumerKind::Pod, "debug", Via::SubPath),
    ];
    world
}

fn needs_restart(plan: &Plan) -> Vec<&str> {
    plan.after_cutover
        .iter()
        .map(|w| {
            assert_eq!(w.reason, "ConsumerNeedsRestart");
            w.message.as_str()
        })
        .collect()
}

#[test]
fn status_lists_each_consumer_with_how_it_reads_and_whether_a_cutover_rolls_it() {
    let mut world = read_by_four();
    world.converge(t0());
    let listed: Vec<(&str, &str, &str, bool)> = (world.status().consumers.iter())
        .map(|c| {
            (
                c.kind.as_str(),
                c.name.as_str(),
                c.via.as_str(),
                c.restart_target,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("Deployment", "api", "env", true),
            ("Deployment", "web", "volume", false),
            ("CronJob", "report", "envFrom", false),
            ("Pod", "debug", "subPath", false),
        ]
    );
}

#[test]
fn each_cutover_warns_about_consumers_that_keep_the_old_token_until_they_restart() {
    let mut world = read_by_four();
    assert!(
        needs_restart(&world.plan(t0())).is_empty(),
        "the first token replaces none"
    );
    world.converge(t0());
    assert!(
        needs_restart(&world.plan(t0() + hours(1))).is_empty(),
        "no cutover, no warning"
    );
    world.annotate(ROTATE_ANNOTATION, "r1");
    assert_eq!(
        needs_restart(&world.plan(t0() + hours(2))),
        [
            "CronJob/report reads the token through envFrom and is not in restartTargets: it \
             keeps the previous token until its pods restart (version 2 is current now)",
            "Pod/debug reads the token through subPath and is not in restartTargets: it keeps \
             the previous token until its pods restart (version 2 is current now)",
        ],
        "env of a restart target and a mounted volume need nothing"
    );
}

#[test]
fn a_consumer_appearing_or_going_changes_status_without_a_rotation() {
    let mut world = read_by_four();
    world.converge(t0());
    world.consumers.pop();
    let plan = world.pass(t0() + hours(1));
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(world.status().consumers.len(), 3);
    assert_eq!(world.status().current_version, Some(1));
}

#[test]
fn a_namespace_full_of_consumers_neither_floods_events_nor_grows_status_without_bound() {
    let mut world = read_by_four();
    world.consumers = (0..500)
        .map(|i| consumer(ConsumerKind::Pod, &format!("p{i:03}"), Via::Env))
        .collect();
    world.converge(t0());
    assert_eq!(world.status().consumers.len(), 100);
    world.annotate(ROTATE_ANNOTATION, "r1");
    let warned = needs_restart(&world.plan(t0() + hours(1)))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 11, "{warned:#?}");
    assert!(warned[0].starts_with("Pod/p000 reads"));
    assert!(
        warned[10].starts_with("490 more consumers"),
        "{}",
        warned[10]
    );
}

#[test]
fn before_the_watches_listed_every_kind_status_keeps_the_consumers_it_said() {
    let mut world = read_by_four();
    world.converge(t0());
    let mut observed = world.observed();
    observed.consumers = None;
    let plan = super::plan(&observed, t0() + hours(1));
    assert_eq!(plan.consumers, world.status().consumers);
    assert_eq!(plan.consumers.len(), 4);
}
