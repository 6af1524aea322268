//! The Helm chart against a real API server: what `helm template` renders (ServiceAccount,
//! RBAC, CRD) is applied as is, and the operator runs as the chart's ServiceAccount, with a
//! bearer token the API server minted for it, never as an admin. There is no kubelet, so the
//! Deployment is not applied: its arguments are run as a local process instead.
//!
//! Token values are only ever compared by their SHA-256; the ServiceAccount token stays in a
//! temporary kubeconfig outside the artifacts.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::*;
use tokenwarden::api::{ClusterTokenIssuer, IssuerStatus, TokenIssuer, WorkspaceToken};
use tokenwarden::cli::CRD_FILES;
use tokenwarden::token::sha256_hex;
use tokenwarden_testenv::ControlPlane;

const WAIT: Duration = Duration::from_secs(45);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tokenwarden");

/// Operators that watch every namespace would reconcile the other tests' objects: the tests
/// of this binary take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fingerprint(secret: &Secret, key: &str) -> Option<String> {
    data(secret, key).map(|t| sha256_hex(t.as_bytes()))
}

/// helm, built from the Go module proxy by hack/tools/build.sh (cached after the first time).
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool("helm"))
}

/// `helm template` of the chart, as JSON objects.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release, CHART, "--namespace", namespace]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("run helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The rendered `tokenwarden run` arguments, minus the ones `Operator::start_as` sets itself.
fn operator_args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment")[0];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert_eq!(args[0], "run");
    args[1..]
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| !a.starts_with("--metrics-addr") && !a.starts_with("--log-format"))
        .collect()
}

/// `kubectl apply` of the rendered objects of these kinds, as the admin (what `helm install`
/// would do).
fn kubectl_apply(cp: &ControlPlane, objects: &[&Value]) {
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    let mut child = cp
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies the chart's RBAC, ServiceAccount and CRDs (not the Deployment, Service, PDB).
async fn install(cp: &ControlPlane, objects: &[Value]) {
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let crds = find(objects, "CustomResourceDefinition");
    let names: Vec<&str> = crds
        .iter()
        .map(|crd| crd["metadata"]["name"].as_str().unwrap())
        .collect();
    let every = CRD_FILES.map(|file| file.trim_end_matches(".yaml"));
    assert_eq!(names, every, "the chart installs every CRD");
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "the CRDs survive an uninstall by default"
        );
    }
    CRDS.get_or_init(|| async {
        kubectl_apply(cp, &crds);
        let out = cp
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=30s"])
            .args(names.iter().map(|name| format!("crd/{name}")))
            .output()
            .unwrap();
        assert!(out.status.success(), "CRDs established");
    })
    .await;
    let rbac: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&o["kind"].as_str().unwrap())
        })
        .collect();
    kubectl_apply(cp, &rbac);
}

/// A kubeconfig for the ServiceAccount: the API server's CA and a bearer token it minted.
fn service_account_kubeconfig(cp: &ControlPlane, namespace: &str, sa: &str) -> tempfile::TempPath {
    let out = cp
        .kubectl()
        .args(["create", "token", sa, "-n", namespace, "--duration", "2h"])
        .output()
        .expect("kubectl create token");
    assert!(out.status.success(), "kubectl create token {sa}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let admin: Value =
        serde_json::from_slice(&std::fs::read(cp.admin_kubeconfig()).unwrap()).unwrap();
    let ca = admin["clusters"][0]["cluster"]["certificate-authority"].clone();
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testenv", "cluster": { "server": cp.server, "certificate-authority": ca } }],
        "users": [{ "name": sa, "user": { "token": token } }],
        "contexts": [{ "name": sa, "context": { "cluster": "testenv", "user": sa, "namespace": namespace } }],
        "current-context": sa,
    });
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(kubeconfig.to_string().as_bytes()).unwrap();
    file.into_temp_path()
}

/// `kubectl auth can-i` as the ServiceAccount.
fn can_i(cp: &ControlPlane, sa: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let out = cp
        .kubectl()
        .args(["auth", "can-i", verb, resource, "-n", ns, "--as", sa])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn stderr_lines(operator: &Operator) -> Vec<Value> {
    std::fs::read_to_string(&operator.stderr)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn restart_target(client: &kube::Client, ns: &str) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "agent" },
        "spec": {
            "selector": { "matchLabels": { "app": "agent" } },
            "template": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": { "containers": [{ "name": "agent", "image": "agent:1" }] }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

async fn restarted_at(client: &kube::Client, ns: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("agent")
        .await
        .ok()?;
    d.spec?
        .template
        .metadata?
        .annotations?
        .get("tokenwarden.dev/restartedAt")
        .cloned()
}

/// An issuer of `kind` (TokenIssuer or ClusterTokenIssuer) at a platform it never calls: Ready
/// needs only an allowed URL and the admin Secret `platform-admin`.
fn issuer(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": kind, "metadata": { "name": name },
        "spec": { "http": {
            "url": "https://platform.example.invalid",
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" },
        } },
    })
}

fn ready(status: Option<&IssuerStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// A TokenIssuer in `ns` and a ClusterTokenIssuer `cluster`, their admin Secrets in `ns` and in
/// `admin_ns` (the cluster resource namespace, another one): returns once the operator found
/// both Ready (it watched them, read those Secrets and wrote their status), after deleting the
/// ClusterTokenIssuer, which every later operator would see.
/// A TokenIssuer of `ns` and the ClusterTokenIssuer `cluster` (admin Secret in `admin_ns`):
/// the TokenIssuer becomes Ready; the ClusterTokenIssuer too when the operator watches every
/// namespace (`cluster_mode`), else its status stays the cluster-wide operator's to write.
async fn issuers_ready(
    client: &kube::Client,
    ns: &str,
    cluster: &str,
    admin_ns: &str,
    cluster_mode: bool,
) {
    let admin: Secret = serde_json::from_value(json!({
        "metadata": { "name": "platform-admin" }, "stringData": { "token": "chart-admin-token" },
    }))
    .unwrap();
    for ns in [ns, admin_ns] {
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &admin)
            .await
            .unwrap();
    }
    let namespaced: Api<TokenIssuer> = Api::namespaced(client.clone(), ns);
    let issuer_of_ns = serde_json::from_value(issuer("TokenIssuer", "platform")).unwrap();
    namespaced
        .create(&PostParams::default(), &issuer_of_ns)
        .await
        .unwrap();
    let all: Api<ClusterTokenIssuer> = Api::all(client.clone());
    let issuer_of_all = serde_json::from_value(issuer("ClusterTokenIssuer", cluster)).unwrap();
    all.create(&PostParams::default(), &issuer_of_all)
        .await
        .unwrap();
    eventually(WAIT, "the TokenIssuer Ready", || async {
        ready(namespaced.get("platform").await.ok()?.status.as_ref()).then_some(())
    })
    .await;
    if cluster_mode {
        eventually(WAIT, "the ClusterTokenIssuer Ready", || async {
            ready(all.get(cluster).await.ok()?.status.as_ref()).then_some(())
        })
        .await;
    } else {
        let status = all.get(cluster).await.unwrap().status;
        assert_eq!(status, None, "an operator of one namespace leaves it alone");
    }
    all.delete(cluster, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn as_the_charts_service_account_the_operator_mints_rotates_restarts_and_finalizes() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let objects = render("tw-cluster", &system, &[]);
    assert!(kinds(&objects).contains(&"ClusterRole".to_string()));
    assert!(!kinds(&objects).contains(&"Role".to_string()));
    assert!(
        !operator_args(&objects)
            .iter()
            .any(|a| a.starts_with("--namespace")),
        "cluster mode watches every namespace"
    );
    assert!(
        operator_args(&objects).contains(&format!("--cluster-resource-namespace={system}")),
        "ClusterTokenIssuers' admin Secrets are read in the release namespace by default"
    );
    install(cp, &objects).await;
    // The chart's admission policies in force: they never stand in the operator's way.
    let policies = Policies::apply(cp, &objects);
    Policies::in_force(cp, &client).await;
    let sa = format!("system:serviceaccount:{system}:tw-cluster-tokenwarden");
    let ns = tokenwarden_testenv::namespace(&client, "tw-app").await;
    assert!(can_i(cp, &sa, "create", "secrets", &ns));
    assert!(
        !can_i(cp, &sa, "update", "secrets", &ns),
        "only the verbs it uses"
    );
    assert!(can_i(cp, &sa, "create", "events.events.k8s.io", &ns));
    assert!(
        !can_i(cp, &sa, "patch", "events.events.k8s.io", &ns),
        "Events are created, never updated"
    );
    assert!(!can_i(
        cp,
        &sa,
        "create",
        "workspacetokens.tokenwarden.dev",
        &ns
    ));
    // status.consumers: every workload kind is listed and watched; a Pod is never read by name.
    for workloads in ["pods", "jobs.batch", "cronjobs.batch", "daemonsets.apps"] {
        assert!(can_i(cp, &sa, "watch", workloads, &ns), "{workloads}");
    }
    assert!(!can_i(cp, &sa, "get", "pods", &ns));
    for issuers in [
        "tokenissuers.tokenwarden.dev",
        "clustertokenissuers.tokenwarden.dev",
    ] {
        assert!(can_i(cp, &sa, "watch", issuers, &ns), "{issuers}");
        assert!(!can_i(cp, &sa, "patch", issuers, &ns), "only their status");
    }
    assert!(can_i(cp, &sa, "watch", "namespaces", &ns));

    let kubeconfig = service_account_kubeconfig(cp, &system, "tw-cluster-tokenwarden");
    let args = operator_args(&objects);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut operator = Operator::start_as(cp, &kubeconfig, &args);
    issuers_ready(&client, &ns, "tw-cluster-platform", &system, true).await;

    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    restart_target(&client, &ns).await;
    create(
        &api,
        "t",
        json!({
            "workspaceId": "ws-chart",
            "rotation": { "gracePeriod": "0s" },
            "restartTargets": [{ "kind": "Deployment", "name": "agent" }]
        }),
    )
    .await;
    let v1 = wait_version(&api, "t", 1, WAIT).await;
    let s = v1.status.unwrap();
    let mounted = secret(&client, &ns, "t").await.expect("S written");
    assert_eq!(fingerprint(&mounted, "token"), s.token_sha256);
    assert!(secret(&client, &ns, "t-v1").await.is_some(), "S-v1 written");

    // A rotation on request: v2 minted, cut over, v1 revoked (grace 0), the target rolled.
    let before = restarted_at(&client, &ns).await;
    let rotate = json!({ "metadata": { "annotations": { "tokenwarden.dev/rotate": "chart-1" } } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .unwrap();
    let v2 = wait_version(&api, "t", 2, WAIT).await;
    assert_ne!(v2.status.as_ref().unwrap().token_sha256, s.token_sha256);
    eventually(WAIT, "S-v1 deleted at cutover", || async {
        secret(&client, &ns, "t-v1").await.is_none().then_some(())
    })
    .await;
    eventually(WAIT, "the restart target rolled", || async {
        let now = restarted_at(&client, &ns).await;
        (now.is_some() && now != before).then_some(())
    })
    .await;
    let reasons = event_reasons(&client, &ns).await;
    assert!(
        reasons.iter().any(|r| r == "Minted"),
        "events recorded: {reasons:?}"
    );

    // Deletion: a local token has no finalizer; the garbage collector deletes its Secrets.
    api.delete("t", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "WorkspaceToken deleted", || async {
        api.get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually(GARBAGE_COLLECTION, "its Secrets deleted", || async {
        let names = secret_names(&client, &ns).await;
        (!names.iter().any(|n| n == "t" || n.starts_with("t-v"))).then_some(())
    })
    .await;

    assert!(operator.is_running());
    let denied: Vec<_> = stderr_lines(&operator)
        .into_iter()
        .filter(|l| l.to_string().to_lowercase().contains("forbidden"))
        .collect();
    assert!(denied.is_empty(), "the chart's RBAC is enough: {denied:?}");
    dump(&client, &ns, Some(&operator)).await;
    operator.kill();
    policies.lift(&client).await;
}

#[tokio::test]
async fn namespaced_mode_works_in_its_namespace_and_reports_forbidden_outside_it() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let a = tokenwarden_testenv::namespace(&client, "tw-a").await;
    let b = tokenwarden_testenv::namespace(&client, "tw-b").await;
    let objects = render("tw-ns", &system, &[&format!("watchNamespace={a}")]);
    // The operator's RBAC is namespaced but for what has no namespace: besides the ClusterRoles
    // aggregated into the built-in roles for people (bound by nobody), one bound ClusterRole
    // reads ClusterTokenIssuers (not their status: the cluster-wide operator's) and the labels
    // of A, nothing else.
    let cluster_scoped = "tw-ns-tokenwarden-cluster-scoped";
    for role in find(&objects, "ClusterRole") {
        if role["metadata"]["name"] != cluster_scoped {
            let labels = role["metadata"]["labels"].as_object().unwrap();
            assert!(
                labels
                    .keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-")),
                "{role}"
            );
            continue;
        }
        for rule in role["rules"].as_array().unwrap() {
            match rule["resources"][0].as_str().unwrap() {
                "clustertokenissuers" => assert_eq!(rule["verbs"], json!(["get", "list", "watch"])),
                "namespaces" => assert_eq!(rule["resourceNames"], json!([a]), "only A"),
                other => panic!("{other} granted cluster-wide"),
            }
        }
    }
    let bindings = find(&objects, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["roleRef"]["name"], cluster_scoped);
    // RBAC in A, but for reading ClusterTokenIssuers' admin Secrets in the cluster resource
    // namespace (the release's).
    for role in find(&objects, "Role")
        .into_iter()
        .chain(find(&objects, "RoleBinding"))
    {
        if role["metadata"]["name"] != "tw-ns-tokenwarden-cluster-resources" {
            assert_eq!(role["metadata"]["namespace"], a.as_str(), "RBAC only in A");
        }
    }
    let args = operator_args(&objects);
    assert!(args.contains(&format!("--namespace={a}")));
    assert!(args.contains(&format!("--cluster-resource-namespace={system}")));
    install(cp, &objects).await;
    let sa = format!("system:serviceaccount:{system}:tw-ns-tokenwarden");
    assert!(can_i(cp, &sa, "create", "secrets", &a));
    assert!(!can_i(cp, &sa, "list", "secrets", &b));
    assert!(!can_i(
        cp,
        &sa,
        "list",
        "workspacetokens.tokenwarden.dev",
        &b
    ));
    assert!(!can_i(cp, &sa, "list", "tokenissuers.tokenwarden.dev", &b));
    assert!(can_i(cp, &sa, "get", "secrets", &system));
    assert!(
        !can_i(cp, &sa, "list", "secrets", &system),
        "admin Secrets are read by name"
    );
    assert!(can_i(cp, &sa, "watch", &format!("namespaces/{a}"), &a));
    assert!(
        !can_i(cp, &sa, "watch", "namespaces", &a),
        "only A's labels"
    );
    assert!(!can_i(cp, &sa, "get", &format!("namespaces/{b}"), &a));
    assert!(can_i(cp, &sa, "list", "pods", &a), "status.consumers");
    assert!(!can_i(cp, &sa, "list", "pods", &b));

    let kubeconfig = service_account_kubeconfig(cp, &system, "tw-ns-tokenwarden");
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut operator = Operator::start_as(cp, &kubeconfig, &args_ref);
    issuers_ready(&client, &a, "tw-ns-platform", &system, false).await;
    let in_a: Api<WorkspaceToken> = Api::namespaced(client.clone(), &a);
    create(&in_a, "t", json!({ "workspaceId": "ws-a" })).await;
    wait_version(&in_a, "t", 1, WAIT).await;

    // The same identity pointed at B (a misconfigured --namespace): Forbidden, said clearly,
    // nothing written, and the process stays up.
    let in_b: Api<WorkspaceToken> = Api::namespaced(client.clone(), &b);
    create(&in_b, "t", json!({ "workspaceId": "ws-b" })).await;
    let mut outside = Operator::start_as(cp, &kubeconfig, &[&format!("--namespace={b}")]);
    let line = eventually(WAIT, "a log line saying Forbidden", || async {
        stderr_lines(&outside).into_iter().find(|l| {
            let text = l.to_string().to_lowercase();
            text.contains("forbidden") && text.contains(&b)
        })
    })
    .await;
    eprintln!("the operator outside its namespace logs: {line}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(outside.is_running(), "Forbidden is not a crash");
    let untouched = in_b.get("t").await.unwrap();
    assert!(untouched.status.is_none(), "no status written in B");
    assert!(untouched.metadata.finalizers.is_none(), "no finalizer in B");
    assert!(secret_names(&client, &b).await.is_empty(), "no Secret in B");
    if let Some((code, _)) = outside.get("/readyz") {
        assert_ne!(code, 200, "not ready while it cannot list its Secrets");
    }
    assert!(operator.is_running());
    let denied: Vec<_> = stderr_lines(&operator)
        .into_iter()
        .filter(|l| l.to_string().to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC is enough in A: {denied:?}"
    );
    dump(&client, &a, Some(&operator)).await;
    dump(&client, &b, Some(&outside)).await;
    outside.kill();
    operator.kill();
}

/// The chart's namespaced Role with `delete` withheld on Secrets, an operator running as it,
/// and a WorkspaceToken at v1 whose rotation (grace 0) needs that delete: returns once the
/// rotation has been attempted and `Degraded=True` says why.
async fn degraded_by_withheld_delete(
    cp: &ControlPlane,
    release: &str,
) -> (
    kube::Client,
    String,
    Api<WorkspaceToken>,
    Operator,
    Vec<Value>,
) {
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let ns = tokenwarden_testenv::namespace(&client, "tw-nodelete").await;
    let objects = render(release, &system, &[&format!("watchNamespace={ns}")]);
    let mut withheld = objects.clone();
    for o in withheld
        .iter_mut()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == ns.as_str())
    {
        for rule in o["rules"].as_array_mut().unwrap() {
            if rule["resources"] == json!(["secrets"]) {
                rule["verbs"] = json!(["get", "list", "watch", "create", "patch"]);
            }
        }
    }
    install(cp, &withheld).await;
    let kubeconfig = service_account_kubeconfig(cp, &system, &format!("{release}-tokenwarden"));
    let args = operator_args(&objects);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_as(cp, &kubeconfig, &args);
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        "t",
        json!({ "workspaceId": "ws-nd", "rotation": { "gracePeriod": "0s" } }),
    )
    .await;
    wait_version(&api, "t", 1, WAIT).await;
    let rotate = json!({ "metadata": { "annotations": { "tokenwarden.dev/rotate": "nd-1" } } });
    api.patch("t", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .unwrap();
    let (_, reason, message) = eventually(WAIT, "Degraded=True", || async {
        condition(&api, "t", "Degraded")
            .await
            .filter(|(status, _, _)| status == "True")
    })
    .await;
    assert_eq!(reason, "Forbidden");
    assert!(
        message.contains("forbidden") && message.contains("delete"),
        "the condition names the denied call: {message}"
    );
    (client, ns, api, operator, objects)
}

#[tokio::test]
async fn without_secrets_delete_a_revocation_is_degraded_and_recovers_when_granted() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let (client, ns, api, mut operator, objects) =
        degraded_by_withheld_delete(cp, "tw-nodel").await;

    // Never corrupted: the mounted Secret holds the newest minted version, exactly as its
    // immutable record has it, and the old record is still there (not half-deleted).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mounted = secret(&client, &ns, "t").await.expect("S");
    let version = data(&mounted, "token-version").expect("token-version");
    let record = secret(&client, &ns, &format!("t-{version}"))
        .await
        .expect("the mounted version's record");
    assert_eq!(
        fingerprint(&mounted, "token"),
        fingerprint(&record, "token")
    );
    let old = secret(&client, &ns, "t-v1").await.expect("S-v1 kept");
    assert_ne!(fingerprint(&old, "token"), fingerprint(&mounted, "token"));
    assert!(operator.is_running(), "Forbidden is not a crash");

    // Granted again: the revocation completes by itself, status catches up, Degraded clears.
    install(cp, &objects).await;
    eventually(
        Duration::from_secs(400),
        "S-v1 deleted after the grant",
        || async { secret(&client, &ns, "t-v1").await.is_none().then_some(()) },
    )
    .await;
    let w = wait_version(&api, "t", 2, WAIT).await;
    assert_eq!(
        w.status.unwrap().token_sha256,
        fingerprint(&secret(&client, &ns, "t").await.unwrap(), "token")
    );
    eventually(WAIT, "Degraded=False", || async {
        condition(&api, "t", "Degraded")
            .await
            .filter(|(status, _, _)| status == "False")
    })
    .await;
    dump(&client, &ns, Some(&operator)).await;
    operator.kill();
}

/// When a pass cuts over to v2 and a later step of the same pass fails (here: deleting S-v1
/// is forbidden), status describes the mounted token (v2), not the one before the cutover.
#[tokio::test]
async fn while_degraded_after_a_cutover_the_status_describes_the_mounted_token() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let (client, ns, api, mut operator, _) = degraded_by_withheld_delete(cp, "tw-lag").await;
    let mounted = secret(&client, &ns, "t").await.expect("S");
    eventually(WAIT, "status agrees with the mounted Secret", || async {
        let s = api.get("t").await.ok()?.status?;
        (s.token_sha256 == fingerprint(&mounted, "token")).then_some(())
    })
    .await;
    let s = api.get("t").await.unwrap().status.unwrap();
    assert_eq!(s.current_version, Some(2));
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Forbidden")
    );
    dump(&client, &ns, Some(&operator)).await;
    operator.kill();
}

#[tokio::test]
async fn ha_values_elect_one_leader_with_the_charts_lease_role() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let objects = render("tw-ha", &system, &["replicaCount=2"]);
    let args = operator_args(&objects);
    assert!(args.contains(&"--leader-elect".to_string()));
    assert!(args.contains(&format!("--leader-election-namespace={system}")));
    assert_eq!(find(&objects, "PodDisruptionBudget").len(), 1);
    install(cp, &objects).await;
    let sa = format!("system:serviceaccount:{system}:tw-ha-tokenwarden");
    assert!(can_i(
        cp,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        &system
    ));
    assert!(
        !can_i(
            cp,
            &sa,
            "update",
            "leases.coordination.k8s.io/other",
            &system
        ),
        "only its own Lease"
    );

    let kubeconfig = service_account_kubeconfig(cp, &system, "tw-ha-tokenwarden");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Operator::start_as(cp, &kubeconfig, &args);
    let mut second = Operator::start_as(cp, &kubeconfig, &args);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &system);
    let holder = eventually(WAIT, "the Lease held", || async {
        lease_holder(&leases).await
    })
    .await;

    let ns = tokenwarden_testenv::namespace(&client, "tw-ha-app").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    create(&api, "t", json!({ "workspaceId": "ws-ha" })).await;
    wait_version(&api, "t", 1, WAIT).await;
    assert!(first.is_running() && second.is_running());
    for operator in [&first, &second] {
        let denied: Vec<_> = stderr_lines(operator)
            .into_iter()
            .filter(|l| l.to_string().to_lowercase().contains("forbidden"))
            .collect();
        assert!(denied.is_empty(), "the lease Role is enough: {denied:?}");
    }
    let minted = [&first, &second]
        .iter()
        .filter(|o| o.audit_lines().iter().any(|l| l["event"] == "minted"))
        .count();
    assert_eq!(minted, 1, "only the leader ({holder}) writes");
    dump(&client, &ns, Some(&first)).await;
    first.kill();
    second.kill();
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let root = env!("CARGO_MANIFEST_DIR");
    for name in CRD_FILES {
        let generated = std::fs::read(format!("{root}/crds/{name}")).unwrap();
        let copy = std::fs::read(format!("{root}/charts/tokenwarden/files/crds/{name}"))
            .unwrap_or_else(|e| panic!("charts/tokenwarden/files/crds/{name}: {e}"));
        assert!(
            generated == copy,
            "charts/tokenwarden/files/crds/{name} differs from crds/{name}: copy it over"
        );
    }
    let mut copies: Vec<String> =
        std::fs::read_dir(format!("{root}/charts/tokenwarden/files/crds"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
    copies.sort();
    let mut every = CRD_FILES.map(String::from).to_vec();
    every.sort();
    assert_eq!(copies, every, "no stale CRD in the chart");
}

/// The chart's admission policies, applied for one test and deleted when it ends (they are
/// cluster-wide, and exempt only their own release's operator).
struct Policies<'a> {
    cp: &'a ControlPlane,
    names: Vec<(String, String)>,
}

impl<'a> Policies<'a> {
    fn apply(cp: &'a ControlPlane, objects: &[Value]) -> Policies<'a> {
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                o["kind"]
                    .as_str()
                    .unwrap()
                    .starts_with("ValidatingAdmissionPolicy")
            })
            .collect();
        assert_eq!(policies.len(), 4, "two policies and their bindings");
        kubectl_apply(cp, &policies);
        let names = policies
            .iter()
            .map(|o| {
                let kind = o["kind"].as_str().unwrap().to_lowercase();
                (kind, o["metadata"]["name"].as_str().unwrap().to_string())
            })
            .collect();
        Policies { cp, names }
    }
}

impl Policies<'_> {
    /// Waits until the API server enforces them (loading a policy takes a moment): a tenant's
    /// dry-run of a Secret labelled as tokenwarden's is refused.
    async fn in_force(cp: &ControlPlane, client: &kube::Client) {
        let probe = Probe::new(cp, client).await;
        refused("the admission policies in force", || {
            probe.labelled_secret()
        })
        .await;
    }

    /// Deletes them and waits until the API server no longer enforces them, so the next test
    /// (another release, another ServiceAccount) is not refused by this release's policies.
    async fn lift(self, client: &kube::Client) {
        let cp = self.cp;
        drop(self);
        let probe = Probe::new(cp, client).await;
        eventually(WAIT, "the admission policies lifted", || async {
            probe.labelled_secret().await.ok()
        })
        .await;
    }
}

/// A tenant of a namespace of its own, to ask the API server whether the policies apply.
struct Probe {
    secrets: Api<Secret>,
}

impl Probe {
    async fn new(cp: &ControlPlane, client: &kube::Client) -> Probe {
        let ns = tokenwarden_testenv::namespace(client, "tw-probe").await;
        tenant_role(client, &ns).await;
        let tenant = cp.unprivileged_client().await;
        Probe {
            secrets: Api::namespaced(tenant, &ns),
        }
    }

    /// A dry run of the tenant creating a Secret labelled as tokenwarden's.
    async fn labelled_secret(&self) -> Result<(), kube::Error> {
        let labelled: Secret = serde_json::from_value(json!({
            "metadata": { "name": "probe", "labels": { "app.kubernetes.io/managed-by": "tokenwarden" } },
        }))
        .unwrap();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        self.secrets.create(&dry_run, &labelled).await.map(|_| ())
    }
}

impl Drop for Policies<'_> {
    fn drop(&mut self) {
        for (kind, name) in &self.names {
            let _ = self.cp.kubectl().args(["delete", kind, name]).output();
        }
    }
}

/// What a tenant of `ns` may do: WorkspaceTokens, Secrets, get Deployments and patch only
/// the one named `mine`.
async fn tenant_role(client: &kube::Client, ns: &str) {
    let patch_mine = json!({ "apiGroups": ["apps"], "resources": ["deployments"],
                             "verbs": ["patch"], "resourceNames": ["mine"] });
    support::tenant::grant_tenant_with(client, ns, &[patch_mine]).await;
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "app:1" }] }
            }
        }
    }))
    .unwrap()
}

/// The refusal's message, once the policy is in force (policies take a moment to load; a dry
/// run goes through admission without writing anything).
async fn refused<F, Fut>(what: &str, attempt: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    eventually(WAIT, what, || async {
        match attempt().await {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Some(s.message),
            _ => None,
        }
    })
    .await
}

/// A tenant with `edit`-like rights in one namespace, against the chart's admission
/// policies: it cannot forge a Secret tokenwarden would trust (a versioned record to adopt,
/// or one whose revocation sends a token where the tenant chooses), cannot relabel one of its
/// own into one, and cannot name as a restart target a workload it may not patch itself.
#[tokio::test]
async fn the_charts_admission_policies_stop_a_tenant_forging_records_or_restarting_others() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let ns = tokenwarden_testenv::namespace(&client, "tw-tenant").await;
    let objects = render("tw-pol", &system, &[]);
    install(cp, &objects).await;
    let policies = Policies::apply(cp, &objects);
    tenant_role(&client, &ns).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    for name in ["mine", "theirs"] {
        deployments
            .create(&PostParams::default(), &deployment(name))
            .await
            .unwrap();
    }
    let tenant = cp.unprivileged_client().await;
    let secrets: Api<Secret> = Api::namespaced(tenant.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    let forged: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "agent-v9",
            "labels": {
                "app.kubernetes.io/managed-by": "tokenwarden",
                "tokenwarden.dev/token": "agent",
                "tokenwarden.dev/version": "9",
            },
        },
        "stringData": { "issuer-url": "http://attacker.example", "workspace-id": "ws" },
    }))
    .unwrap();
    let message = refused("a forged versioned Secret refused", || async {
        secrets.create(&dry_run, &forged).await.map(|_| ())
    })
    .await;
    assert!(
        message.contains("written by the tokenwarden operator only"),
        "{message}"
    );

    let plain: Secret = serde_json::from_value(json!({
        "metadata": { "name": "mine" }, "stringData": { "k": "v" },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &plain)
        .await
        .expect("a Secret of the tenant's own");
    let relabel =
        json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": "tokenwarden" } } });
    let message = refused("relabelling a Secret as tokenwarden's refused", || async {
        secrets
            .patch("mine", &PatchParams::default(), &Patch::Merge(&relabel))
            .await
            .map(|_| ())
    })
    .await;
    assert!(message.contains("tokenwarden operator only"), "{message}");

    let tokens: Api<WorkspaceToken> = Api::namespaced(tenant.clone(), &ns);
    let with_target = |target: &str| -> WorkspaceToken {
        serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": format!("t-{target}") },
            "spec": { "workspaceId": "ws", "restartTargets": [{ "kind": "Deployment", "name": target }] },
        }))
        .unwrap()
    };
    let theirs = with_target("theirs");
    let message = refused(
        "a restart target the tenant may not patch refused",
        || async { tokens.create(&dry_run, &theirs).await.map(|_| ()) },
    )
    .await;
    assert!(
        message.contains("Deployment/theirs") && message.contains("you may not patch"),
        "{message}"
    );
    tokens
        .create(&PostParams::default(), &with_target("mine"))
        .await
        .expect("a restart target the tenant may patch");
    dump(&client, &ns, None).await;
    policies.lift(&client).await;
}

/// The built-in `edit` role manages WorkspaceTokens (aggregated by the chart), but never
/// their status, which only the operator writes.
#[tokio::test]
async fn edit_may_manage_workspace_tokens_but_not_their_status() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let ns = tokenwarden_testenv::namespace(&client, "tw-edit").await;
    install(cp, &render("tw-agg", &system, &[])).await;
    bind(cp, &ns, "edit");
    let user = tokenwarden_testenv::UNPRIVILEGED_USER;
    let resource = "workspacetokens.tokenwarden.dev";
    let can = |verb: &str, subresource: Option<&str>| {
        let mut cmd = cp.kubectl();
        cmd.args(["auth", "can-i", verb, resource, "-n", &ns, "--as", user]);
        if let Some(sub) = subresource {
            cmd.args(["--subresource", sub]);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    eventually(WAIT, "edit aggregates WorkspaceTokens", || async {
        can("create", None).then_some(())
    })
    .await;
    assert!(can("delete", None));
    assert!(!can("update", Some("status")), "status is the operator's");
}

/// Binds the built-in ClusterRole `role` (edit, admin, view) to the unprivileged user in `ns`.
fn bind(cp: &ControlPlane, ns: &str, role: &str) {
    let out = cp
        .kubectl()
        .args(["create", "rolebinding", role, "-n", ns])
        .arg(format!("--clusterrole={role}"))
        .args(["--user", tokenwarden_testenv::UNPRIVILEGED_USER])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn forbidden<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// A TokenIssuer names an admin Secret and the URL it is sent to: the built-in `edit` role
/// manages WorkspaceTokens but only reads TokenIssuers, `admin` manages them too. Neither
/// writes their status, and neither has ClusterTokenIssuers (cluster administrators only).
#[tokio::test]
async fn edit_may_not_write_token_issuers_but_admin_may() {
    let _turn = SERIAL.lock().await;
    let cp = tokenwarden_testenv::shared();
    let client = cp.admin_client().await;
    let system = tokenwarden_testenv::namespace(&client, "tw-system").await;
    let dev = tokenwarden_testenv::namespace(&client, "tw-dev").await;
    let owner = tokenwarden_testenv::namespace(&client, "tw-owner").await;
    install(cp, &render("tw-agg-issuers", &system, &[])).await;
    bind(cp, &dev, "edit");
    bind(cp, &owner, "admin");
    let tenant = cp.unprivileged_client().await;
    let token_issuer: TokenIssuer =
        serde_json::from_value(issuer("TokenIssuer", "platform")).unwrap();
    let create = PostParams::default();

    let tokens: Api<WorkspaceToken> = Api::namespaced(tenant.clone(), &dev);
    eventually(WAIT, "edit may create a WorkspaceToken", || async {
        let token = wst("t", json!({ "workspaceId": "ws-edit" }));
        tokens.create(&create, &token).await.ok()
    })
    .await;
    let in_dev: Api<TokenIssuer> = Api::namespaced(tenant.clone(), &dev);
    in_dev
        .list(&Default::default())
        .await
        .expect("edit reads TokenIssuers");
    assert!(
        forbidden(in_dev.create(&create, &token_issuer).await),
        "edit may not create a TokenIssuer"
    );

    let in_owner: Api<TokenIssuer> = Api::namespaced(tenant.clone(), &owner);
    eventually(WAIT, "admin may create a TokenIssuer", || async {
        in_owner.create(&create, &token_issuer).await.ok()
    })
    .await;
    let status = json!({ "status": { "conditions": [] } });
    let params = PatchParams::default();
    assert!(
        forbidden(
            in_owner
                .patch_status("platform", &params, &Patch::Merge(&status))
                .await
        ),
        "the status is the operator's"
    );
    let cluster: ClusterTokenIssuer =
        serde_json::from_value(issuer("ClusterTokenIssuer", "tw-agg-issuers")).unwrap();
    assert!(
        forbidden(Api::all(tenant.clone()).create(&create, &cluster).await),
        "no ClusterTokenIssuer for a namespace admin"
    );
    in_owner
        .delete("platform", &DeleteParams::default())
        .await
        .expect("admin deletes TokenIssuers");
    tokens
        .delete("t", &DeleteParams::default())
        .await
        .expect("edit deletes WorkspaceTokens");
}

/// The resources every rule of the rendered ClusterRoles and Roles grants, as `group/resource`.
fn granted(objects: &[Value]) -> Vec<String> {
    let roles = find(objects, "ClusterRole")
        .into_iter()
        .chain(find(objects, "Role"));
    let mut granted = Vec::new();
    for role in roles {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().into_iter().flatten() {
                for resource in rule["resources"].as_array().into_iter().flatten() {
                    granted.push(format!(
                        "{}/{}",
                        group.as_str().unwrap(),
                        resource.as_str().unwrap()
                    ));
                }
            }
        }
    }
    granted
}

/// `consumers.enabled: false` is for clusters where the operator may not read pods: it runs
/// with `--no-consumers` and no role grants Pods, Jobs or CronJobs (nor workloads at all when
/// restart targets are off too).
#[test]
fn without_consumers_the_operator_is_granted_no_pod_and_told_not_to_watch_them() {
    let default = render("tw", "tokenwarden", &[]);
    assert!(!operator_args(&default).contains(&"--no-consumers".to_string()));
    assert!(granted(&default).contains(&"/pods".to_string()));
    let off = render("tw", "tokenwarden", &["consumers.enabled=false"]);
    assert!(operator_args(&off).contains(&"--no-consumers".to_string()));
    let granted_off = granted(&off);
    for resource in ["/pods", "batch/jobs", "batch/cronjobs"] {
        assert!(!granted_off.contains(&resource.to_string()), "{resource}");
    }
    assert!(
        granted_off.contains(&"apps/deployments".to_string()),
        "restart targets"
    );
    let neither = render(
        "tw",
        "tokenwarden",
        &["consumers.enabled=false", "restartTargets.enabled=false"],
    );
    assert!(!granted(&neither).iter().any(|r| r.starts_with("apps/")));
}

#[test]
fn the_alerts_and_the_dashboard_ship_as_the_files_promtool_tests() {
    assert!(
        find(&render("tw", "ops", &[]), "PrometheusRule").is_empty(),
        "off by default"
    );
    let objects = render(
        "tw",
        "ops",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus",
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.namespace=monitoring",
            "serviceMonitor.enabled=true",
        ],
    );
    // The per-token series keep their own `namespace` (the alerts join and name tokens by it).
    let monitor = find(&objects, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let files = format!("{CHART}/files");
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(format!("{files}/alerts.yaml")).unwrap())
            .unwrap();
    let rule = find(&objects, "PrometheusRule")[0];
    assert_eq!(
        rule["spec"], rules,
        "the PrometheusRule carries alerts.yaml as it is"
    );
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{files}/dashboard.json")).unwrap())
            .unwrap();
    let map = (find(&objects, "ConfigMap").into_iter())
        .find(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap with the sidecar's label");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    let shipped = map["data"]["tokenwarden.json"]
        .as_str()
        .expect("the dashboard");
    assert_eq!(serde_json::from_str::<Value>(shipped).unwrap(), dashboard);
}
