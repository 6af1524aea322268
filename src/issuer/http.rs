//! The HTTP issuer: the platform token API of seed 001.
//!
//! - mint:   `POST {url}/admin/workspaces/{id}/tokens` with the admin token;
//! - verify: `GET {url}/workspaces/{id}/tokens` with the NEW token (non-destructive);
//! - revoke: `DELETE {url}/workspaces/{id}/tokens/{tokenId}`, the id found by prefix.
//!
//! Every call carries the rotation's trace id as a W3C `traceparent` and the spec's timeout.
//! Errors name the operation and the HTTP status, never a body or a token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::client::PER_PLATFORM_IN_FLIGHT;
use super::client::{HttpClient, check_url};
use crate::api::HttpIssuerSpec;
use crate::token::{Token, prefix_of};

/// The shortest platform token accepted: status, events and logs show a token's first 8
/// characters, which must not be most of it.
pub const MIN_TOKEN_LEN: usize = 16;

/// What went wrong talking to the platform. Each is retried with backoff by the controller.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IssuerError {
    #[error("{operation}: platform unreachable: {reason}")]
    Unreachable {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation}: no answer within {seconds}s")]
    Timeout {
        operation: &'static str,
        seconds: u32,
    },
    #[error("{operation}: platform answered HTTP {status}")]
    Status {
        operation: &'static str,
        status: u16,
    },
    #[error("{operation}: the admin token was refused (HTTP {status})")]
    AdminRejected {
        operation: &'static str,
        status: u16,
    },
    #[error("{operation}: malformed answer: {reason}")]
    Malformed {
        operation: &'static str,
        reason: String,
    },
    #[error(
        "mint: the platform answered for workspace {got:?}, not {expected:?}; nothing was written"
    )]
    WrongWorkspace { expected: String, got: String },
    #[error(
        "{operation}: {PER_PLATFORM_IN_FLIGHT} calls to this platform are in flight already; \
         retrying soon"
    )]
    Busy { operation: &'static str },
    #[error(
        "verify: the platform refused the new token of version {version} (HTTP 401); it is \
         revoked and the next version is minted"
    )]
    NewTokenRefused { version: u32 },
    /// The issuer's spec cannot be used to call it: nothing was sent.
    #[error("{reason}; nothing was sent")]
    Unusable { reason: String },
}

impl IssuerError {
    pub fn reason(&self) -> &'static str {
        match self {
            IssuerError::Unreachable { .. } => "IssuerUnreachable",
            IssuerError::Timeout { .. } => "IssuerTimeout",
            IssuerError::Status { .. } => "IssuerError",
            IssuerError::AdminRejected { .. } => "IssuerAdminTokenRejected",
            IssuerError::Malformed { .. } => "IssuerMalformedAnswer",
            IssuerError::WrongWorkspace { .. } => "IssuerWrongWorkspace",
            IssuerError::Busy { .. } => "IssuerBusy",
            IssuerError::NewTokenRefused { .. } => "IssuerRefusedNewToken",
            IssuerError::Unusable { .. } => "IssuerNotReady",
        }
    }
}

/// One token as the platform lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlatformToken {
    pub id: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct MintAnswer {
    auth_token: String,
    workspace_id: String,
}

#[derive(Deserialize)]
struct ListAnswer {
    tokens: Vec<PlatformToken>,
    /// How many live tokens the platform says the workspace has.
    #[serde(default)]
    count: Option<usize>,
}

/// A listing of the workspace's live tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenList {
    pub tokens: Vec<PlatformToken>,
    /// The platform's `count` equals the tokens listed: nothing was left out. Only a complete
    /// listing may say a token is not live.
    pub complete: bool,
    /// The platform's clock at the answer (its `Date` header), when it sent one.
    pub date: Option<DateTime<Utc>>,
}

impl TokenList {
    /// Its tokens with their times moved onto the operator's clock: the platform's clock read
    /// `date` (a whole second, rounded down) while ours read at most `answered`, so adding
    /// that offset can only make a time look later (a use more recent, a token younger).
    pub fn on_operator_clock(self, answered: DateTime<Utc>) -> Vec<PlatformToken> {
        let offset = self
            .date
            .map_or(chrono::TimeDelta::zero(), |d| answered - d);
        let shift = |t: DateTime<Utc>| t.checked_add_signed(offset).unwrap_or(t);
        (self.tokens.into_iter())
            .map(|t| PlatformToken {
                created_at: shift(t.created_at),
                last_used_at: t.last_used_at.map(shift),
                ..t
            })
            .collect()
    }
}

/// What a revocation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// 404 or not listed: it was revoked before (by us, earlier, or someone else).
    AlreadyRevoked,
    /// Two live tokens share the prefix: deleting either could revoke the wrong one, so
    /// nothing was deleted.
    Ambiguous,
}

/// The largest answer read from a platform: a listing of a few thousand tokens. A larger one
/// is refused as malformed before it is held in memory.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The platform of one WorkspaceToken.
pub struct HttpIssuer<'a> {
    client: &'a HttpClient,
    http: reqwest::Client,
    /// Plain `http://` (allowInsecureHttp): an answer may be forged by anyone on the path.
    pub insecure: bool,
    base: String,
    workspace_id: &'a str,
    timeout_seconds: u32,
    traceparent: String,
}

impl<'a> HttpIssuer<'a> {
    /// The platform `spec` names; refused (nothing sent, ever) when its URL is not allowed
    /// or its caBundle does not parse.
    pub fn new(
        client: &'a HttpClient,
        spec: &HttpIssuerSpec,
        workspace_id: &'a str,
        trace_id: &str,
    ) -> Result<Self, IssuerError> {
        check_url(spec)?;
        Ok(HttpIssuer {
            client,
            http: client.for_roots(spec.ca_bundle.as_deref())?,
            insecure: spec.url.starts_with("http://"),
            base: spec.url.trim_end_matches('/').to_string(),
            workspace_id,
            timeout_seconds: spec.timeout_seconds,
            traceparent: traceparent(trace_id),
        })
    }

    /// One call: a slot for it (none free: `Busy`, at once), the request, and the answer's
    /// status and body (at most [`MAX_ANSWER_BYTES`]), all within the issuer's timeout.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &Token,
        operation: &'static str,
    ) -> Result<(u16, Vec<u8>), IssuerError> {
        let (status, body, _) = self.dated_call(method, path, bearer, operation).await?;
        Ok((status, body))
    }

    /// A call, with the platform's clock as its `Date` header says (when it sends one).
    async fn dated_call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &Token,
        operation: &'static str,
    ) -> Result<(u16, Vec<u8>, Option<DateTime<Utc>>), IssuerError> {
        let _slot = (self.client.slot(&self.base).await).ok_or(IssuerError::Busy { operation })?;
        let started = std::time::Instant::now();
        let answered: Result<_, IssuerError> = async {
            let answer = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(bearer.expose())
                .header("traceparent", &self.traceparent)
                .timeout(Duration::from_secs(self.timeout_seconds.into()))
                .send()
                .await
                .map_err(self.transport(operation))?;
            let status = answer.status().as_u16();
            let date = (answer.headers().get(reqwest::header::DATE))
                .and_then(|d| d.to_str().ok())
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.to_utc());
            let body = read_capped(answer)
                .await
                .map_err(|e| e.or_transport(self, operation))?;
            Ok((status, body, date))
        }
        .await;
        self.client.took(operation, started.elapsed());
        answered
    }

    fn transport(&self, operation: &'static str) -> impl Fn(reqwest::Error) -> IssuerError + '_ {
        move |e| {
            if e.is_timeout() {
                IssuerError::Timeout {
                    operation,
                    seconds: self.timeout_seconds,
                }
            } else if e.is_decode() || e.is_body() {
                IssuerError::Malformed {
                    operation,
                    reason: "the answer could not be read as JSON".into(),
                }
            } else {
                // Without the URL: reqwest's message can't carry a token, but keep it short.
                IssuerError::Unreachable {
                    operation,
                    reason: e.without_url().to_string(),
                }
            }
        }
    }

    /// `Busy` when every slot for this platform is taken: checked before a pass writes
    /// anything it would have to undo for a call it then cannot make.
    pub fn ensure_a_free_slot(&self, operation: &'static str) -> Result<(), IssuerError> {
        let free = self.client.slots(&self.base).available_permits() > 0;
        free.then_some(()).ok_or(IssuerError::Busy { operation })
    }

    /// Mints a token through the admin route. An answer for another workspace is refused.
    pub async fn mint(&self, admin: &Token) -> Result<Token, IssuerError> {
        let path = format!("/admin/workspaces/{}/tokens", self.workspace_id);
        let (status, body) = self
            .call(reqwest::Method::POST, &path, admin, "mint")
            .await?;
        if status == 401 || status == 403 {
            return Err(IssuerError::AdminRejected {
                operation: "mint",
                status,
            });
        }
        if !(200..300).contains(&status) {
            return Err(IssuerError::Status {
                operation: "mint",
                status,
            });
        }
        let body: MintAnswer = decode(&body, "mint")?;
        let token = Token::from_plaintext(body.auth_token);
        if body.workspace_id != self.workspace_id {
            return Err(IssuerError::WrongWorkspace {
                expected: self.workspace_id.to_string(),
                got: body.workspace_id,
            });
        }
        if token.expose().len() < MIN_TOKEN_LEN {
            // Never shown: a token this short is mostly its own 8-character prefix.
            return Err(IssuerError::Malformed {
                operation: "mint",
                reason: format!("auth_token shorter than {MIN_TOKEN_LEN} characters"),
            });
        }
        Ok(token)
    }

    /// Lists the workspace's live tokens, authenticating with `bearer` (which marks it used).
    pub async fn list(
        &self,
        bearer: &Token,
        operation: &'static str,
    ) -> Result<Vec<PlatformToken>, IssuerError> {
        Ok(self.list_dated(bearer, operation).await?.tokens)
    }

    /// [`Self::list`], with the platform's clock at the answer (its `Date` header), so its
    /// `last_used_at` times can be read on the operator's clock, and whether it is complete.
    pub async fn list_dated(
        &self,
        bearer: &Token,
        operation: &'static str,
    ) -> Result<TokenList, IssuerError> {
        let path = format!("/workspaces/{}/tokens", self.workspace_id);
        let (status, body, date) = self
            .dated_call(reqwest::Method::GET, &path, bearer, operation)
            .await?;
        if !(200..300).contains(&status) {
            return Err(IssuerError::Status { operation, status });
        }
        let answer = decode::<ListAnswer>(&body, operation)?;
        Ok(TokenList {
            complete: answer.count == Some(answer.tokens.len()),
            tokens: answer.tokens,
            date,
        })
    }

    /// Proves a new token works with a non-destructive call; returns its platform id, and the
    /// listing the call made (the workspace's inventory at this rotation).
    pub async fn verify(&self, new: &Token) -> Result<(Option<String>, TokenList), IssuerError> {
        let listed = self.list_dated(new, "verify").await?;
        let prefix = new.prefix();
        let id = (listed.tokens.iter())
            .find(|t| t.prefix == prefix)
            .map(|t| t.id.clone());
        Ok((id, listed))
    }

    /// Revokes the token with prefix `prefix`, authenticating with `bearer`. The id to delete
    /// comes from a listing made now and matched by prefix, never from a record someone else
    /// could have edited: a wrong id would revoke another token and leave this one live. When
    /// several live tokens share the prefix, `known_id` (the id the platform gave at
    /// verification, kept in status) picks among them; without it nothing is deleted.
    pub async fn revoke(
        &self,
        bearer: &Token,
        prefix: &str,
        known_id: Option<&str>,
    ) -> Result<Revocation, IssuerError> {
        let tokens = self.list(bearer, "revoke").await?;
        match pick_by_prefix(&tokens, prefix, known_id) {
            Pick::None => Ok(Revocation::AlreadyRevoked),
            Pick::One(id) => self.delete(bearer, &id).await,
            Pick::Ambiguous => Ok(Revocation::Ambiguous),
        }
    }

    /// Deletes the token with platform id `id`, which a listing just made showed.
    pub async fn delete(&self, bearer: &Token, id: &str) -> Result<Revocation, IssuerError> {
        let path = format!("/workspaces/{}/tokens/{id}", self.workspace_id);
        let (status, _) = self
            .call(reqwest::Method::DELETE, &path, bearer, "revoke")
            .await?;
        match status {
            404 => Ok(Revocation::AlreadyRevoked),
            s if (200..300).contains(&s) => Ok(Revocation::Revoked),
            status => Err(IssuerError::Status {
                operation: "revoke",
                status,
            }),
        }
    }
}

/// Why an answer's body was not read.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

impl BodyError {
    fn or_transport(self, issuer: &HttpIssuer<'_>, operation: &'static str) -> IssuerError {
        match self {
            BodyError::TooLarge => IssuerError::Malformed {
                operation,
                reason: format!("the answer is larger than {} KiB", MAX_ANSWER_BYTES / 1024),
            },
            BodyError::Transport(e) => issuer.transport(operation)(e),
        }
    }
}

/// The answer's body, chunk by chunk, refused once it passes [`MAX_ANSWER_BYTES`]: a
/// platform (or something posing as one) answering a gigabyte must not take the operator's
/// memory, and every tenant's rotations with it.
async fn read_capped(mut answer: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    operation: &'static str,
) -> Result<T, IssuerError> {
    // serde_json's message names a line and column, never the input text.
    serde_json::from_slice(body).map_err(|e| IssuerError::Malformed {
        operation,
        reason: format!("invalid JSON ({})", e.classify_name()),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// W3C trace context: version 00, the rotation's trace id, a fresh span id, sampled. A trace
/// id that is not one (it comes from an annotation anyone who may edit Secrets can change) is
/// replaced by a fresh one, so a bad value cannot block the platform calls of a version.
pub fn traceparent(trace_id: &str) -> String {
    let span: [u8; 8] = rand::random();
    let trace_id = if is_trace_id(trace_id) {
        trace_id.to_string()
    } else {
        hex::encode(rand::random::<[u8; 16]>())
    };
    format!("00-{trace_id}-{}-01", hex::encode(span))
}

/// 32 lowercase hex digits, not all zero (W3C trace context, trace-id).
fn is_trace_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0')
}

/// Which listed token a revocation deletes.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    None,
    One(String),
    Ambiguous,
}

/// The one live token with `prefix`; among several, the one whose id is `known_id`.
fn pick_by_prefix(tokens: &[PlatformToken], prefix: &str, known_id: Option<&str>) -> Pick {
    match listed_as(tokens, prefix, known_id) {
        Listed::Absent => Pick::None,
        Listed::One(token) => Pick::One(token.id.clone()),
        Listed::Several(_) => Pick::Ambiguous,
    }
}

/// Which of a listing's tokens is a version's, known by its prefix (and its platform id).
pub enum Listed<'t> {
    /// No live token has the prefix.
    Absent,
    /// The only one with the prefix, or among several the one whose id is known.
    One(&'t PlatformToken),
    /// Several share the prefix and none is known: which is the version's cannot be told.
    Several(Vec<&'t PlatformToken>),
}

/// The version's token in `tokens`: the one with `prefix`; among several, the one whose id is
/// `known_id`.
pub fn listed_as<'t>(
    tokens: &'t [PlatformToken],
    prefix: &str,
    known_id: Option<&str>,
) -> Listed<'t> {
    let matching: Vec<&PlatformToken> = tokens.iter().filter(|t| t.prefix == prefix).collect();
    match matching.as_slice() {
        [] => Listed::Absent,
        [one] => Listed::One(one),
        several => match several.iter().find(|t| Some(t.id.as_str()) == known_id) {
            Some(known) => Listed::One(known),
            None => Listed::Several(matching),
        },
    }
}

/// Which of the platform's tokens no Secret holds, among those created at or after `since`.
pub fn unheld_since<'t>(
    tokens: &'t [PlatformToken],
    since: DateTime<Utc>,
    held_prefixes: &[String],
) -> Vec<&'t PlatformToken> {
    tokens
        .iter()
        .filter(|t| t.created_at >= since && !held_prefixes.contains(&t.prefix))
        .collect()
}

/// Whether a consumer used `current` after the cutover (the operator's own use, verify,
/// happens before the cutover and so does not count).
pub fn used_since_cutover(
    tokens: &[PlatformToken],
    current: &Token,
    cutover: DateTime<Utc>,
) -> bool {
    let prefix = prefix_of(current.expose());
    tokens
        .iter()
        .any(|t| t.prefix == prefix && t.last_used_at.is_some_and(|used| used > cutover))
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
