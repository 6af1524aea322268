//! `holdUntil.idleFor`: when the platform last saw a retiring token used. The listing is
//! authenticated with the current token of the same issuer: a call with the judged token
//! would be a use of it, and the hold would never end.
//!
//! The platform stamps `last_used_at` on its own clock. Its answer's `Date` header says what
//! that clock read, so the use is moved onto the operator's clock, rounded towards a longer
//! hold; both times are whole seconds, as status keeps them (a pass that re-reads status
//! judges exactly as the pass that asked).

use chrono::{DateTime, TimeDelta, Utc};

use super::Applier;
use super::provenance::MintedAt;
use crate::issuer::http::{Listed, PlatformToken, listed_as};
use crate::plan::Usage;
use crate::time::floor_second;

impl Applier<'_> {
    /// The platform's `last_used_at` of `version`'s token, or why it cannot be known now
    /// (with any token this pass holds cut from the reason).
    pub(super) async fn usage_of(&self, version: u32) -> Result<Usage, String> {
        self.ask_usage(version).await.map_err(|why| {
            crate::redact::redact(&why, &self.tokens_in_play.lock().expect("tokens in play"))
        })
    }

    async fn ask_usage(&self, version: u32) -> Result<Usage, String> {
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
        let asked = Utc::now();
        let listed = platform.list_dated(&bearer, "usage").await;
        let answered = Utc::now();
        let outcome = if listed.is_ok() { "ok" } else { "error" };
        self.io.metrics.issuer_request("list", outcome);
        let tokens = listed
            .map_err(|e| e.to_string())?
            .on_operator_clock(answered);
        let last_used_at = last_use(&tokens, &prefix, known_id).map(ceil_second);
        Ok(Usage {
            last_used_at,
            checked_at: floor_second(asked),
        })
    }
}

fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_second(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::seconds(1)
    }
}

/// The last use of the token with `prefix` (None: unused, or gone at the platform). Among
/// several live tokens with that prefix and none known by its id, the latest use of any: a
/// hold errs on the side of a consumer.
fn last_use(
    tokens: &[PlatformToken],
    prefix: &str,
    known_id: Option<&str>,
) -> Option<DateTime<Utc>> {
    match listed_as(tokens, prefix, known_id) {
        Listed::Absent => None,
        Listed::One(token) => token.last_used_at,
        Listed::Several(several) => several.iter().filter_map(|t| t.last_used_at).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn listed(id: &str, prefix: &str, used: Option<i64>) -> PlatformToken {
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
        assert_eq!(last_use(&tokens, "wst_aaaa", None), Some(at(50)));
        assert_eq!(last_use(&tokens, "wst_cccc", None), None);
    }

    #[test]
    fn two_tokens_with_one_prefix_read_as_the_known_one_or_the_latest_use() {
        let tokens = [
            listed("a", "wst_aaaa", Some(50)),
            listed("b", "wst_aaaa", Some(90)),
        ];
        assert_eq!(last_use(&tokens, "wst_aaaa", Some("a")), Some(at(50)));
        assert_eq!(last_use(&tokens, "wst_aaaa", None), Some(at(90)));
    }

    #[test]
    fn a_use_rounds_up_and_a_question_down_to_whole_seconds() {
        let half = TimeDelta::milliseconds(500);
        assert_eq!(ceil_second(at(10) + half), at(11));
        assert_eq!(ceil_second(at(10)), at(10));
        assert_eq!(floor_second(at(10) + half), at(10));
    }
}
