//! `holdUntil.idleFor`: when the platform last saw a retiring token used. The listing is
//! authenticated with the current token of the same issuer: a call with the judged token
//! would be a use of it, and the hold would never end.

use chrono::Utc;

use super::Applier;
use super::provenance::MintedAt;
use crate::issuer::http::PlatformToken;
use crate::plan::Usage;

impl Applier<'_> {
    /// The platform's `last_used_at` of `version`'s token, or why it cannot be known now.
    pub(super) async fn usage_of(&self, version: u32) -> Result<Usage, String> {
        let MintedAt::Platform(issuer) = self.minted_at(version) else {
            return Err(format!("version {version}'s platform cannot be asked"));
        };
        let current = (self.plan.current)
            .filter(|c| *c != version && self.same_issuer(*c, &issuer))
            .ok_or("no current token of the same issuer to ask with")?;
        let bearer = (self.read_version_token(current).await)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the Secret of version {current} is gone"))?;
        let record = self.plan.versions.get(&version);
        let prefix = record
            .and_then(|r| r.token_prefix.clone())
            .ok_or_else(|| format!("no prefix is recorded for version {version}"))?;
        let known_id = record.and_then(|r| r.issuer_token_id.as_deref());
        let platform =
            (self.platform_at(&issuer, &self.trace_id_of(current))).map_err(|e| e.to_string())?;
        // Taken before the call: the platform's answer is at least this fresh.
        let checked_at = Utc::now();
        let listed = platform.list(&bearer, "usage").await;
        let outcome = if listed.is_ok() { "ok" } else { "error" };
        self.io.metrics.issuer_request("list", outcome);
        let tokens = listed.map_err(|e| e.to_string())?;
        Ok(Usage {
            last_used_at: last_use(&tokens, &prefix, known_id),
            checked_at,
        })
    }
}

/// The last use of the token with `prefix` (None: unused, or gone at the platform). Among
/// several live tokens with that prefix, the one the platform gave `known_id`, else the
/// latest use of any: a hold errs on the side of a consumer.
fn last_use(
    tokens: &[PlatformToken],
    prefix: &str,
    known_id: Option<&str>,
) -> Option<chrono::DateTime<Utc>> {
    let matching: Vec<&PlatformToken> = tokens.iter().filter(|t| t.prefix == prefix).collect();
    match matching.iter().find(|t| Some(t.id.as_str()) == known_id) {
        Some(known) => known.last_used_at,
        None => matching.iter().filter_map(|t| t.last_used_at).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, prefix: &str, used: Option<i64>) -> PlatformToken {
        let at = |s| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        PlatformToken {
            id: id.into(),
            prefix: prefix.into(),
            created_at: at(0),
            last_used_at: used.map(at),
        }
    }

    #[test]
    fn the_use_read_is_the_judged_tokens_never_the_askers() {
        let tokens = [
            listed("a", "wst_aaaa", Some(50)),
            listed("b", "wst_bbbb", Some(90)),
        ];
        let used = last_use(&tokens, "wst_aaaa", None).unwrap();
        assert_eq!(used.timestamp(), 1_800_000_050);
        assert_eq!(last_use(&tokens, "wst_cccc", None), None);
    }

    #[test]
    fn two_tokens_with_one_prefix_read_as_the_known_one_or_the_latest_use() {
        let tokens = [
            listed("a", "wst_aaaa", Some(50)),
            listed("b", "wst_aaaa", Some(90)),
        ];
        let known = last_use(&tokens, "wst_aaaa", Some("a")).unwrap();
        assert_eq!(known.timestamp(), 1_800_000_050);
        let latest = last_use(&tokens, "wst_aaaa", None).unwrap();
        assert_eq!(latest.timestamp(), 1_800_000_090);
    }
}
