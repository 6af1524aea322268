//! Faults during a rotation storm against the HTTP issuer: the operator SIGKILLed at random
//! moments, and the platform killed and restarted. While the storm runs, a watch records every
//! token each versioned Secret ever held. Once the storm is called off and the operator
//! settles, for every token:
//! - exactly one Active version, `S` matches `S-vN`, status records its hash
//!   (`support::invariants::assert_consistent`);
//! - every `S-vN` ever written held one token only: no version was minted twice;
//! - the versions ever written are 1..=current: numbers neither skip nor repeat;
//! - the platform has exactly one live token per workspace, the served one: nothing minted
//!   in a killed pass is left live without a Secret;
//! - afterwards the operator writes nothing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::Api;
use serde_json::json;
use support::invariants::{VersionLedger, assert_quiet, call_off_and_settle, is_settled, wait_all};
use support::platform::TestPlatform;
use support::*;
use tokenwarden::api::WorkspaceToken;

const SETTLE: Duration = Duration::from_secs(240);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Storm {
    client: Client,
    ns: String,
    api: Api<WorkspaceToken>,
    platform: TestPlatform,
    ledger: Arc<VersionLedger>,
    tokens: usize,
}

impl Storm {
    /// `tokens` WorkspaceTokens on the platform, each rotating `every`, gracePeriod 2s.
    async fn start(prefix: &str, tokens: usize, every: &str) -> Storm {
        let cp = control_plane().await;
        let client = cp.admin_client().await;
        let ns = tokenwarden_testenv::namespace(&client, prefix).await;
        let platform = TestPlatform::start().await;
        platform
            .admin_secret(&client, &ns, &platform.admin.clone())
            .await;
        let ledger = VersionLedger::watch(&client, &ns);
        let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
        for i in 0..tokens {
            let ws = format!("ws-{i}");
            platform.create_workspace(&ws).await;
            let rotation = json!({ "rotation": { "every": every, "gracePeriod": "2s" } });
            create(&api, &format!("t{i}"), platform.spec(&ws, rotation)).await;
        }
        Storm {
            client,
            ns,
            api,
            platform,
            ledger,
            tokens,
        }
    }

    fn names(&self) -> impl Iterator<Item = String> {
        (0..self.tokens).map(|i| format!("t{i}"))
    }

    /// Calls the storm off (a schedule change, which rotates nothing), waits until every token
    /// has settled, and checks every invariant. Returns the highest version reached.
    async fn settle_and_check(&self, operator: &Operator) -> u32 {
        let (settled, served) =
            call_off_and_settle(&self.client, &self.ns, self.tokens, SETTLE).await;
        let highest = self.ledger.check_every(&settled);
        for (i, name) in self.names().enumerate() {
            let workspace = format!("ws-{i}");
            let served = served[&name].clone();
            eventually(
                Duration::from_secs(60),
                &format!("{workspace}: only {name}'s served token live"),
                || async {
                    let live = self.platform.live(&workspace).await;
                    (live.len() == 1 && live[0].token_sha256 == served).then_some(())
                },
            )
            .await;
        }
        assert_quiet(&self.client, Duration::from_secs(10)).await;
        dump(&self.client, &self.ns, Some(operator)).await;
        highest
    }
}

fn in_namespace(ns: &str) -> [&str; 4] {
    ["--namespace", ns, "--concurrency", "8"]
}

#[tokio::test]
async fn sigkill_at_random_moments_of_a_100_token_rotation_storm_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cp = control_plane().await;
    let storm = Storm::start("storm-kill", 100, "10s").await;
    let mut operator = Operator::start(cp, &in_namespace(&storm.ns));
    wait_all(&storm.api, 100, SETTLE, "every token Ready", is_settled).await;

    let started = Instant::now();
    let mut kills = 0;
    let mut audits = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        let alive_for = Duration::from_millis(rand::random_range(500..4000));
        tokio::time::sleep(alive_for).await;
        operator.kill();
        kills += 1;
        audits.extend(operator.audit_lines());
        operator = Operator::start(cp, &in_namespace(&storm.ns));
    }
    let highest = storm.settle_and_check(&operator).await;
    audits.extend(operator.audit_lines());
    let rotations = audits.iter().filter(|l| l["event"] == "minted").count();
    eprintln!(
        "storm-kill: {kills} SIGKILLs in 60 s, {rotations} mints logged, highest version v{highest}"
    );
    assert!(kills >= 15, "{kills} kills");
    assert!(
        highest >= 4,
        "the storm rotated (highest version v{highest})"
    );
}

#[tokio::test]
async fn the_platform_killed_and_restarted_during_a_storm_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cp = control_plane().await;
    let mut storm = Storm::start("storm-platform", 50, "8s").await;
    let operator = Operator::start(cp, &in_namespace(&storm.ns));
    wait_all(&storm.api, 50, SETTLE, "every token Ready", is_settled).await;

    for outage in 0..3 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        storm.platform.stop();
        tokio::time::sleep(Duration::from_secs(8)).await;
        // The issuer being down never takes a token away: the served one stays Ready.
        wait_all(
            &storm.api,
            50,
            Duration::from_secs(5),
            "every token still Ready",
            |w| {
                w.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            },
        )
        .await;
        storm.platform.restart().await;
        eprintln!("storm-platform: outage {outage} over");
    }
    let highest = storm.settle_and_check(&operator).await;
    assert!(
        highest >= 3,
        "the storm rotated (highest version v{highest})"
    );
}
