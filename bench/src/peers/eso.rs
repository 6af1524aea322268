//! External Secrets Operator (ESO) as the peer: its CRDs, its controller process and the
//! objects that make it write one generated Secret per ExternalSecret.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tokenwarden_testenv::ControlPlane;

use crate::operator::{OperatorProcess, free_local_addr};

/// The generator every ExternalSecret takes its data from.
pub const GENERATOR: &str = "bench-password";
/// The key the Password generator writes into each target Secret.
pub const DATA_KEY: &str = "password";

/// The controller's flags besides `--metrics-addr`, and why:
/// - `--concurrent`: the same reconcile concurrency as tokenwarden's `--concurrency`;
/// - `--client-qps=-1`: client-go builds no token-bucket limiter for a QPS <= 0
///   (rest.RESTClientFor: `if qps > 0 { NewTokenBucketRateLimiter }`), and tokenwarden's
///   kube-rs client has none; the default (50 QPS, burst 100) would throttle ESO, not the
///   machine;
/// - the cluster-scoped and push reconcilers off: the bench has no such objects, and ESO's
///   Helm chart leaves them on only to serve them;
/// - leader election off, like tokenwarden's default.
///
/// Everything else is ESO's default: managed-Secrets cache on, all-Secrets cache off,
/// flood gate on, the workqueue's built-in rate limiter (10/s, burst 100, for retries).
pub fn flags(concurrency: u16) -> Vec<String> {
    [
        format!("--concurrent={concurrency}"),
        "--client-qps=-1".into(),
        "--client-burst=0".into(),
        "--enable-cluster-store-reconciler=false".into(),
        "--enable-cluster-external-secret-reconciler=false".into(),
        "--enable-push-secret-reconciler=false".into(),
        "--enable-cluster-push-secret-reconciler=false".into(),
        "--enable-leader-election=false".into(),
        "--loglevel=info".into(),
    ]
    .into()
}

/// Starts `<dir>/bin/external-secrets` (its root command: the controller) as admin.
pub fn start(dir: &Path, kubeconfig: &Path, concurrency: u16, log: &Path) -> OperatorProcess {
    let metrics_addr = free_local_addr();
    let mut command = Command::new(dir.join("bin/external-secrets"));
    command
        .arg(format!("--metrics-addr={metrics_addr}"))
        .args(flags(concurrency))
        .env("KUBECONFIG", kubeconfig);
    OperatorProcess::spawn(command, metrics_addr, log)
}

/// Server-side applies `<dir>/crds/bundle.yaml` (one CRD is too large for client-side
/// apply's last-applied annotation) and waits until every CRD is established.
pub fn install_crds(cp: &ControlPlane, dir: &Path) {
    let bundle = dir.join("crds/bundle.yaml");
    let run = |args: &[&str]| {
        let out = cp.kubectl().args(args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let bundle = bundle.to_str().expect("UTF-8 path");
    run(&[
        "apply",
        "--server-side",
        "--field-manager=tokenwarden-bench",
        "-f",
        bundle,
    ]);
    run(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "-f",
        bundle,
    ]);
}

/// The one Password generator: 32 characters.
pub fn password_generator() -> Value {
    json!({
        "apiVersion": "generators.external-secrets.io/v1alpha1",
        "kind": "Password",
        "metadata": { "name": GENERATOR },
        "spec": { "length": 32, "digits": 8, "symbols": 0, "noUpper": false, "allowRepeat": true },
    })
}

/// An ExternalSecret whose target Secret (same name) holds `password` from the generator.
pub fn external_secret(name: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": { "name": name },
        "spec": {
            "refreshInterval": "1h",
            "target": { "name": name },
            "dataFrom": [{ "sourceRef": { "generatorRef": {
                "apiVersion": "generators.external-secrets.io/v1alpha1",
                "kind": "Password",
                "name": GENERATOR,
            }}}],
        },
    })
}

/// The sum of a metric family's samples whose labels include `label` (`name="value"`).
pub fn metric_with(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            l.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// ExternalSecret reconciles this process finished, as controller-runtime counts them.
pub fn reconciled(page: &str) -> f64 {
    metric_with(
        page,
        "controller_runtime_reconcile_total",
        "controller=\"externalsecret\"",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_externalsecret_controllers_reconciles_only() {
        let page = "\
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller=\"externalsecret\",result=\"success\"} 990
controller_runtime_reconcile_total{controller=\"externalsecret\",result=\"requeue_after\"} 10
controller_runtime_reconcile_total{controller=\"externalsecret\",result=\"error\"} 2
controller_runtime_reconcile_total{controller=\"secretstore\",result=\"success\"} 7
controller_runtime_reconcile_errors_total{controller=\"externalsecret\"} 2
";
        assert_eq!(reconciled(page), 1002.0);
        assert_eq!(reconciled(""), 0.0);
    }

    #[test]
    fn the_flags_turn_the_client_limiter_off_and_the_unused_reconcilers_off() {
        let flags = flags(16);
        for want in [
            "--concurrent=16",
            "--client-qps=-1",
            "--enable-cluster-store-reconciler=false",
            "--enable-push-secret-reconciler=false",
        ] {
            assert!(flags.iter().any(|f| f == want), "{want} missing");
        }
    }

    #[test]
    fn an_external_secret_targets_its_own_name_from_the_generator() {
        let es = external_secret("peer-00001");
        assert_eq!(es["spec"]["target"]["name"], "peer-00001");
        let generator = &es["spec"]["dataFrom"][0]["sourceRef"]["generatorRef"];
        assert_eq!(generator["name"], password_generator()["metadata"]["name"]);
        assert_eq!(generator["kind"], password_generator()["kind"]);
    }
}
