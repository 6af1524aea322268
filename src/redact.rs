//! Cutting known tokens out of text that came from elsewhere (an API server's refusal, a
//! platform's error), before it reaches an event, a condition or a log. An admission policy
//! or webhook may quote the Secret it refused, and the operator never keeps plaintext, so
//! tokens are recognised by their SHA-256: every token-shaped run of the text is hashed, as
//! is, and base64-decoded, and compared with the hashes in play.

use std::collections::BTreeSet;

use base64::Engine;

use crate::token::sha256_hex;

/// What a cut token is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The longest candidate checked: a 64-byte token base64-encoded, with a literal prefix, and
/// that base64-encoded again, stays well below.
const MAX_CANDIDATE: usize = 256;
/// Hash checks one text may cost; past them the rest of the text is dropped, not shown
/// unchecked (a pathological message must not stall a worker or slip through).
const CHECK_BUDGET: usize = 100_000;
/// Shown in place of what was dropped.
pub(crate) const TRUNCATED: &str = "[truncated: too long to check for tokens]";

/// `text` with every token whose SHA-256 is in `hashes` replaced by [`REDACTED`], whether it
/// appears as is, base64-encoded (standard or URL-safe, padded or not), or glued to a key or
/// a literal prefix (`token=...`, `wst_...`).
pub(crate) fn redact(text: &str, hashes: &BTreeSet<String>) -> String {
    if hashes.is_empty() {
        return text.to_string();
    }
    let mut budget = CHECK_BUDGET;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in runs(text) {
        match longest_match(text, start, end, hashes, &mut budget) {
            Checked::Token(from, to) => {
                out.push_str(&text[at..from]);
                out.push_str(REDACTED);
                at = to;
            }
            Checked::Clean => {}
            Checked::OverBudget => {
                out.push_str(&text[at..start]);
                out.push_str(TRUNCATED);
                return out;
            }
        }
    }
    out.push_str(&text[at..]);
    out
}

enum Checked {
    Token(usize, usize),
    Clean,
    OverBudget,
}

/// Token and base64 alphabets together.
fn in_alphabet(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=')
}

/// Where a glued token may start or end inside a run.
fn is_joint(c: char) -> bool {
    matches!(c, '-' | '_' | '=' | '/' | '+')
}

/// Maximal runs of the alphabet, 16 characters or longer (shorter ones are no token).
fn runs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (in_alphabet(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= 16 {
                    out.push((s, i));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The widest span of `text[start..end]`, bounded by the run's ends or by joints and at most
/// [`MAX_CANDIDATE`] long, that is a token in `hashes` (plain or base64-decoded).
fn longest_match(
    text: &str,
    start: usize,
    end: usize,
    hashes: &BTreeSet<String>,
    budget: &mut usize,
) -> Checked {
    let run = &text[start..end];
    let mut bounds = vec![0];
    for (i, c) in run.char_indices() {
        if is_joint(c) {
            bounds.push(i);
            bounds.push(i + 1);
        }
    }
    bounds.push(run.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut best: Option<(usize, usize)> = None;
    for (n, &from) in bounds.iter().enumerate() {
        for &to in &bounds[n + 1..] {
            if to - from > MAX_CANDIDATE {
                break;
            }
            let wider = best.is_none_or(|(f, t)| to - from > t - f);
            if to - from < 16 || !wider {
                continue;
            }
            if *budget == 0 {
                return Checked::OverBudget;
            }
            *budget -= 1;
            if is_token(&run[from..to], hashes) {
                best = Some((from, to));
            }
        }
    }
    match best {
        Some((from, to)) => Checked::Token(start + from, start + to),
        None => Checked::Clean,
    }
}

fn is_token(candidate: &str, hashes: &BTreeSet<String>) -> bool {
    if hashes.contains(&sha256_hex(candidate.as_bytes())) {
        return true;
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().any(|engine| {
        engine
            .decode(candidate)
            .is_ok_and(|bytes| hashes.contains(&sha256_hex(&bytes)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "wst_Q2hhcmxpZUJyb3duSXNBR29vZERvZzEyMzQ1Njc4OTA";

    fn known() -> BTreeSet<String> {
        [sha256_hex(TOKEN.as_bytes())].into()
    }

    fn quoted(form: &str) -> String {
        format!(
            "secrets \"t\" is forbidden: ValidatingAdmissionPolicy 'no-tokens' denied request: {form}"
        )
    }

    #[test]
    fn a_quoted_token_is_cut_in_every_form_a_refusal_can_carry_it() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(TOKEN);
        for form in [
            TOKEN.to_string(),
            format!("token={TOKEN}"),
            format!("map[token:{b64}]"),
            format!("{{\"token\":\"{b64}\"}}"),
            format!("data.token={b64url}."),
            format!("{TOKEN} {TOKEN}"),
        ] {
            let out = redact(&quoted(&form), &known());
            assert!(
                !out.contains(TOKEN),
                "plaintext left in a quote of {} chars",
                form.len()
            );
            assert!(!out.contains(&b64) && !out.contains(&b64url), "base64 left");
            assert!(out.contains(REDACTED), "the cut is visible");
            assert!(out.starts_with("secrets \"t\" is forbidden: ValidatingAdmissionPolicy"));
        }
    }

    #[test]
    fn a_token_after_a_newline_or_a_tab_is_cut() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        for text in [format!("denied:\n{TOKEN}"), format!("denied:\t{b64}")] {
            let out = redact(&text, &known());
            assert!(
                !out.contains(TOKEN) && !out.contains(&b64),
                "left after a control character"
            );
        }
    }

    #[test]
    fn an_api_server_refusal_loses_the_token_in_its_message_and_causes() {
        let quote = format!("denied request:\n{TOKEN}");
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid", "message": quote,
            "details": { "name": "t", "kind": "secrets", "causes": [{ "message": quote }] }
        }))
        .unwrap();
        let error = crate::Error::Kube {
            operation: "create mounted Secret",
            source: kube::Error::Api(Box::new(status)),
        };
        let error = error.redacted(&known());
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(TOKEN), "the token is left in the error");
        assert!(
            shown.matches(REDACTED).count() >= 4,
            "message and cause, in Display and Debug"
        );
    }

    #[test]
    fn a_pathological_message_is_cut_short_not_checked_for_minutes() {
        let joints = "a-".repeat(200_000);
        let started = std::time::Instant::now();
        let out = redact(&format!("denied: {joints} {TOKEN}"), &known());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(out.ends_with(TRUNCATED), "the unchecked rest is dropped");
        assert!(!out.contains(TOKEN));
    }

    #[test]
    fn text_without_a_known_token_is_left_as_it_is() {
        let message = "secrets \"tokenwarden-very-long-secret-name-v12\" is forbidden: User \
                       \"system:serviceaccount:tokenwarden:tokenwarden\" cannot patch resource \
                       \"secrets\" in API group \"\" in the namespace \"team-a\"";
        assert_eq!(redact(message, &known()), message);
        let other = "wst_SomeOtherTokenThatNobodyKnowsAbout0123456789";
        assert_eq!(redact(other, &known()), other);
        assert_eq!(redact(&quoted(TOKEN), &BTreeSet::new()), quoted(TOKEN));
    }
}
