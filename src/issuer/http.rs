//! The HTTP issuer: the platform token API of seed 001.
//!
//! - mint:   `POST {url}/admin/workspaces/{id}/tokens` with the admin token;
//! - verify: `GET {url}/workspaces/{id}/tokens` with the NEW token (non-destructive);
//! - revoke: `DELETE {url}/workspaces/{id}/tokens/{tokenId}`, the id found by prefix.
//!
//! Every call carries the rotation's trace id as a W3C `traceparent` and the spec's timeout.
//! Errors name the operation and the HTTP status, never a body or a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use chrono::{DateTime, Utc};
use serde::Deserialize;

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

/// Calls in flight to one platform at once: a platform that hangs holds at most this many
/// of the controller's workers (16 by default), never all of them.
pub const PER_PLATFORM_IN_FLIGHT: usize = 4;

/// A connection pool shared by every WorkspaceToken (timeouts are per request), and the
/// calls in flight to each platform.
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    in_flight: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl HttpClient {
    pub fn new() -> Self {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // kube already links ring; one provider for every TLS client in the process.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
            // A redirect would send the bearer token's request somewhere the issuer did not
            // name; a 3xx is an error like any other status.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            // DNS in Rust (reads /etc/resolv.conf): the static binary in a distroless image
            // has no glibc NSS modules for getaddrinfo to load.
            .hickory_dns(true)
            .build()
            .expect("an HTTP client with the default TLS provider");
        HttpClient {
            http,
            in_flight: Arc::default(),
        }
    }

    /// A slot for one call to the platform at `base`, or None when every slot is taken.
    fn slot(&self, base: &str) -> Option<OwnedSemaphorePermit> {
        self.slots(base).try_acquire_owned().ok()
    }

    fn slots(&self, base: &str) -> Arc<Semaphore> {
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        let slots = in_flight
            .entry(base.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_PLATFORM_IN_FLIGHT)));
        slots.clone()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The platform of one WorkspaceToken.
pub struct HttpIssuer<'a> {
    client: &'a HttpClient,
    base: String,
    workspace_id: &'a str,
    timeout_seconds: u32,
    traceparent: String,
}

impl<'a> HttpIssuer<'a> {
    pub fn new(
        client: &'a HttpClient,
        spec: &HttpIssuerSpec,
        workspace_id: &'a str,
        trace_id: &str,
    ) -> Self {
        Self::at(
            client,
            &spec.url,
            spec.timeout_seconds,
            workspace_id,
            trace_id,
        )
    }

    /// The platform at `url` (a version's recorded issuer, which the spec may have left).
    pub fn at(
        client: &'a HttpClient,
        url: &str,
        timeout_seconds: u32,
        workspace_id: &'a str,
        trace_id: &str,
    ) -> Self {
        HttpIssuer {
            client,
            base: url.trim_end_matches('/').to_string(),
            workspace_id,
            timeout_seconds,
            traceparent: traceparent(trace_id),
        }
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
        let _slot = self
            .client
            .slot(&self.base)
            .ok_or(IssuerError::Busy { operation })?;
        let answer = self
            .client
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer.expose())
            .header("traceparent", &self.traceparent)
            .timeout(Duration::from_secs(self.timeout_seconds.into()))
            .send()
            .await
            .map_err(self.transport(operation))?;
        let status = answer.status().as_u16();
        let body = read_capped(answer)
            .await
            .map_err(|e| e.or_transport(self, operation))?;
        Ok((status, body))
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
        let path = format!("/workspaces/{}/tokens", self.workspace_id);
        let (status, body) = self
            .call(reqwest::Method::GET, &path, bearer, operation)
            .await?;
        if !(200..300).contains(&status) {
            return Err(IssuerError::Status { operation, status });
        }
        Ok(decode::<ListAnswer>(&body, operation)?.tokens)
    }

    /// Proves a new token works with a non-destructive call; returns its platform id.
    pub async fn verify(&self, new: &Token) -> Result<Option<String>, IssuerError> {
        let tokens = self.list(new, "verify").await?;
        let prefix = new.prefix();
        Ok(tokens
            .into_iter()
            .find(|t| t.prefix == prefix)
            .map(|t| t.id))
    }

    /// Revokes the token with prefix `prefix`, authenticating with `bearer`. The id to delete
    /// comes from a listing made now and matched by prefix, never from a record someone
    /// else could have edited: a wrong id would revoke another token and leave this one live.
    pub async fn revoke(&self, bearer: &Token, prefix: &str) -> Result<Revocation, IssuerError> {
        let tokens = self.list(bearer, "revoke").await?;
        let mut matching = tokens.into_iter().filter(|t| t.prefix == prefix);
        let id = match (matching.next(), matching.next()) {
            (None, _) => return Ok(Revocation::AlreadyRevoked),
            (Some(one), None) => one.id,
            (Some(_), Some(_)) => return Ok(Revocation::Ambiguous),
        };
        self.delete(bearer, &id).await
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
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn listed(id: &str, prefix: &str, created: &str, used: Option<&str>) -> PlatformToken {
        PlatformToken {
            id: id.into(),
            prefix: prefix.into(),
            created_at: at(created),
            last_used_at: used.map(at),
        }
    }

    #[test]
    fn traceparent_carries_the_rotation_trace_id() {
        let tp = traceparent("0af7651916cd43dd8448eb211c80319c");
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", "0af7651916cd43dd8448eb211c80319c", "01")
        );
        assert_eq!(parts[2].len(), 16);
    }

    #[test]
    fn a_trace_id_that_is_not_one_is_replaced_by_a_fresh_one() {
        let bad = [
            "",
            "0af7651916cd43dd8448eb211c80319",
            "0AF7651916CD43DD8448EB211C80319C",
            "00000000000000000000000000000000",
            "0af7651916cd43dd8448eb211c80319c\r\nx-evil: 1",
            "zzf7651916cd43dd8448eb211c80319c",
        ];
        for value in bad {
            let tp = traceparent(value);
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{value:?}: {tp}");
            assert!(is_trace_id(parts[1]), "{value:?}: {tp}");
            assert_ne!(parts[1], value);
            assert!(http::HeaderValue::from_str(&tp).is_ok(), "{value:?}");
        }
    }

    #[test]
    fn orphans_are_tokens_created_in_the_window_that_no_secret_holds() {
        let tokens = [
            listed("old", "aaaaaaaa", "2026-01-01T00:00:00Z", None),
            listed("held", "bbbbbbbb", "2026-01-02T00:00:10Z", None),
            listed("orphan", "cccccccc", "2026-01-02T00:00:11Z", None),
        ];
        let orphans = unheld_since(&tokens, at("2026-01-02T00:00:00Z"), &["bbbbbbbb".into()]);
        assert_eq!(
            orphans.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["orphan"]
        );
    }

    #[test]
    fn only_use_after_the_cutover_counts_as_consumer_use() {
        let current = Token::from_plaintext("newtokenXYZ".into());
        let cutover = at("2026-01-02T00:00:00Z");
        let before = [listed(
            "n",
            "newtoken",
            "2026-01-01T23:59:00Z",
            Some("2026-01-01T23:59:30Z"),
        )];
        let after = [listed(
            "n",
            "newtoken",
            "2026-01-01T23:59:00Z",
            Some("2026-01-02T00:00:05Z"),
        )];
        assert!(
            !used_since_cutover(&before, &current, cutover),
            "the operator's verify call"
        );
        assert!(used_since_cutover(&after, &current, cutover));
    }

    #[test]
    fn issuer_errors_never_carry_a_token() {
        let e = IssuerError::WrongWorkspace {
            expected: "ws-a".into(),
            got: "ws-b".into(),
        };
        assert!(e.to_string().contains("nothing was written"));
        assert_eq!(e.reason(), "IssuerWrongWorkspace");
    }
}
