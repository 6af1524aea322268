//! The HTTP issuer with an operator of the test's own: a real crash in the window between
//! the platform's answer and the versioned Secret (the operator is SIGKILLed there), and the
//! metrics of revocations that could not be made. Each test's operator watches only its
//! test's namespace, so it is the only one reconciling there and its metrics are its own.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::platform::{ISSUER, TestPlatform};
use support::*;
use tokenwarden::api::WorkspaceToken;
use tokenwarden::token::sha256_hex;

const WAIT: Duration = Duration::from_secs(45);

/// A namespace of its own with the platform's admin Secret, and a platform with `workspace`.
async fn setup(
    prefix: &str,
    workspace: &str,
) -> (
    &'static tokenwarden_testenv::ControlPlane,
    kube::Client,
    String,
    TestPlatform,
) {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, prefix).await;
    let platform = TestPlatform::start().await;
    platform.create_workspace(workspace).await;
    platform
        .admin_secret(&client, &ns, &platform.admin.clone())
        .await;
    (cp, client, ns, platform)
}

#[tokio::test]
async fn a_crash_between_the_platform_answer_and_the_secret_leaves_no_live_token_nobody_holds() {
    // A real crash: a dedicated operator is SIGKILLed while the platform holds its mint call.
    let (cp, client, ns, platform) = setup("http-kill", "ws-kill").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let only_here = ["--namespace", ns.as_str()];
    let mut operator = Operator::start(cp, &only_here);
    let slow = json!({ "http": { "timeoutSeconds": 60 } });
    platform.issuer(&client, &ns, ISSUER, slow).await;
    let spec = platform.spec("ws-kill", json!({ "rotation": { "gracePeriod": "0s" } }));
    create(&api, "t", spec).await;
    wait_version(&api, "t", 1, WAIT).await;

    platform.fault("hang_after_mint", Some(1)).await;
    request_rotation(&api, "t", "r1").await;
    eventually(WAIT, "the platform minted v2", || async {
        (platform.live("ws-kill").await.len() == 2).then_some(())
    })
    .await;
    operator.kill();
    let w = api.get("t").await.unwrap();
    assert!(
        w.status.as_ref().is_some_and(|s| s.mint_intent.is_some()),
        "intent recorded before the call"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("t-v2")
            .await
            .unwrap()
            .is_none()
    );

    let restarted = Operator::start(cp, &only_here);
    wait_version(&api, "t", 2, Duration::from_secs(90)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "only the served token live", || async {
        let live = platform.live("ws-kill").await;
        let served =
            data(&secrets.get("t").await.ok()?, "token").map(|t| sha256_hex(t.as_bytes()))?;
        (live.len() == 1 && live[0].token_sha256 == served).then_some(())
    })
    .await;
    dump(&client, &ns, Some(&restarted)).await;
}

/// `tokenwarden_revocations_total` counts tokens revoked, not revocations that turned out
/// impossible (each of those is a `RevokeImpossible` Warning and a failed audit line).
#[tokio::test]
async fn a_revocation_that_turned_out_impossible_is_not_counted_as_one() {
    let (cp, client, ns, platform) = setup("http-uncounted", "ws-uncounted").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(cp, &["--namespace", ns.as_str()]);
    let spec = json!({ "rotation": { "gracePeriod": "1h" } });
    create(&api, "t", platform.spec("ws-uncounted", spec)).await;
    wait_version(&api, "t", 1, WAIT).await;
    request_rotation(&api, "t", "r1").await;
    wait_version(&api, "t", 2, WAIT).await;
    // Suspended, nothing restores the Secrets before the deletion pass finds them gone:
    // neither version has a token left to authenticate its revocation with.
    let suspend = json!({ "spec": { "suspend": true } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    eventually(WAIT, "suspended", || async {
        condition(&api, "t", "Ready")
            .await
            .filter(|(_, _, message)| message.contains("suspend"))
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in ["t-v1", "t-v2", "t"] {
        secrets
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    api.delete("t", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "WorkspaceToken gone", || async {
        api.get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    let impossible = eventually(WAIT, "RevokeImpossible for both versions", || async {
        let reasons = event_reasons(&client, &ns).await;
        let n = reasons.iter().filter(|r| *r == "RevokeImpossible").count();
        (n == 2).then_some(n)
    })
    .await;
    let (_, metrics) = operator.get("/metrics").expect("metrics");
    let revocations = metrics
        .lines()
        .find(|l| l.starts_with("tokenwarden_revocations_total "))
        .expect("tokenwarden_revocations_total");
    assert_eq!(
        revocations, "tokenwarden_revocations_total 0",
        "{impossible} impossible revocations, none counted as done"
    );
    dump(&client, &ns, Some(&operator)).await;
}

/// The operator's resident memory, from /proc.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// A local token beside the platform's: it must keep rotating whatever the platform does.
async fn local_token(api: &Api<WorkspaceToken>) {
    let spec =
        json!({ "workspaceId": "ws-local", "rotation": { "every": "2s", "gracePeriod": "0s" } });
    create(api, "local", spec).await;
}

/// A platform (or something posing as one) answering a gigabyte: the answer is refused once
/// it passes 1 MiB, the operator stays alive and small, and other tokens keep rotating.
#[tokio::test]
async fn a_platform_answering_a_gigabyte_leaves_the_operator_alive_and_small() {
    let (cp, client, ns, platform) = setup("http-huge", "ws-huge").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let mut operator = Operator::start(cp, &["--namespace", ns.as_str()]);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (peak, pid) = (peak.clone(), operator.pid());
        async move {
            loop {
                let rss = rss_mib(pid).unwrap_or(0);
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    platform.fault("huge_body", Some(4)).await;
    create(&api, "t", platform.spec("ws-huge", json!({}))).await;
    local_token(&api).await;
    let message = degraded_for(&api, "t", "IssuerMalformedAnswer", WAIT).await;
    assert!(message.contains("larger than 1024 KiB"), "{message}");
    wait_version_at_least(&api, "local", 2, WAIT).await;
    wait_version(&api, "t", 1, Duration::from_secs(90)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("http_crash: operator peak RSS {peak} MiB while the platform answered 1 GiB");
    assert!(operator.is_running(), "the operator is alive");
    assert!(
        peak < 200,
        "RSS {peak} MiB: the answer was not held in memory"
    );
    dump(&client, &ns, Some(&operator)).await;
}

/// A redirect is not followed: the request with the bearer token goes nowhere the issuer did
/// not name. The capture server stands where the platform redirects to.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (cp, client, ns, platform) = setup("http-redirect", "ws-redirect").await;
    let capture = std::net::TcpListener::bind("127.0.0.1:0").expect("capture server");
    capture.set_nonblocking(true).expect("non-blocking");
    let location = format!("http://{}/steal", capture.local_addr().unwrap());
    platform
        .fault_with_location("redirect", Some(2), &location)
        .await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(cp, &["--namespace", ns.as_str()]);
    create(&api, "t", platform.spec("ws-redirect", json!({}))).await;
    let message = degraded_for(&api, "t", "IssuerError", WAIT).await;
    assert!(message.contains("307"), "{message}");
    wait_version(&api, "t", 1, Duration::from_secs(90)).await;
    assert!(
        capture.accept().is_err(),
        "the capture server saw a connection: the redirect was followed"
    );
    dump(&client, &ns, Some(&operator)).await;
}

/// A platform that never answers holds at most its share of the workers (4 calls in flight
/// per platform): with 6 workers and 8 tokens on a hanging platform, a local token is still
/// minted and rotated at once.
#[tokio::test]
async fn a_hanging_platform_cannot_hold_every_worker() {
    let (cp, client, ns, platform) = setup("http-hang", "ws-hang").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(cp, &["--namespace", ns.as_str(), "--concurrency", "6"]);
    let slow = json!({ "http": { "timeoutSeconds": 120 } });
    platform.issuer(&client, &ns, ISSUER, slow).await;
    platform.fault("hang", None).await;
    for i in 0..8 {
        create(&api, &format!("t{i}"), platform.spec("ws-hang", json!({}))).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = tokio::time::Instant::now();
    local_token(&api).await;
    wait_version_at_least(&api, "local", 2, WAIT).await;
    eprintln!(
        "http_crash: the local token rotated {:.1}s after its creation while 8 calls hung",
        started.elapsed().as_secs_f64()
    );
    assert!(
        platform.live("ws-hang").await.len() <= 8,
        "nothing minted twice while hanging"
    );
    dump(&client, &ns, Some(&operator)).await;
}

/// Whatever `RUST_LOG` asks, the Kubernetes and HTTP client crates log nothing below INFO:
/// their debug output carries raw request and answer bodies.
#[tokio::test]
async fn at_rust_log_trace_the_client_crates_log_nothing_below_info() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "log-ceiling").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start_with_env(
        cp,
        cp.admin_kubeconfig(),
        &["--namespace", ns.as_str()],
        &[("RUST_LOG", "trace")],
    );
    local_token(&api).await;
    wait_version_at_least(&api, "local", 2, WAIT).await;
    let log = std::fs::read_to_string(&operator.stderr).expect("operator log");
    let mut tokenwarden_debug = 0;
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (target, level) = (entry["target"].as_str(), entry["level"].as_str());
        let (Some(target), Some(level)) = (target, level) else {
            continue;
        };
        let below_info = matches!(level, "DEBUG" | "TRACE");
        let internal = ["kube_client", "hyper", "h2", "reqwest", "rustls", "tower"]
            .iter()
            .any(|c| target.starts_with(c));
        assert!(!(internal && below_info), "{target} at {level}: {line}");
        if target.starts_with("tokenwarden") && below_info {
            tokenwarden_debug += 1;
        }
    }
    eprintln!("http_crash: {tokenwarden_debug} tokenwarden lines below INFO at RUST_LOG=trace");
    dump(&client, &ns, Some(&operator)).await;
}
