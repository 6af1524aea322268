//! The command line: `run`, `crd`, `status`, `rotate`, `revoke`, `completion`, with kubectl's
//! `--kubeconfig`, `--context`, `-n`, `-A`, `-l` and `-o`. Every error is one line and a
//! non-zero exit (1: the command failed; 2: the command line is wrong); nothing here can print
//! a token (status holds hashes and prefixes only).

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};

use crate::api::{VersionState, WorkspaceToken};
use crate::cluster::{Connection, client_and_namespace, not_found};
use crate::contract::REVOKE_VERSION_ANNOTATION;

/// Examples and exit codes, under `tokenwarden --help`.
const AFTER_HELP: &str = "\
Examples:
  tokenwarden status -A                          every WorkspaceToken, every namespace
  tokenwarden status agent -n team-a -o yaml     one token's versions, as YAML
  tokenwarden rotate -l team=payments -A --reason \"offboarding\" --wait
  tokenwarden revoke agent --version 3 -n team-a --context prod
  source <(tokenwarden completion bash)          completion in this shell

Also run by kubectl as `kubectl tokenwarden ...` (the binary on PATH as kubectl-tokenwarden).

Exit codes:
  0  done
  1  the command failed: one line on stderr (not found, forbidden, unreachable, --wait timed out)
  2  the command line is wrong: usage on stderr";

#[derive(Parser, Debug)]
#[command(
    name = "tokenwarden",
    version,
    about = "Mints, rotates and revokes workspace bearer tokens in Kubernetes",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// The executable name kubectl looks up on PATH for `kubectl tokenwarden ...`.
pub(crate) const KUBECTL_PLUGIN: &str = "kubectl-tokenwarden";

impl Cli {
    /// Parses the process's arguments, exiting with clap's message on an error or `--help`.
    pub fn parse_args() -> Self {
        Self::try_parse_args_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Like `Cli::try_parse_from`, except that when run as the kubectl plugin (argv[0] is
    /// `kubectl-tokenwarden`, possibly a symlink) usage and help say `kubectl tokenwarden`.
    pub(crate) fn try_parse_args_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Self::command();
        if args.first().is_some_and(|argv0| is_kubectl_plugin(argv0)) {
            command = command.bin_name("kubectl tokenwarden");
        }
        let mut matches = command.try_get_matches_from_mut(args)?;
        Self::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// Whether argv[0] names the kubectl plugin executable.
fn is_kubectl_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.trim_end_matches(".exe") == KUBECTL_PLUGIN)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(crate::run::RunArgs),
    /// Print the WorkspaceToken CRD as YAML.
    Crd,
    /// Show WorkspaceTokens: versions, states, prefixes, times.
    #[command(
        after_help = "Examples:\n  tokenwarden status\n  tokenwarden status -A -l team=payments\n  \
                            tokenwarden status agent -n team-a -o json"
    )]
    Status {
        /// One WorkspaceToken; all in the namespace when omitted.
        #[arg(conflicts_with = "selector")]
        name: Option<String>,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        /// Only WorkspaceTokens with these labels (`team=a`, `tier in (prod)`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Ask for a rotation now (sets the tokenwarden.dev/rotate annotation): one
    /// WorkspaceToken, or with -l every one a label selector picks, sharing one trace id.
    Rotate(crate::fleet::Request),
    /// Revoke one version now (rotating first when it is the current one).
    #[command(after_help = "Example:\n  tokenwarden revoke agent --version 3 -n team-a")]
    Revoke {
        /// The WorkspaceToken.
        name: String,
        /// The version to revoke (N of vN).
        #[arg(long)]
        version: u32,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  source <(tokenwarden completion bash)\n  \
                            tokenwarden completion zsh > \"${fpath[1]}/_tokenwarden\"\n  \
                            tokenwarden completion fish > ~/.config/fish/completions/tokenwarden.fish")]
    Completion {
        #[arg(value_enum)]
        shell: crate::completion::Shell,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub async fn execute(cli: Cli) -> CliResult {
    let connection = &cli.connection;
    match cli.command {
        Command::Run(args) => Ok(crate::run::run(args, connection).await?),
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(())
        }
        Command::Status {
            name,
            namespace,
            all_namespaces,
            selector,
            output,
        } => {
            let (client, ns) = client_and_namespace(connection, namespace).await?;
            let shown = Shown {
                name,
                all: all_namespaces,
                selector,
            };
            status(client, &ns, shown, output).await
        }
        Command::Rotate(request) => crate::fleet::rotate(request, connection).await,
        Command::Revoke {
            name,
            version,
            namespace,
        } => {
            let (client, ns) = client_and_namespace(connection, namespace).await?;
            revoke(client, &ns, &name, version).await
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            print!("{}", crate::completion::script(Cli::command(), shell));
            Ok(())
        }
    }
}

/// Which WorkspaceTokens `status` shows.
struct Shown {
    name: Option<String>,
    all: bool,
    selector: Option<String>,
}

/// The CRDs, each exactly as its file in `crds/` holds it, in this order.
pub const CRD_FILES: [&str; 3] = [
    "workspacetokens.tokenwarden.dev.yaml",
    "tokenissuers.tokenwarden.dev.yaml",
    "clustertokenissuers.tokenwarden.dev.yaml",
];

/// Every CRD as YAML, in the order of [`CRD_FILES`].
pub fn crds() -> Result<[String; 3], serde_norway::Error> {
    Ok([
        serde_norway::to_string(&WorkspaceToken::crd())?,
        serde_norway::to_string(&crate::api::TokenIssuer::crd())?,
        serde_norway::to_string(&crate::api::ClusterTokenIssuer::crd())?,
    ])
}

/// What `tokenwarden crd` prints: every CRD, one YAML document each.
pub(crate) fn crd_yaml() -> Result<String, serde_norway::Error> {
    Ok(crds()?.join("---\n"))
}

async fn status(client: kube::Client, ns: &str, shown: Shown, output: Output) -> CliResult {
    let api: Api<WorkspaceToken> = if shown.all {
        Api::all(client)
    } else {
        Api::namespaced(client, ns)
    };
    let items = match &shown.name {
        Some(name) => vec![api.get(name).await.map_err(not_found(name, ns))?],
        None => {
            let mut params = ListParams::default();
            if let Some(selector) = &shown.selector {
                params = params.labels(selector);
            }
            (api.list(&params).await)
                .map_err(|e| format!("list WorkspaceTokens: {e}"))?
                .items
        }
    };
    let shown_one = shown.name.is_some();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&as_data(&items, shown_one))?
        ),
        Output::Yaml => print!("{}", serde_norway::to_string(&as_data(&items, shown_one))?),
        Output::Table if shown_one => print!("{}", version_table(&items[0])),
        Output::Table => print!("{}", token_table(&items, shown.all)),
    }
    Ok(())
}

/// What `-o json` and `-o yaml` print: each token's identity and status (hashes and prefixes
/// only); one object for a named token, else a list.
fn as_data(items: &[WorkspaceToken], one: bool) -> serde_json::Value {
    let shown = items.iter().map(|w| {
        serde_json::json!({
            "namespace": w.namespace(),
            "name": w.name_any(),
            "workspaceId": w.spec.workspace_id,
            "status": w.status,
        })
    });
    if one {
        shown.into_iter().next().unwrap_or_default()
    } else {
        serde_json::Value::Array(shown.collect())
    }
}

/// One row per WorkspaceToken.
pub(crate) fn token_table(items: &[WorkspaceToken], with_namespace: bool) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "WORKSPACE".into(),
        "VERSION".into(),
        "PREFIX".into(),
        "READY".into(),
        "LAST ROTATION".into(),
        "NEXT ROTATION".into(),
    ]];
    if with_namespace {
        rows[0].insert(0, "NAMESPACE".into());
    }
    for w in items {
        let s = w.status.clone().unwrap_or_default();
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| format!("{} ({})", c.status, c.reason))
            .unwrap_or_else(|| "-".into());
        let mut row = vec![
            w.name_any(),
            w.spec.workspace_id.clone(),
            s.token_version.unwrap_or_else(|| "-".into()),
            s.token_prefix.unwrap_or_else(|| "-".into()),
            ready,
            s.last_rotation_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| "-".into()),
            s.next_rotation_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| "-".into()),
        ];
        if with_namespace {
            row.insert(0, w.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    render_table(&rows)
}

/// One row per version of a WorkspaceToken.
pub(crate) fn version_table(w: &WorkspaceToken) -> String {
    let s = w.status.clone().unwrap_or_default();
    let mut rows = vec![vec![
        "VERSION".to_string(),
        "STATE".into(),
        "PREFIX".into(),
        "SHA256".into(),
        "CREATED".into(),
        "ACTIVATED".into(),
        "RETIRE AT".into(),
        "REVOKED".into(),
        "HELD BY".into(),
    ]];
    for v in &s.versions {
        rows.push(vec![
            format!("v{}", v.version),
            format!("{:?}", v.state),
            v.token_prefix.clone().unwrap_or_else(|| "-".into()),
            v.token_sha256
                .as_deref()
                .map(|h| format!("{}…", &h[..h.len().min(12)]))
                .unwrap_or_else(|| "-".into()),
            time(&v.created_at),
            time(&v.activated_at),
            time(&v.retire_at),
            time(&v.revoked_at),
            if v.retire_held_by.is_empty() {
                "-".into()
            } else {
                v.retire_held_by.join(", ")
            },
        ]);
    }
    format!(
        "{}/{} (workspace {})\n{}{}{}",
        w.namespace().unwrap_or_default(),
        w.name_any(),
        w.spec.workspace_id,
        render_table(&rows),
        consumer_table(&s.consumers),
        unmanaged_table(&s.unmanaged_tokens)
    )
}

/// A time of status as a table cell ("-" when absent).
fn time(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Live tokens of the workspace that no WorkspaceToken holds.
fn unmanaged_table(unmanaged: &[crate::api::UnmanagedTokenStatus]) -> String {
    let header = ["UNMANAGED", "CREATED", "LAST USED", "UNMANAGED SINCE"];
    let rows = unmanaged.iter().map(|u| {
        vec![
            u.prefix.clone(),
            time(&Some(u.created_at.clone())),
            time(&u.last_used_at),
            time(&Some(u.unmanaged_since.clone())),
        ]
    });
    section(&header, rows.collect())
}

/// Who reads the token, and whether a cutover reaches them.
fn consumer_table(consumers: &[crate::api::ConsumerStatus]) -> String {
    let header = ["CONSUMER", "VIA", "RESTART TARGET"];
    let rows = consumers.iter().map(|c| {
        vec![
            format!("{}/{}", c.kind, c.name),
            c.via.clone(),
            if c.restart_target { "yes" } else { "no" }.into(),
        ]
    });
    section(&header, rows.collect())
}

/// A table under the versions, after a blank line; nothing when it has no rows.
fn section(header: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let header = header.iter().map(|h| h.to_string()).collect();
    let table: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    format!("\n{}", render_table(&table))
}

fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

async fn annotate(
    api: &Api<WorkspaceToken>,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("annotate WorkspaceToken {name}: {e}"))?;
    Ok(())
}

async fn revoke(client: kube::Client, ns: &str, name: &str, version: u32) -> CliResult {
    let api: Api<WorkspaceToken> = Api::namespaced(client, ns);
    let wst = api.get(name).await.map_err(not_found(name, ns))?;
    let state = wst
        .status
        .as_ref()
        .and_then(|s| s.versions.iter().find(|v| v.version == version))
        .map(|v| v.state);
    match state {
        None => return Err(format!("{ns}/{name} has no version {version}").into()),
        Some(VersionState::Revoked) => {
            return Err(format!("version {version} of {ns}/{name} is already revoked").into());
        }
        Some(_) => {}
    }
    annotate(&api, name, REVOKE_VERSION_ANNOTATION, &version.to_string()).await?;
    println!("revocation of version {version} of {ns}/{name} requested");
    Ok(())
}

#[cfg(test)]
mod plugin_name_tests {
    use super::Cli;

    fn help(args: &[&str]) -> String {
        Cli::try_parse_args_from(args)
            .expect_err("--help exits through clap")
            .to_string()
    }

    #[test]
    fn installed_as_kubectl_tokenwarden_usage_says_kubectl_tokenwarden() {
        let argv0 = "/home/u/.local/bin/kubectl-tokenwarden";
        assert!(
            help(&[argv0, "--help"]).contains("Usage: kubectl tokenwarden [OPTIONS] <COMMAND>")
        );
        assert!(
            help(&[argv0, "rotate", "--help"])
                .contains("Usage: kubectl tokenwarden rotate [OPTIONS] [NAME]")
        );
    }

    #[test]
    fn as_itself_usage_says_tokenwarden() {
        assert!(help(&["./target/release/tokenwarden", "--help"]).contains("Usage: tokenwarden"));
        assert!(help(&["tokenwarden", "status", "--help"]).contains("Usage: tokenwarden status"));
    }

    #[test]
    fn plugin_arguments_parse_like_the_binarys() {
        let cli = Cli::try_parse_args_from([
            "kubectl-tokenwarden",
            "rotate",
            "agent-alpha",
            "-n",
            "team-a",
            "--wait",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            super::Command::Rotate(ref r) if r.name.as_deref() == Some("agent-alpha") && r.wait
        ));
    }
}

#[cfg(test)]
mod version_table_tests {
    #[test]
    fn a_held_version_says_what_holds_it() {
        let wst: crate::api::WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "agent", "namespace": "team-a" },
            "spec": { "workspaceId": "ws-1" },
            "status": { "versions": [
                { "version": 2, "secretName": "agent-v2", "state": "Active" },
                { "version": 1, "secretName": "agent-v1", "state": "Retiring",
                  "retireAt": "2026-01-07T00:00:00Z",
                  "retireHeldBy": ["Deployment/agent 1/2 updated", "Deployment/web restart pending"] },
            ]},
        }))
        .unwrap();
        let table = super::version_table(&wst);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].ends_with("HELD BY"), "{table}");
        assert!(
            lines[2].trim_end().ends_with('-'),
            "v2 holds nothing: {table}"
        );
        assert!(
            lines[3].ends_with("Deployment/agent 1/2 updated, Deployment/web restart pending"),
            "{table}"
        );
    }

    #[test]
    fn consumers_follow_the_versions_with_how_they_read_and_whether_a_cutover_rolls_them() {
        let wst: crate::api::WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "agent", "namespace": "team-a" },
            "spec": { "workspaceId": "ws-1" },
            "status": {
                "versions": [{ "version": 1, "secretName": "agent-v1", "state": "Active" }],
                "consumers": [
                    { "kind": "Deployment", "name": "agent", "via": "env", "restartTarget": true },
                    { "kind": "CronJob", "name": "report", "via": "envFrom", "restartTarget": false },
                ],
            },
        }))
        .unwrap();
        let table = super::version_table(&wst);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .skip_while(|l| !l.starts_with("CONSUMER"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec!["CONSUMER", "VIA", "RESTART", "TARGET"],
                vec!["Deployment/agent", "env", "yes"],
                vec!["CronJob/report", "envFrom", "no"],
            ],
            "{table}"
        );
    }

    #[test]
    fn unmanaged_tokens_follow_with_when_they_were_made_used_and_first_seen() {
        let wst: crate::api::WorkspaceToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "WorkspaceToken",
            "metadata": { "name": "agent", "namespace": "team-a" },
            "spec": { "workspaceId": "ws-1" },
            "status": {
                "versions": [{ "version": 1, "secretName": "agent-v1", "state": "Active" }],
                "unmanagedTokens": [{
                    "prefix": "regtoken", "createdAt": "2026-11-01T00:00:00Z",
                    "unmanagedSince": "2026-12-01T10:00:00Z",
                }],
            },
        }))
        .unwrap();
        let table = super::version_table(&wst);
        let lines: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("UNMANAGED"))
            .collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[1].starts_with("regtoken"), "{table}");
        assert!(
            lines[1].contains("2026-11-01") && lines[1].contains("2026-12-01"),
            "{table}"
        );
    }
}
