//! The leak scan: searches every artifact a test suite produced (operator logs, events,
//! statuses, Secret metadata, metrics pages, CLI and test output) for every token the suite
//! minted. It never holds a token list: the minted tokens are known by their SHA-256 (from
//! statuses and `tokenwarden.dev/token-sha256` annotations), and every token-shaped string in
//! the artifacts is hashed and looked up, plain and base64-decoded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Where a minted token showed up: the file and line, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub minted: usize,
    pub hits: Vec<Hit>,
}

pub fn scan(dir: &Path) -> std::io::Result<Report> {
    let files = files_under(dir)?;
    let mut minted = BTreeSet::new();
    let mut texts = Vec::new();
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        if file.extension().is_some_and(|e| e == "json")
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
        {
            collect_hashes(&value, &mut minted);
        }
        texts.push((file, text));
    }
    let mut report = Report {
        files: texts.len(),
        minted: minted.len(),
        hits: Vec::new(),
    };
    for (file, text) in &texts {
        for (i, line) in text.lines().enumerate() {
            if line_leaks(line, &minted) {
                report.hits.push(Hit {
                    file: file.clone(),
                    line: i + 1,
                });
            }
        }
    }
    Ok(report)
}

fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every `tokenSha256` field and `tokenwarden.dev/token-sha256` annotation, anywhere.
fn collect_hashes(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if (k == "tokenSha256" || k == "tokenwarden.dev/token-sha256")
                    && let Some(h) = v.as_str().filter(|h| h.len() == 64)
                {
                    out.insert(h.to_string());
                }
                collect_hashes(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_hashes(v, out)),
        _ => {}
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Token alphabets: base64url and hex (a subset). Runs of 16+ are candidates, as are their
/// sub-runs split at `_` and `-` (a literal prefix like `wst_` joins the token to its body).
fn line_leaks(line: &str, minted: &BTreeSet<String>) -> bool {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let runs = line
        .split(|c: char| !is_token_char(c))
        .filter(|r| r.len() >= 16);
    for run in runs {
        if suffixes_leak(run, minted) {
            return true;
        }
    }
    // Base64 (standard or url) encodings of a token, as a Secret's data field would hold it.
    let is_b64_char = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    for run in line
        .split(|c: char| !is_b64_char(c))
        .filter(|r| r.len() >= 20)
    {
        let trimmed = run.trim_end_matches('=');
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            if let Ok(decoded) = engine.decode(trimmed) {
                let decoded = String::from_utf8_lossy(&decoded);
                if decoded
                    .split(|c: char| !is_token_char(c))
                    .filter(|r| r.len() >= 16)
                    .any(|r| suffixes_leak(r, minted))
                {
                    return true;
                }
            }
        }
    }
    false
}

/// The run itself, and every run that starts after a `_`/`-` or ends before one.
fn suffixes_leak(run: &str, minted: &BTreeSet<String>) -> bool {
    let starts = std::iter::once(0).chain(run.match_indices(['_', '-']).map(|(i, _)| i + 1));
    for start in starts {
        let ends = run[start..]
            .match_indices(['_', '-'])
            .map(|(i, _)| start + i)
            .chain(std::iter::once(run.len()));
        for end in ends {
            if end > start && minted.contains(&sha256_hex(&run.as_bytes()[start..end])) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "wst_q9dRk2Zp0vWx7YbNc3LmAeTf6GhJs1UiO-8yKz_4rPQ";

    fn dir_with(files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    fn status_dump() -> (&'static str, String) {
        let dump = serde_json::json!({ "workspacetokens": [{ "status": { "tokenSha256": sha256_hex(TOKEN.as_bytes()) } }] });
        ("ns.json", dump.to_string())
    }

    #[test]
    fn finds_a_minted_token_in_a_log_line_and_names_file_and_line() {
        let dir = dir_with(&[
            status_dump(),
            (
                "operator.log",
                format!("ok\n{{\"msg\":\"auth {TOKEN}\"}}\n"),
            ),
        ]);
        let report = scan(dir.path()).unwrap();
        assert_eq!(report.minted, 1);
        assert_eq!(report.hits.len(), 1);
        assert!(report.hits[0].file.ends_with("operator.log") && report.hits[0].line == 2);
    }

    #[test]
    fn finds_a_base64_encoded_token() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        let dir = dir_with(&[
            status_dump(),
            ("secret.yaml", format!("  token: {encoded}\n")),
        ]);
        assert_eq!(scan(dir.path()).unwrap().hits.len(), 1);
    }

    #[test]
    fn finds_the_token_without_its_literal_prefix_or_glued_to_a_key() {
        let body = &TOKEN[4..];
        let dump = serde_json::json!({ "workspacetokens": [{ "status": { "tokenSha256": sha256_hex(body.as_bytes()) } }] });
        let dir = dir_with(&[
            ("ns.json", dump.to_string()),
            ("a.log", format!("token=wst_{body}\n")),
        ]);
        assert_eq!(scan(dir.path()).unwrap().hits.len(), 1);
    }

    #[test]
    fn hashes_and_prefixes_are_not_leaks() {
        let line = format!(
            "prefix={} sha256={}",
            &TOKEN[..8],
            sha256_hex(TOKEN.as_bytes())
        );
        let dir = dir_with(&[status_dump(), ("operator.log", line)]);
        let report = scan(dir.path()).unwrap();
        assert!(report.hits.is_empty());
        assert_eq!(report.files, 2);
    }
}
