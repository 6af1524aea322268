//! A reference implementation of the platform token API tokenwarden's HTTP issuer talks to
//! (seeds 001 and 002): workspace-scoped bearer tokens, 32 random bytes base64url, stored as
//! SHA-256 only, identified by an 8-character prefix, with `last_used_at` on every use.
//!
//! It is the integration-test peer and the platform `make demo` can show, so it also has
//! opt-in fault injection (`--enable-faults`): 500s, hangs, malformed JSON, a wrong
//! `workspace_id`, a gigabyte answer, a redirect, a too-short token and a refused listing,
//! switched through an admin-only endpoint.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

pub const PREFIX_LEN: usize = 8;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRow {
    pub id: String,
    pub workspace_id: String,
    pub token_sha256: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Workspace {
    created_at: Option<DateTime<Utc>>,
    tokens: Vec<TokenRow>,
}

/// Everything persisted: no plaintext token, only hashes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Data {
    admin_token_sha256: String,
    workspaces: BTreeMap<String, Workspace>,
}

/// A fault the server injects into token-API answers while `remaining` lasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// 500 Internal Server Error.
    Error500,
    /// Never answer (until the client gives up).
    Hang,
    /// 200 with a body that is not JSON.
    Malformed,
    /// Mint answers with another workspace's id.
    WrongWorkspace,
    /// Mint creates the token, then never answers: the crash window of a client.
    HangAfterMint,
    /// 200 with a body of 1 GiB, streamed.
    HugeBody,
    /// 307 to the fault's `location`.
    Redirect,
    /// Mint answers a 12-character token.
    ShortToken,
    /// Listing tokens answers 401 (only listings count down `remaining`).
    RefuseList,
    /// Listing tokens leaves the oldest one out while `count` still counts it: a partial
    /// listing (only listings count down `remaining`).
    PartialList,
}

/// Which route a request came to, for faults that apply to one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Mint,
    List,
    Revoke,
}

impl Fault {
    fn applies_to(self, route: Route) -> bool {
        match self {
            Fault::RefuseList | Fault::PartialList => route == Route::List,
            Fault::WrongWorkspace | Fault::HangAfterMint | Fault::ShortToken => {
                route == Route::Mint
            }
            _ => true,
        }
    }
}

/// What the platform saw of one request (never its Authorization header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct Faults {
    fault: Fault,
    remaining: u32,
    location: Option<String>,
}

struct Inner {
    path: PathBuf,
    data: Mutex<Data>,
    faults: Option<Mutex<Faults>>,
    requests: std::sync::Mutex<Vec<RequestRecord>>,
}

/// The platform: routes plus a file-backed store.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A platform served on a runtime of its own (one worker), so that dropping or shutting down
/// the runtime closes the listener and every connection at once, like a crashed server.
pub struct Served {
    pub runtime: tokio::runtime::Runtime,
    pub platform: Platform,
    pub addr: std::net::SocketAddr,
}

/// Serves the store at `path` on `addr` (port 0: any free one), faults enabled. Blocking:
/// call it outside a runtime, or from `spawn_blocking`.
pub fn serve(path: &Path, admin_token: &str, addr: std::net::SocketAddr) -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("platform runtime");
    let (path, admin) = (path.to_path_buf(), admin_token.to_string());
    let (platform, addr) = runtime.block_on(async move {
        let platform = Platform::open(&path, &admin, true)
            .await
            .expect("open platform");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind platform");
        let addr = listener.local_addr().expect("platform addr");
        let router = platform.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (platform, addr)
    });
    Served {
        runtime,
        platform,
        addr,
    }
}

impl Platform {
    /// Opens (or creates) the store at `path`. The admin token is given in plaintext once and
    /// kept as its SHA-256.
    pub async fn open(
        path: &Path,
        admin_token: &str,
        enable_faults: bool,
    ) -> std::io::Result<Platform> {
        let mut data: Data = match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::default(),
            Err(e) => return Err(e),
        };
        data.admin_token_sha256 = sha256_hex(admin_token.as_bytes());
        let platform = Platform {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                data: Mutex::new(data),
                faults: enable_faults.then(|| Mutex::new(Faults::default())),
                requests: std::sync::Mutex::new(Vec::new()),
            }),
        };
        let data = platform.inner.data.lock().await;
        platform.persist(&data).await?;
        drop(data);
        Ok(platform)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/workspaces", post(create_workspace))
            .route("/admin/workspaces/{id}/tokens", post(admin_mint))
            .route("/admin/faults", post(set_fault))
            .route(
                "/workspaces/{id}/tokens",
                get(list_tokens).post(workspace_mint),
            )
            .route("/workspaces/{id}/tokens/{token_id}", delete(revoke_token))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                record_request,
            ))
            .with_state(self.clone())
    }

    /// Creates the workspace `id` (no token) as `POST /workspaces` does: for seeding many.
    pub async fn add_workspace(&self, id: &str) -> std::io::Result<()> {
        let mut data = self.inner.data.lock().await;
        let workspace = Workspace {
            created_at: Some(Utc::now()),
            tokens: Vec::new(),
        };
        data.workspaces.entry(id.to_string()).or_insert(workspace);
        self.persist(&data).await
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.requests.lock().expect("requests lock").clone()
    }

    /// Every row the store holds (tests check hash-only storage and `last_used_at`).
    pub async fn rows(&self) -> Vec<TokenRow> {
        let data = self.inner.data.lock().await;
        data.workspaces
            .values()
            .flat_map(|w| w.tokens.clone())
            .collect()
    }

    async fn persist(&self, data: &Data) -> std::io::Result<()> {
        // Write-then-rename: a crash leaves the old file or the new one, never half of one.
        let tmp = self.inner.path.with_extension("tmp");
        tokio::fs::write(
            &tmp,
            serde_json::to_vec_pretty(data).map_err(std::io::Error::other)?,
        )
        .await?;
        tokio::fs::rename(&tmp, &self.inner.path).await
    }

    /// The fault to inject into this request to `route`, if any (and counts it down), with
    /// the redirect's location.
    async fn take_fault(&self, route: Route) -> (Fault, Option<String>) {
        let Some(faults) = &self.inner.faults else {
            return (Fault::None, None);
        };
        let mut faults = faults.lock().await;
        if faults.remaining == 0 || !faults.fault.applies_to(route) {
            return (Fault::None, None);
        }
        faults.remaining -= 1;
        (faults.fault, faults.location.clone())
    }
}

type ApiResult = Result<Response, ApiError>;

struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn require_admin(data: &Data, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(t) if same_hash(&sha256_hex(t.as_bytes()), &data.admin_token_sha256) => Ok(()),
        _ => Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required")),
    }
}

/// The row of a live token of workspace `id` presented as bearer; records the use.
fn authenticate_workspace(
    data: &mut Data,
    id: &str,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let unauthorized = ApiError(
        StatusCode::UNAUTHORIZED,
        "a valid token of this workspace is required",
    );
    let presented = sha256_hex(
        bearer(headers)
            .ok_or(ApiError(StatusCode::UNAUTHORIZED, "bearer token required"))?
            .as_bytes(),
    );
    let workspace = data.workspaces.get_mut(id).ok_or(unauthorized)?;
    let row = workspace
        .tokens
        .iter_mut()
        .find(|r| r.revoked_at.is_none() && same_hash(&r.token_sha256, &presented))
        .ok_or(ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid token of this workspace is required",
        ))?;
    row.last_used_at = Some(now);
    Ok(())
}

async fn record_request(
    State(p): State<Platform>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let record = RequestRecord {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        traceparent: request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    p.inner.requests.lock().expect("requests lock").push(record);
    next.run(request).await
}

async fn injected((fault, location): (Fault, Option<String>)) -> Option<Response> {
    match fault {
        Fault::None
        | Fault::WrongWorkspace
        | Fault::HangAfterMint
        | Fault::ShortToken
        | Fault::PartialList => None,
        Fault::RefuseList => Some(ApiError(StatusCode::UNAUTHORIZED, "refused").into_response()),
        Fault::Redirect => {
            let location = location.unwrap_or_else(|| "/".into());
            Some((StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response())
        }
        Fault::HugeBody => {
            let chunk = axum::body::Bytes::from(vec![b'a'; 1 << 20]);
            let chunks = (0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
            let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
            Some((StatusCode::OK, body).into_response())
        }
        Fault::Error500 => {
            Some(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response())
        }
        Fault::Malformed => Some((StatusCode::OK, "{\"auth_token\": <not json").into_response()),
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
    }
}

#[derive(Deserialize, Default)]
struct CreateWorkspace {
    id: Option<String>,
}

async fn create_workspace(
    State(p): State<Platform>,
    headers: HeaderMap,
    body: Option<Json<CreateWorkspace>>,
) -> ApiResult {
    let mut data = p.inner.data.lock().await;
    require_admin(&data, &headers)?;
    let id = body.and_then(|Json(b)| b.id).unwrap_or_else(new_id);
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ApiError(StatusCode::BAD_REQUEST, "invalid workspace id"));
    }
    if data.workspaces.contains_key(&id) {
        return Err(ApiError(StatusCode::CONFLICT, "workspace exists"));
    }
    data.workspaces.insert(
        id.clone(),
        Workspace {
            created_at: Some(Utc::now()),
            tokens: Vec::new(),
        },
    );
    p.persist(&data)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store"))?;
    Ok((StatusCode::CREATED, Json(json!({ "workspace_id": id }))).into_response())
}

async fn mint(
    p: &Platform,
    mut data: tokio::sync::MutexGuard<'_, Data>,
    id: &str,
    fault: Fault,
) -> ApiResult {
    let wrong_workspace = fault == Fault::WrongWorkspace;
    let now = Utc::now();
    let mut token = new_token();
    if fault == Fault::ShortToken {
        token.truncate(12);
    }
    let row = TokenRow {
        id: new_id(),
        workspace_id: id.to_string(),
        token_sha256: sha256_hex(token.as_bytes()),
        prefix: token.chars().take(PREFIX_LEN).collect(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    data.workspaces
        .get_mut(id)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "workspace not found"))?
        .tokens
        .push(row);
    p.persist(&data)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store"))?;
    drop(data);
    if fault == Fault::HangAfterMint {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let answered_id = if wrong_workspace {
        format!("{id}-other")
    } else {
        id.to_string()
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "auth_token": token,
            "workspace_id": answered_id,
            "message": "Save this token now — it cannot be retrieved again.",
        })),
    )
        .into_response())
}

async fn admin_mint(
    State(p): State<Platform>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let fault = p.take_fault(Route::Mint).await;
    if let Some(answer) = injected(fault.clone()).await {
        return Ok(answer);
    }
    let data = p.inner.data.lock().await;
    require_admin(&data, &headers)?;
    mint(&p, data, &id, fault.0).await
}

async fn workspace_mint(
    State(p): State<Platform>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let fault = p.take_fault(Route::Mint).await;
    if let Some(answer) = injected(fault.clone()).await {
        return Ok(answer);
    }
    let mut data = p.inner.data.lock().await;
    authenticate_workspace(&mut data, &id, &headers, Utc::now())?;
    mint(&p, data, &id, fault.0).await
}

async fn list_tokens(
    State(p): State<Platform>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let fault = p.take_fault(Route::List).await;
    let partial = fault.0 == Fault::PartialList;
    if let Some(answer) = injected(fault).await {
        return Ok(answer);
    }
    let mut data = p.inner.data.lock().await;
    authenticate_workspace(&mut data, &id, &headers, Utc::now())?;
    let mut tokens: Vec<_> = data.workspaces[&id]
        .tokens
        .iter()
        .filter(|r| r.revoked_at.is_none())
        .map(|r| {
            json!({
                "id": r.id,
                "prefix": r.prefix,
                "created_at": rfc3339(&r.created_at),
                "last_used_at": r.last_used_at.as_ref().map(rfc3339),
            })
        })
        .collect();
    p.persist(&data)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store"))?;
    let count = tokens.len();
    if partial && !tokens.is_empty() {
        tokens.remove(0);
    }
    Ok(Json(json!({ "tokens": tokens, "count": count })).into_response())
}

async fn revoke_token(
    State(p): State<Platform>,
    UrlPath((id, token_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    if let Some(answer) = injected(p.take_fault(Route::Revoke).await).await {
        return Ok(answer);
    }
    let mut data = p.inner.data.lock().await;
    let now = Utc::now();
    authenticate_workspace(&mut data, &id, &headers, now)?;
    let row = data.workspaces.get_mut(&id).and_then(|w| {
        w.tokens
            .iter_mut()
            .find(|r| r.id == token_id && r.revoked_at.is_none())
    });
    let Some(row) = row else {
        // Unknown, another workspace's, or already revoked: the same answer for all three.
        return Err(ApiError(StatusCode::NOT_FOUND, "token not found"));
    };
    row.revoked_at = Some(now);
    p.persist(&data)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store"))?;
    Ok(Json(json!({ "status": "revoked" })).into_response())
}

#[derive(Deserialize)]
struct SetFault {
    fault: Fault,
    /// How many token-API requests get the fault (default: until changed).
    remaining: Option<u32>,
    /// Where `redirect` sends the client.
    location: Option<String>,
}

async fn set_fault(
    State(p): State<Platform>,
    headers: HeaderMap,
    Json(body): Json<SetFault>,
) -> ApiResult {
    let data = p.inner.data.lock().await;
    require_admin(&data, &headers)?;
    drop(data);
    let Some(faults) = &p.inner.faults else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "fault injection is disabled (--enable-faults)",
        ));
    };
    let mut faults = faults.lock().await;
    faults.fault = body.fault;
    faults.remaining = body.remaining.unwrap_or(u32::MAX);
    faults.location = body.location;
    Ok(Json(json!({ "fault": body.fault, "remaining": faults.remaining })).into_response())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Whether two hex hashes are equal, in time that does not depend on where they differ: a
/// caller timing the answers learns nothing about a stored hash.
pub fn same_hash(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes a new secret file (the generated admin token) readable by its owner only.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())
}

/// A fresh admin token for a new platform (same shape as workspace tokens).
pub fn new_admin_token() -> String {
    new_token()
}
