//! The issuer inventory's request rate (phase 6): BENCH_N issuer tokens, two per workspace,
//! at the reference platform, with `--inventory-interval` short enough to count several
//! rounds; the platform counts the listings over three intervals once every token is Ready.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokenwarden::api::{TokenIssuer, WorkspaceToken};
use tokenwarden_testenv::ControlPlane;

use crate::Config;
use crate::cluster::bulk;
use crate::operator::OperatorProcess;
use crate::report::Inventory;

/// Tokens per workspace: each listing serves both.
const TOKENS_PER_WORKSPACE: usize = 2;
/// At most this many issuer tokens: the rate per workspace is the figure, and the reference
/// platform mints about 20 a second (100k would take over an hour).
const TOKENS_MAX: usize = 2000;

pub async fn measure(cp: &ControlPlane, cfg: &Config) -> Inventory {
    let client = cp.admin_client().await;
    let n = cfg.n.min(TOKENS_MAX);
    let groups = n.div_ceil(TOKENS_PER_WORKSPACE);
    let dir = cfg.out_dir.join("platform");
    std::fs::create_dir_all(&dir).expect("platform dir");
    let admin = tokenwarden_platform::new_admin_token();
    let path = dir.join("platform.json");
    let served = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            tokenwarden_platform::serve(&path, &admin, "127.0.0.1:0".parse().unwrap())
        })
        .await
        .expect("platform")
    };
    for g in 0..groups {
        let id = format!("ws-{g:05}");
        served.platform.add_workspace(&id).await.expect("workspace");
    }
    let ns = tokenwarden_testenv::namespace(&client, "bench-inventory").await;
    let admin_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "platform-admin" }, "stringData": { "token": admin },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &admin_secret)
        .await
        .expect("admin Secret");
    let issuer: TokenIssuer = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenIssuer",
        "metadata": { "name": "platform" },
        "spec": { "http": {
            "url": format!("http://{}", served.addr), "allowInsecureHttp": true,
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" },
        } },
    }))
    .unwrap();
    Api::<TokenIssuer>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &issuer)
        .await
        .expect("TokenIssuer");

    let interval = cfg.inventory_interval;
    let log = cfg.out_dir.join("operator-inventory.log");
    let args = ["--inventory-interval", &format!("{}s", interval.as_secs())];
    let mut operator = OperatorProcess::start_with(
        &cfg.operator,
        cp.admin_kubeconfig(),
        cfg.concurrency,
        log,
        &args,
    );
    operator.wait_ready(cfg.ready_timeout()).await;
    let tokens = Api::<WorkspaceToken>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    bulk(n, usize::from(cfg.concurrency), |i| {
        let tokens = tokens.clone();
        async move {
            let spec = json!({
                "workspaceId": format!("ws-{:05}", i / TOKENS_PER_WORKSPACE),
                "issuerRef": { "name": "platform" },
            });
            let wst: WorkspaceToken = serde_json::from_value(json!({
                "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
                "metadata": { "name": format!("issued-{i:05}") }, "spec": spec,
            }))
            .unwrap();
            tokens.create(&PostParams::default(), &wst).await
        }
    })
    .await;
    wait_all_ready(
        &tokens,
        n,
        Duration::from_secs(120) + Duration::from_millis(200) * n as u32,
    )
    .await;
    let converge_s = started.elapsed().as_secs_f64();
    eprintln!("bench: {n} issuer tokens Ready in {converge_s:.1} s");

    // One interval for every group's first listing after its verification, then count.
    tokio::time::sleep(interval).await;
    let listings = |from: usize| {
        let requests = served.platform.requests();
        (requests[from..].iter())
            .filter(|r| r.method == "GET" && r.path.ends_with("/tokens"))
            .count()
    };
    let mark = served.platform.requests().len();
    let before = written(&client, &ns).await;
    let window = 3 * interval;
    tokio::time::sleep(window).await;
    let counted = listings(mark);
    let after = written(&client, &ns).await;
    let changed = (after.iter())
        .filter(|(name, rv)| before.get(*name) != Some(*rv))
        .count();
    let inventory = Inventory {
        tokens: n,
        workspaces: groups,
        interval_s: interval.as_secs(),
        window_s: window.as_secs(),
        listings: counted,
        per_workspace_per_interval: counted as f64 / (groups as f64 * 3.0),
        writes: changed as u64,
        converge_s,
    };
    eprintln!(
        "bench: inventory of {groups} workspaces every {}s: {counted} listings in {}s, {} writes",
        interval.as_secs(),
        window.as_secs(),
        inventory.writes
    );
    operator.stop().await;
    served.runtime.shutdown_background();
    inventory
}

/// The resourceVersion of every WorkspaceToken, Secret and Event in `ns`: an object written
/// (or created) since has another, or is new.
async fn written(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let params = ListParams::default();
    let tokens = Api::<WorkspaceToken>::namespaced(client.clone(), ns);
    for wst in tokens.list_metadata(&params).await.expect("list").items {
        versions.insert(
            format!("wst/{}", wst.name_any()),
            wst.resource_version().unwrap_or_default(),
        );
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    for s in secrets.list_metadata(&params).await.expect("list").items {
        versions.insert(
            format!("secret/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    let events = Api::<Event>::namespaced(client.clone(), ns);
    for e in events.list_metadata(&params).await.expect("list").items {
        versions.insert(
            format!("event/{}", e.name_any()),
            e.resource_version().unwrap_or_default(),
        );
    }
    versions
}

async fn wait_all_ready(tokens: &Api<WorkspaceToken>, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let list = tokens.list(&ListParams::default()).await;
        let ready = list.map_or(0, |l| {
            (l.items.iter())
                .filter(|w| {
                    w.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count()
        });
        if ready == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {n} issuer tokens Ready in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
