//! Every manifest in examples/ is accepted by the real API server (server-side dry run with
//! the kubectl users run).

mod support;

use support::*;

#[tokio::test]
async fn every_example_passes_a_server_side_dry_run() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "examples").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("kustomization.yaml") {
            continue;
        }
        let output = cp
            .kubectl()
            .args(["apply", "--dry-run=server", "-n", &ns, "-f"])
            .arg(&path)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "{} rejected: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 4, "examples checked: {checked}");
}
