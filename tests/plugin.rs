//! tokenwarden as a kubectl plugin: the same binary, on PATH as `kubectl-tokenwarden`, is run
//! by the real kubectl as `kubectl tokenwarden status|rotate|revoke`, with human tables by
//! default and `-o json`, and never prints a token. Tokens are compared by their SHA-256 only,
//! so a failing assertion can't print one.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::Api;
use serde_json::json;
use support::*;
use tokenwarden::api::{VersionState, WorkspaceToken};
use tokenwarden::token::sha256_hex;
use tokenwarden_testenv::ControlPlane;

const WAIT: Duration = Duration::from_secs(30);

/// A directory holding only `kubectl-tokenwarden`, a symlink to the binary under test, as
/// `make install-plugin` or `ln -s` would leave it.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_tokenwarden"),
            dir.path().join("kubectl-tokenwarden"),
        )
        .expect("symlink kubectl-tokenwarden");
        Plugin { dir }
    }

    fn executable(&self) -> PathBuf {
        self.dir.path().join("kubectl-tokenwarden")
    }

    /// The real kubectl, admin kubeconfig, with the plugin's directory first on PATH.
    fn kubectl(&self, cp: &ControlPlane) -> Command {
        let mut path = vec![self.dir.path().to_path_buf()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut kubectl = cp.kubectl();
        kubectl.env(
            "PATH",
            std::env::join_paths(path).expect("PATH without separators"),
        );
        kubectl
    }
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs kubectl with `args`, keeping what it printed in the artifacts for the leak scan.
fn run(plugin: &Plugin, cp: &ControlPlane, args: &[&str]) -> Run {
    let output = plugin.kubectl(cp).args(args).output().expect("run kubectl");
    let run = Run {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let record = format!(
        "$ kubectl {}\n{}{}\n",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(artifacts_dir().join("kubectl-plugin-output.txt"))
        .and_then(|mut log| log.write_all(record.as_bytes()))
        .expect("write plugin output");
    run
}

fn succeeds(plugin: &Plugin, cp: &ControlPlane, args: &[&str]) -> String {
    let run = run(plugin, cp, args);
    assert!(run.ok, "kubectl {} failed: {}", args.join(" "), run.stderr);
    run.stdout
}

/// Every token the WorkspaceToken's Secrets hold now, to look for in what the plugin printed.
async fn tokens_in_secrets(client: &kube::Client, ns: &str, secret: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for name in secret_names(client, ns).await {
        if !name.starts_with(secret) {
            continue;
        }
        if let Some(s) = support::secret(client, ns, &name).await {
            tokens.extend(data(&s, "token"));
            tokens.extend(data(&s, "previous-token"));
        }
    }
    tokens
}

fn assert_no_token(output: &str, tokens: &[String]) {
    assert!(!tokens.is_empty(), "no token to look for");
    for token in tokens {
        assert!(
            !output.contains(token.as_str()),
            "the plugin printed the token whose SHA-256 is {}",
            sha256_hex(token.as_bytes())
        );
    }
}

fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{table}"))
}

#[tokio::test]
async fn kubectl_plugin_list_finds_kubectl_tokenwarden_on_path() {
    let cp = control_plane().await;
    let plugin = Plugin::install();
    let listed = succeeds(&plugin, cp, &["plugin", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| Path::new(l.trim()) == plugin.executable()),
        "kubectl plugin list:\n{listed}"
    );
}

#[tokio::test]
async fn help_and_usage_say_kubectl_tokenwarden() {
    let cp = control_plane().await;
    let plugin = Plugin::install();
    let help = succeeds(&plugin, cp, &["tokenwarden", "--help"]);
    assert!(
        help.contains("Usage: kubectl tokenwarden [OPTIONS] <COMMAND>"),
        "{help}"
    );
    for command in ["status", "rotate", "revoke"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
        let help = succeeds(&plugin, cp, &["tokenwarden", command, "--help"]);
        assert!(
            help.contains(&format!("Usage: kubectl tokenwarden {command}")),
            "{help}"
        );
    }
    let misuse = run(&plugin, cp, &["tokenwarden", "rotate"]);
    assert_eq!(misuse.code, Some(2), "a wrong command line exits 2");
    assert!(
        misuse.stderr.contains("Usage: kubectl tokenwarden rotate"),
        "{}",
        misuse.stderr
    );
}

#[tokio::test]
async fn an_unknown_workspace_token_is_one_clear_error_line_and_a_non_zero_exit() {
    let cp = control_plane().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "plugin-missing").await;
    let plugin = Plugin::install();
    for args in [
        vec!["tokenwarden", "status", "nope", "-n", &ns],
        vec!["tokenwarden", "rotate", "nope", "-n", &ns],
        vec!["tokenwarden", "revoke", "nope", "--version", "1", "-n", &ns],
    ] {
        let run = run(&plugin, cp, &args);
        assert_eq!(run.code, Some(1), "{args:?}: a failed command exits 1");
        assert_eq!(
            run.stderr.trim_end(),
            format!("error: WorkspaceToken {ns}/nope not found"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn kubectl_tokenwarden_shows_rotates_and_revokes_without_ever_printing_a_token() {
    let cp = control_plane().await;
    let operator = shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "plugin").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let plugin = Plugin::install();
    create(
        &api,
        "agent-alpha",
        json!({
            "workspaceId": "948bab9a-2cad-4a3f-af1f-01bfe260f85b",
            "token": { "prefix": "wst_" },
            "rotation": { "gracePeriod": "1h" }
        }),
    )
    .await;
    let v1 = wait_version(&api, "agent-alpha", 1, WAIT).await;
    let v1_prefix = v1.status.unwrap().token_prefix.expect("v1 prefix");
    let mut tokens = tokens_in_secrets(&client, &ns, "agent-alpha").await;

    // A human table by default: one row per WorkspaceToken.
    let table = succeeds(&plugin, cp, &["tokenwarden", "status", "-n", &ns]);
    assert!(row(&table, "NAME").contains("READY"), "{table}");
    let alpha = row(&table, "agent-alpha");
    for column in [
        "948bab9a-2cad-4a3f-af1f-01bfe260f85b",
        "v1",
        &v1_prefix,
        "True (Active)",
    ] {
        assert!(alpha.contains(column), "{column} missing from:\n{table}");
    }

    // A manual rotation, waited for.
    let rotated = succeeds(
        &plugin,
        cp,
        &["tokenwarden", "rotate", "agent-alpha", "-n", &ns, "--wait"],
    );
    assert!(
        rotated.contains(&format!("{ns}/agent-alpha rotated to v2")),
        "{rotated}"
    );
    tokens.extend(tokens_in_secrets(&client, &ns, "agent-alpha").await);

    // JSON: the status with hashes and prefixes, the version advanced.
    let shown = succeeds(
        &plugin,
        cp,
        &[
            "tokenwarden",
            "status",
            "agent-alpha",
            "-n",
            &ns,
            "-o",
            "json",
        ],
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("status -o json is JSON");
    assert_eq!(shown["name"], "agent-alpha");
    assert_eq!(shown["namespace"], ns.as_str());
    let status = &shown["status"];
    assert_eq!(status["currentVersion"], 2);
    assert_eq!(status["tokenVersion"], "v2");
    let mounted = support::secret(&client, &ns, "agent-alpha")
        .await
        .expect("S");
    let current = data(&mounted, "token").expect("token key");
    assert_eq!(
        status["tokenSha256"].as_str(),
        Some(sha256_hex(current.as_bytes()).as_str())
    );
    let states: Vec<(u64, &str)> = status["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(2, "Active"), (1, "Retiring")]);

    // One WorkspaceToken's versions as a table.
    let versions = succeeds(
        &plugin,
        cp,
        &["tokenwarden", "status", "agent-alpha", "-n", &ns],
    );
    assert!(row(&versions, "v2").contains("Active"), "{versions}");
    assert!(row(&versions, "v1").contains("Retiring"), "{versions}");

    // Revoke the retiring version now.
    let revoked = succeeds(
        &plugin,
        cp,
        &[
            "tokenwarden",
            "revoke",
            "agent-alpha",
            "--version",
            "1",
            "-n",
            &ns,
        ],
    );
    assert!(revoked.contains("revocation of version 1"), "{revoked}");
    eventually(WAIT, "v1 revoked", || async {
        let w = api.get("agent-alpha").await.ok()?;
        let s = w.status?;
        s.versions
            .iter()
            .any(|v| v.version == 1 && v.state == VersionState::Revoked)
            .then_some(())
    })
    .await;
    assert!(
        support::secret(&client, &ns, "agent-alpha-v1")
            .await
            .is_none()
    );
    let all = succeeds(&plugin, cp, &["tokenwarden", "status", "-A", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_str(&all).expect("status -A -o json is JSON");
    assert!(
        all.as_array()
            .expect("a list")
            .iter()
            .any(|w| w["namespace"] == ns.as_str() && w["status"]["currentVersion"] == 2)
    );

    // Nothing the plugin printed holds a token, current, previous or revoked.
    let printed = std::fs::read_to_string(artifacts_dir().join("kubectl-plugin-output.txt"))
        .expect("plugin output");
    assert_no_token(&printed, &tokens);
    dump(&client, &ns, Some(operator)).await;
}

/// `kubeconfig` with its one context renamed `here` (namespace `ns`) and a second one,
/// `elsewhere` (namespace `nowhere`), current: only `--context here` finds `ns`'s tokens.
fn two_contexts(kubeconfig: &Path, ns: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(kubeconfig).expect("admin kubeconfig");
    let mut config: serde_json::Value = serde_norway::from_str(&text).expect("kubeconfig YAML");
    let context = config["contexts"][0]["context"].clone();
    let with = |name: &str, namespace: &str| {
        let mut context = context.clone();
        context["namespace"] = json!(namespace);
        json!({ "name": name, "context": context })
    };
    config["contexts"] = json!([with("here", ns), with("elsewhere", "nowhere")]);
    config["current-context"] = json!("elsewhere");
    let mut file = tempfile::NamedTempFile::new().expect("kubeconfig file");
    file.write_all(serde_json::to_string(&config).unwrap().as_bytes())
        .expect("write kubeconfig");
    file
}

#[tokio::test]
async fn kubectls_flags_after_the_plugin_name_pick_the_cluster_the_tokens_and_the_format() {
    let cp = control_plane().await;
    shared_operator().await;
    let client = cp.admin_client().await;
    let ns = tokenwarden_testenv::namespace(&client, "plugin-flags").await;
    let api: Api<WorkspaceToken> = Api::namespaced(client.clone(), &ns);
    let labelled = json!({ "workspaceId": "ws-a" });
    create(&api, "alpha", labelled).await;
    create(&api, "beta", json!({ "workspaceId": "ws-b" })).await;
    let patch = json!({ "metadata": { "labels": { "team": "payments" } } });
    api.patch(
        "alpha",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("label alpha");
    wait_version(&api, "alpha", 1, WAIT).await;
    let plugin = Plugin::install();
    let kubeconfig = two_contexts(cp.admin_kubeconfig(), &ns);
    let file = kubeconfig.path().to_str().unwrap();
    // kubectl hands a plugin only what follows its name; KUBECONFIG points nowhere useful.
    let with_flags = |args: &[&str]| {
        let mut kubectl = plugin.kubectl(cp);
        kubectl.env("KUBECONFIG", "/nonexistent/kubeconfig");
        let output = kubectl.args(args).output().expect("run kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kubectl {args:?}: {stderr}");
        stdout
    };
    let here = with_flags(&[
        "tokenwarden",
        "status",
        "--kubeconfig",
        file,
        "--context",
        "here",
    ]);
    row(&here, "alpha");
    row(&here, "beta");
    let elsewhere = with_flags(&["tokenwarden", "status", "--kubeconfig", file]);
    assert!(
        !elsewhere.contains("alpha"),
        "the current context's namespace:\n{elsewhere}"
    );

    let picked = with_flags(&[
        "tokenwarden",
        "status",
        "-A",
        "-l",
        "team=payments",
        "-o",
        "yaml",
        "--kubeconfig",
        file,
    ]);
    let picked: Vec<serde_json::Value> = serde_norway::from_str(&picked).expect("-o yaml is YAML");
    let names: Vec<&str> = (picked.iter()).filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["alpha"], "-l picks the labelled token only");
    assert_eq!(picked[0]["namespace"], ns.as_str());
    assert_eq!(picked[0]["status"]["currentVersion"], 1);

    // kubectl completes its plugin by running kubectl_complete-tokenwarden from PATH.
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_tokenwarden"),
        plugin.dir.path().join("kubectl_complete-tokenwarden"),
    )
    .expect("symlink kubectl_complete-tokenwarden");
    let completed = |args: &[&str]| {
        let mut words = vec!["__complete", "tokenwarden"];
        words.extend(args);
        with_flags(&words)
    };
    let commands = completed(&["st"]);
    assert!(
        commands.lines().any(|l| l.starts_with("status\t")),
        "{commands}"
    );
    let names = completed(&["status", "--kubeconfig", file, "--context", "here", ""]);
    for name in ["alpha", "beta"] {
        assert!(
            names.lines().any(|l| l == name),
            "{name} missing from:\n{names}"
        );
    }
    assert!(names.contains(":4"), "no file names among them:\n{names}");
    let outputs = completed(&["status", "-o", ""]);
    for format in ["table", "json", "yaml"] {
        assert!(outputs.lines().any(|l| l.starts_with(format)), "{outputs}");
    }
    let contexts = completed(&["rotate", "--kubeconfig", file, "--context", ""]);
    assert!(contexts.lines().any(|l| l == "here"), "{contexts}");
    dump(&client, &ns, Some(shared_operator().await)).await;
}

#[tokio::test]
async fn the_completion_scripts_load_in_their_shells() {
    let cp = control_plane().await;
    let plugin = Plugin::install();
    let script = succeeds(&plugin, cp, &["tokenwarden", "completion", "bash"]);
    let loaded = Command::new("bash")
        .args(["-c", "source /dev/stdin; complete -p tokenwarden"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut bash| {
            bash.stdin.take().unwrap().write_all(script.as_bytes())?;
            bash.wait_with_output()
        })
        .expect("run bash");
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        said.contains("_tokenwarden") && said.contains("tokenwarden"),
        "{said}"
    );
    for shell in ["zsh", "fish"] {
        let script = succeeds(&plugin, cp, &["tokenwarden", "completion", shell]);
        assert!(script.contains("tokenwarden"), "{shell}: {script}");
    }
    let wrong = run(&plugin, cp, &["tokenwarden", "completion", "powershell"]);
    assert_eq!(
        wrong.code,
        Some(2),
        "an unknown shell is a wrong command line"
    );
}
