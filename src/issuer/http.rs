//! The HTTP issuer: the platform token API of seed 001.
//!
//! - mint:   `POST {url}/admin/workspaces/{id}/tokens` with the admin token;
//! - verify: `GET {url}/workspaces/{id}/tokens` with the NEW token (non-destructive);
//! - revoke: `DELETE {url}/workspaces/{id}/tokens/{tokenId}`, the id found by prefix.
//!
//! Every call carries the rotation's trace id as a W3C `traceparent` and the spec's timeout.
//! Errors name the operation and the HTTP status, never a body or a token.

use std::sync::Once;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::api::HttpIssuerSpec;
use crate::token::{Token, prefix_of};

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
}

/// A connection pool shared by every WorkspaceToken (timeouts are per request).
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
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
            .no_proxy()
            // DNS in Rust (reads /etc/resolv.conf): the static binary in a distroless image
            // has no glibc NSS modules for getaddrinfo to load.
            .hickory_dns(true)
            .build()
            .expect("an HTTP client with the default TLS provider");
        HttpClient { http }
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

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &Token,
    ) -> reqwest::RequestBuilder {
        self.client
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer.expose())
            .header("traceparent", &self.traceparent)
            .timeout(Duration::from_secs(self.timeout_seconds.into()))
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

    /// Mints a token through the admin route. An answer for another workspace is refused.
    pub async fn mint(&self, admin: &Token) -> Result<Token, IssuerError> {
        let path = format!("/admin/workspaces/{}/tokens", self.workspace_id);
        let answer = self
            .request(reqwest::Method::POST, &path, admin)
            .send()
            .await
            .map_err(self.transport("mint"))?;
        let status = answer.status().as_u16();
        if status == 401 || status == 403 {
            return Err(IssuerError::AdminRejected {
                operation: "mint",
                status,
            });
        }
        if !answer.status().is_success() {
            return Err(IssuerError::Status {
                operation: "mint",
                status,
            });
        }
        let body: MintAnswer = decode(answer, "mint").await?;
        let token = Token::from_plaintext(body.auth_token);
        if body.workspace_id != self.workspace_id {
            return Err(IssuerError::WrongWorkspace {
                expected: self.workspace_id.to_string(),
                got: body.workspace_id,
            });
        }
        if token.expose().is_empty() {
            return Err(IssuerError::Malformed {
                operation: "mint",
                reason: "empty auth_token".into(),
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
        let answer = self
            .request(reqwest::Method::GET, &path, bearer)
            .send()
            .await
            .map_err(self.transport(operation))?;
        let status = answer.status().as_u16();
        if !answer.status().is_success() {
            return Err(IssuerError::Status { operation, status });
        }
        Ok(decode::<ListAnswer>(answer, operation).await?.tokens)
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

    /// Revokes the token with prefix `prefix` (or id `known_id`), authenticating with `bearer`.
    pub async fn revoke(
        &self,
        bearer: &Token,
        prefix: &str,
        known_id: Option<&str>,
    ) -> Result<Revocation, IssuerError> {
        let id = match known_id {
            Some(id) => id.to_string(),
            None => {
                let tokens = self.list(bearer, "revoke").await?;
                match tokens.into_iter().find(|t| t.prefix == prefix) {
                    Some(t) => t.id,
                    None => return Ok(Revocation::AlreadyRevoked),
                }
            }
        };
        let path = format!("/workspaces/{}/tokens/{id}", self.workspace_id);
        let answer = self
            .request(reqwest::Method::DELETE, &path, bearer)
            .send()
            .await
            .map_err(self.transport("revoke"))?;
        match answer.status().as_u16() {
            404 => Ok(Revocation::AlreadyRevoked),
            s if (200..300).contains(&s) => Ok(Revocation::Revoked),
            status => Err(IssuerError::Status {
                operation: "revoke",
                status,
            }),
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    answer: reqwest::Response,
    operation: &'static str,
) -> Result<T, IssuerError> {
    let bytes = answer.bytes().await.map_err(|_| IssuerError::Malformed {
        operation,
        reason: "the answer body could not be read".into(),
    })?;
    // serde_json's message names a line and column, never the input text.
    serde_json::from_slice(&bytes).map_err(|e| IssuerError::Malformed {
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

/// W3C trace context: version 00, the rotation's trace id, a fresh span id, sampled.
pub fn traceparent(trace_id: &str) -> String {
    let span: [u8; 8] = rand::random();
    format!("00-{trace_id}-{}-01", hex::encode(span))
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
