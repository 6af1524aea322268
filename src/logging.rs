//! Logging (stderr, JSON or text) and the audit trail (stdout, one JSON line per event).

use std::{io::Write, str::FromStr};

use serde::Serialize;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err(format!("invalid log format {s:?}: expected json or text")),
        }
    }
}

/// Installs the global tracing subscriber on stderr; later calls are no-ops.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // stdout is reserved for audit lines, so logs must never land there.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    // With a hint, the combined filter keeps the env filter's maximum level: callsites above
    // it are never even built.
    let ceiling = filter_fn(|meta| within_ceiling(meta.target(), *meta.level()))
        .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    };
    // try_init fails only if a subscriber already exists (tests, repeated
    // setup); keeping the first one is the intended behaviour.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(ceiling)))
        .try_init();
}

/// The HTTP and Kubernetes client crates log raw request and answer bodies below INFO (an
/// admission refusal may quote the Secret it refused, token included): whatever `RUST_LOG`
/// asks, nothing of theirs below INFO is written.
const CLIENT_INTERNALS: [&str; 7] = [
    "kube_client",
    "kube_runtime",
    "hyper",
    "h2",
    "reqwest",
    "rustls",
    "tower",
];

/// Targets are matched by prefix: `hyper` also covers `hyper_util`, `rustls` its verifiers.
fn within_ceiling(target: &str, level: tracing::Level) -> bool {
    let internal = CLIENT_INTERNALS.iter().any(|c| target.starts_with(c));
    !internal || level <= tracing::Level::INFO
}

/// One audit record. Deliberately has no field able to carry a token.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    pub timestamp: String,
    pub trace_id: &'a str,
    pub workspace_id: &'a str,
    pub user_id: Option<&'a str>,
    pub profile_id: Option<&'a str>,
    pub token_version: Option<String>,
    pub event: &'a str,
    pub status: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub token_prefix: Option<&'a str>,
    /// Why a person asked for this rotation (`tokenwarden rotate --reason`), on the lines of
    /// the trace it started.
    pub reason: Option<&'a str>,
}

/// Writes the record as one line to stdout; failures are logged, not raised,
/// because a broken stdout must not stop token rotation.
pub fn audit(record: &AuditRecord<'_>) {
    // The stdout lock is process-wide, so concurrent reconciles cannot
    // interleave lines.
    let mut out = std::io::stdout().lock();
    if let Err(err) = write_audit(&mut out, record).and_then(|()| out.flush()) {
        tracing::warn!(error = %err, event = record.event, "failed to write audit record");
    }
}

pub fn write_audit(out: &mut impl Write, record: &AuditRecord<'_>) -> std::io::Result<()> {
    // Serialize first and write once, so a failure never leaves half a line.
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{SecondsFormat, Utc};

    #[test]
    fn audit_line_is_json_with_exactly_the_listed_keys_in_order_and_z_timestamp() {
        let record = AuditRecord {
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            trace_id: "trace-1",
            workspace_id: "ws-1",
            user_id: Some("user-1"),
            profile_id: None,
            token_version: Some("3".to_owned()),
            event: "minted",
            status: "success",
            namespace: "team-a",
            name: "ci-token",
            token_prefix: None,
            reason: None,
        };
        let mut out = Vec::new();
        write_audit(&mut out, &record).expect("write");
        let line = String::from_utf8(out).expect("utf8");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        let keys = "timestamp trace_id workspace_id user_id profile_id token_version \
                    event status namespace name token_prefix reason";
        let keys: Vec<&str> = keys.split_whitespace().collect();
        assert_eq!(value.as_object().expect("object").len(), keys.len());
        let find = |k: &&str| line.find(&format!("\"{k}\":")).expect("key present");
        let positions: Vec<usize> = keys.iter().map(find).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(value["profile_id"].is_null() && value["token_prefix"].is_null());
        assert!(value["reason"].is_null());
        let ts = value["timestamp"].as_str().expect("string");
        assert!(ts.ends_with('Z'), "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn log_format_parses_json_and_text_and_rejects_xml_naming_allowed_values() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("Text".parse::<LogFormat>(), Ok(LogFormat::Text));
        let err = "xml".parse::<LogFormat>().expect_err("xml is not a format");
        assert!(
            ["json", "text", "xml"].iter().all(|w| err.contains(w)),
            "{err}"
        );
    }

    #[test]
    fn client_internals_log_nothing_below_info_whatever_rust_log_says() {
        use tracing::Level;
        let cases = [
            ("kube_client::client", Level::DEBUG, false),
            ("kube_client::client", Level::TRACE, false),
            ("kube_client", Level::INFO, true),
            ("hyper_util::client::legacy", Level::DEBUG, false),
            ("reqwest::connect", Level::TRACE, false),
            ("h2::codec", Level::WARN, true),
            (
                "rustls_platform_verifier::verification",
                Level::DEBUG,
                false,
            ),
            ("tokenwarden::controller", Level::DEBUG, true),
            ("kube_runtime::controller", Level::INFO, true),
        ];
        for (target, level, shown) in cases {
            assert_eq!(within_ceiling(target, level), shown, "{target} at {level}");
        }
    }

    #[test]
    fn init_logging_twice_is_a_noop() {
        init_logging(LogFormat::Json);
        init_logging(LogFormat::Text);
    }
}
