//! Shell completion. `tokenwarden completion bash|zsh|fish` prints clap_complete's script for
//! the binary. For the kubectl plugin, kubectl (1.26+) completes `kubectl tokenwarden ...` by
//! running `kubectl_complete-tokenwarden ARG... PARTIAL` from PATH and reading cobra's answer:
//! one candidate per line (then a tab and its description), then `:DIRECTIVE`. The same binary
//! answers when run under that name: commands, flags, `-o` values, and the names of
//! WorkspaceTokens, namespaces and contexts (read from the cluster and kubeconfig the words
//! name; nothing when they cannot be read).

use std::time::Duration;

use clap::{Arg, ValueEnum};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::Kubeconfig;

use crate::api::WorkspaceToken;
use crate::cluster::Connection;

/// The executable name kubectl runs to complete `kubectl tokenwarden ...`.
pub const KUBECTL_COMPLETE: &str = "kubectl_complete-tokenwarden";

/// cobra's ShellCompDirectiveNoFileComp: offer only the candidates given.
const NO_FILES: u8 = 4;
/// cobra's ShellCompDirectiveDefault: the shell may complete file names.
const FILES: u8 = 0;

/// The shells `tokenwarden completion` writes for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script of the command line `cli` for `shell`.
pub fn script(mut cli: clap::Command, shell: Shell) -> String {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, "tokenwarden", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The words to complete when this process was run as [`KUBECTL_COMPLETE`].
pub fn asked_by_kubectl() -> Option<Vec<String>> {
    let mut args = std::env::args();
    let argv0 = args.next()?;
    let name = std::path::Path::new(&argv0).file_name()?.to_str()?;
    (name == KUBECTL_COMPLETE).then(|| args.collect())
}

/// What completes the last of `words`: fixed candidates, or names to look up.
#[derive(Debug, PartialEq)]
pub(crate) struct Completion {
    /// (candidate, description).
    pub fixed: Vec<(String, String)>,
    pub lookup: Option<Lookup>,
    /// A file name may follow (`--kubeconfig`).
    pub files: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Lookup {
    Tokens,
    Namespaces,
    Contexts,
}

/// Completes the last of `words` (empty: a new word), the arguments after the plugin's name,
/// on the command line `root`.
pub(crate) fn complete(mut root: clap::Command, words: &[String]) -> Completion {
    let (partial, done) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    root.build();
    let mut command = &root;
    let mut positionals = 0;
    let mut words = done.iter();
    let mut awaiting: Option<&Arg> = None;
    while let Some(word) = words.next() {
        if let Some(flag) = flag_taking_a_value(command, word) {
            awaiting = words.next().is_none().then_some(flag);
        } else if !word.starts_with('-') {
            match command.find_subcommand(word) {
                Some(sub) if positionals == 0 && std::ptr::eq(command, &root) => command = sub,
                _ => positionals += 1,
            }
        }
    }
    let mut completion = Completion {
        fixed: Vec::new(),
        lookup: None,
        files: false,
    };
    if let Some(flag) = awaiting {
        match flag.get_id().as_str() {
            "namespace" => completion.lookup = Some(Lookup::Namespaces),
            "context" => completion.lookup = Some(Lookup::Contexts),
            "kubeconfig" => completion.files = true,
            _ => completion.fixed = values_of(flag),
        }
    } else if partial.starts_with('-') {
        completion.fixed = flags_of(command);
    } else if std::ptr::eq(command, &root) {
        completion.fixed = (root.get_subcommands())
            .filter(|s| !s.is_hide_set())
            .map(|s| (s.get_name().to_string(), about(s.get_about())))
            .collect();
    } else if let Some(arg) = command.get_positionals().nth(positionals) {
        match arg.get_id().as_str() {
            "name" => completion.lookup = Some(Lookup::Tokens),
            _ => completion.fixed = values_of(arg),
        }
    }
    completion.fixed.retain(|(c, _)| c.starts_with(partial));
    completion
}

/// The flag `word` names on `command`, when it takes a value given as the next word.
fn flag_taking_a_value<'c>(command: &'c clap::Command, word: &str) -> Option<&'c Arg> {
    if word.contains('=') {
        return None;
    }
    let named = |a: &&Arg| {
        let long = a
            .get_long()
            .is_some_and(|l| word.strip_prefix("--") == Some(l));
        let short = a.get_short().is_some_and(|s| word == format!("-{s}"));
        long || short
    };
    let flag = command.get_arguments().find(named)?;
    flag.get_action().takes_values().then_some(flag)
}

fn flags_of(command: &clap::Command) -> Vec<(String, String)> {
    let mut flags = Vec::new();
    for arg in command
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
    {
        let help = about(arg.get_help());
        if let Some(long) = arg.get_long() {
            flags.push((format!("--{long}"), help.clone()));
        }
        if let Some(short) = arg.get_short() {
            flags.push((format!("-{short}"), help));
        }
    }
    flags
}

fn values_of(arg: &Arg) -> Vec<(String, String)> {
    (arg.get_possible_values().iter())
        .map(|v| (v.get_name().to_string(), about(v.get_help())))
        .collect()
}

fn about(text: Option<&clap::builder::StyledStr>) -> String {
    let text = text.map(|t| t.to_string()).unwrap_or_default();
    text.lines().next().unwrap_or_default().to_string()
}

/// cobra's answer for kubectl: the candidates on the command line `cli`, then the directive.
pub async fn for_kubectl(cli: clap::Command, words: &[String]) -> String {
    let completion = complete(cli, words);
    let partial = words.last().map(String::as_str).unwrap_or_default();
    let mut lines: Vec<String> = (completion.fixed.iter())
        .map(|(c, help)| {
            if help.is_empty() {
                c.clone()
            } else {
                format!("{c}\t{help}")
            }
        })
        .collect();
    if let Some(lookup) = &completion.lookup {
        let found = tokio::time::timeout(Duration::from_secs(5), look_up(lookup, words)).await;
        let names = found.ok().and_then(Result::ok).unwrap_or_default();
        lines.extend(names.into_iter().filter(|n| n.starts_with(partial)));
    }
    let directive = if completion.files { FILES } else { NO_FILES };
    lines.push(format!(":{directive}"));
    lines.join("\n") + "\n"
}

fn names<K: Clone>(list: kube::core::ObjectList<kube::core::PartialObjectMeta<K>>) -> Vec<String> {
    (list.items.into_iter())
        .filter_map(|m| m.metadata.name)
        .collect()
}

/// The value of `--long VALUE`, `--long=VALUE` or `-s VALUE` among `words`.
fn flag_value(words: &[String], long: &str, short: Option<&str>) -> Option<String> {
    let long_eq = format!("--{long}=");
    (words.iter().enumerate()).find_map(|(i, w)| {
        if let Some(value) = w.strip_prefix(&long_eq) {
            return Some(value.to_string());
        }
        let named = w.strip_prefix("--") == Some(long) || short.is_some_and(|s| w == s);
        named.then(|| words.get(i + 1).cloned()).flatten()
    })
}

async fn look_up(lookup: &Lookup, words: &[String]) -> Result<Vec<String>, String> {
    let connection = Connection {
        kubeconfig: flag_value(words, "kubeconfig", None).map(Into::into),
        context: flag_value(words, "context", None),
    };
    if *lookup == Lookup::Contexts {
        let file = match &connection.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        };
        let file = file.map_err(|e| e.to_string())?;
        return Ok(file.contexts.into_iter().map(|c| c.name).collect());
    }
    let client = connection.client().await?;
    let params = ListParams::default();
    if *lookup == Lookup::Namespaces {
        let api: Api<Namespace> = Api::all(client);
        return Ok(names(
            api.list_metadata(&params)
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    let api: Api<WorkspaceToken> = if words.iter().any(|w| w == "-A" || w == "--all-namespaces") {
        Api::all(client)
    } else {
        let namespace = flag_value(words, "namespace", Some("-n"));
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
        Api::namespaced(client, &namespace)
    };
    Ok(names(
        api.list_metadata(&params)
            .await
            .map_err(|e| e.to_string())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn complete(words: &[String]) -> Completion {
        super::complete(Cli::command(), words)
    }

    fn script(shell: Shell) -> String {
        super::script(Cli::command(), shell)
    }

    fn words(line: &str) -> Vec<String> {
        let mut words: Vec<String> = line.split(' ').map(String::from).collect();
        if line.is_empty() {
            words = vec![String::new()];
        }
        words
    }

    fn candidates(line: &str) -> Vec<String> {
        complete(&words(line))
            .fixed
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn a_first_word_is_a_command() {
        let commands = candidates("");
        for command in ["run", "crd", "status", "rotate", "revoke", "completion"] {
            assert!(commands.contains(&command.to_string()), "{commands:?}");
        }
        assert_eq!(candidates("ro"), ["rotate"]);
        assert_eq!(candidates("re"), ["revoke"]);
    }

    #[test]
    fn a_dash_is_a_flag_of_the_command_kubectls_among_them() {
        let flags = candidates("status -");
        for flag in [
            "-n",
            "--namespace",
            "-A",
            "-l",
            "--selector",
            "-o",
            "--output",
        ] {
            assert!(flags.contains(&flag.to_string()), "{flags:?}");
        }
        for kubectls in ["--kubeconfig", "--context"] {
            assert!(flags.contains(&kubectls.to_string()), "{flags:?}");
        }
        assert_eq!(candidates("rotate --rev"), ["--revoke-now"]);
    }

    #[test]
    fn a_flags_value_is_one_of_its_values_or_looked_up() {
        assert_eq!(candidates("status -o "), ["table", "json", "yaml"]);
        assert_eq!(candidates("status --output y"), ["yaml"]);
        assert_eq!(candidates("completion "), ["bash", "zsh", "fish"]);
        let lookup = |line: &str| complete(&words(line)).lookup;
        assert_eq!(lookup("status -n "), Some(Lookup::Namespaces));
        assert_eq!(lookup("rotate --context "), Some(Lookup::Contexts));
        assert!(complete(&words("status --kubeconfig ")).files);
    }

    #[test]
    fn a_token_name_is_looked_up_once_per_command_that_takes_one() {
        let lookup = |line: &str| complete(&words(line)).lookup;
        assert_eq!(lookup("status "), Some(Lookup::Tokens));
        assert_eq!(lookup("rotate -n team-a ag"), Some(Lookup::Tokens));
        assert_eq!(lookup("revoke --context prod "), Some(Lookup::Tokens));
        assert_eq!(lookup("status agent "), None, "one name only");
        assert_eq!(lookup("crd "), None);
    }

    #[test]
    fn the_flags_naming_the_cluster_are_read_from_the_words() {
        let words = words("status --kubeconfig /k --context=prod -n team-a ");
        assert_eq!(
            flag_value(&words, "kubeconfig", None).as_deref(),
            Some("/k")
        );
        assert_eq!(flag_value(&words, "context", None).as_deref(), Some("prod"));
        assert_eq!(
            flag_value(&words, "namespace", Some("-n")).as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn each_shells_script_completes_the_binary() {
        assert!(script(Shell::Bash).contains("complete -F _tokenwarden"));
        assert!(script(Shell::Zsh).starts_with("#compdef tokenwarden"));
        assert!(script(Shell::Fish).contains("complete -c tokenwarden"));
    }
}
