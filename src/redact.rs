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

/// `text` with every token whose SHA-256 is in `hashes` replaced by [`REDACTED`], whether it
/// appears as is, base64-encoded (standard or URL-safe, padded or not), or glued to a key or
/// a literal prefix (`token=...`, `wst_...`).
pub fn redact(text: &str, hashes: &BTreeSet<String>) -> String {
    if hashes.is_empty() {
        return text.to_string();
    }
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for (start, end) in runs(text) {
        if let Some(cut) = longest_match(text, start, end, hashes) {
            cuts.push(cut);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
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

/// The widest span of `text[start..end]`, bounded by the run's ends or by joints, that is a
/// token in `hashes` (plain or base64-decoded).
fn longest_match(
    text: &str,
    start: usize,
    end: usize,
    hashes: &BTreeSet<String>,
) -> Option<(usize, usize)> {
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
            let wider = best.is_none_or(|(f, t)| to - from > t - f);
            if to - from >= 16 && wider && is_token(&run[from..to], hashes) {
                best = Some((from, to));
            }
        }
    }
    best.map(|(from, to)| (start + from, start + to))
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
