//! The reference platform over real HTTP on loopback: auth scoping, hash-only storage,
//! prefixes, `last_used_at`, revocation answers, persistence and fault injection.

use super::*;

const ADMIN: &str = "admin-token-for-tests-0123456789abcdef";

struct Running {
    url: String,
    platform: Platform,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

async fn start_at(dir: tempfile::TempDir, faults: bool) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = dir.path().join("platform.json");
    let platform = Platform::open(&path, ADMIN, faults).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = platform.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Running {
        url,
        platform,
        http: reqwest::Client::new(),
        _dir: dir,
        path,
    }
}

async fn start() -> Running {
    start_at(tempfile::tempdir().unwrap(), true).await
}

impl Running {
    async fn workspace(&self, id: &str) {
        let r = self
            .http
            .post(format!("{}/workspaces", self.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "id": id }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    async fn mint(&self, id: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/admin/workspaces/{id}/tokens", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or_default())
    }

    async fn token(&self, id: &str) -> String {
        let (status, body) = self.mint(id).await;
        assert_eq!(status, 201);
        body["auth_token"].as_str().unwrap().to_string()
    }

    async fn list(&self, id: &str, token: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}/workspaces/{id}/tokens", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or_default())
    }

    async fn revoke(&self, id: &str, token: &str, token_id: &str) -> reqwest::StatusCode {
        self.http
            .delete(format!("{}/workspaces/{id}/tokens/{token_id}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test]
async fn minted_tokens_are_32_random_bytes_base64url_with_an_8_char_prefix() {
    let p = start().await;
    p.workspace("ws-a").await;
    let (status, body) = p.mint("ws-a").await;
    assert_eq!(status, 201);
    assert_eq!(body["workspace_id"], "ws-a");
    let token = body["auth_token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap();
    assert_eq!(decoded.len(), 32);
    let (_, listed) = p.list("ws-a", token).await;
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["tokens"][0]["prefix"], &token[..8]);
}

#[tokio::test]
async fn only_hashes_are_stored_never_the_token() {
    let p = start().await;
    p.workspace("ws-a").await;
    let token = p.token("ws-a").await;
    let file = std::fs::read_to_string(&p.path).unwrap();
    assert!(!file.contains(&token), "the store file holds the plaintext");
    assert!(
        !file.contains(ADMIN),
        "the store file holds the admin token"
    );
    assert!(file.contains(&sha256_hex(token.as_bytes())));
    let rows = p.platform.rows().await;
    assert_eq!(rows[0].token_sha256, sha256_hex(token.as_bytes()));
}

#[tokio::test]
async fn a_token_of_workspace_a_never_works_on_workspace_b() {
    let p = start().await;
    p.workspace("ws-a").await;
    p.workspace("ws-b").await;
    let a = p.token("ws-a").await;
    let b = p.token("ws-b").await;
    assert_eq!(p.list("ws-b", &a).await.0, 401);
    let (_, listed_b) = p.list("ws-b", &b).await;
    let b_id = listed_b["tokens"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.revoke("ws-b", &a, &b_id).await,
        401,
        "A cannot revoke on B"
    );
    // A's own workspace can't see or revoke B's token id either: 404, like an unknown id.
    assert_eq!(p.revoke("ws-a", &a, &b_id).await, 404);
    assert_eq!(p.list("ws-b", &b).await.0, 200, "B's token survived");
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let p = start().await;
    p.workspace("ws-a").await;
    let token = p.token("ws-a").await;
    let r = p
        .http
        .post(format!("{}/admin/workspaces/ws-a/tokens", p.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a workspace token is not an admin token");
    let r = p
        .http
        .post(format!("{}/workspaces", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(p.mint("no-such-workspace").await.0, 404);
}

#[tokio::test]
async fn last_used_at_moves_on_each_authenticated_use() {
    let p = start().await;
    p.workspace("ws-a").await;
    let t1 = p.token("ws-a").await;
    let t2 = p.token("ws-a").await;
    let rows = p.platform.rows().await;
    assert!(
        rows.iter().all(|r| r.last_used_at.is_none()),
        "minting is not a use"
    );
    p.list("ws-a", &t1).await;
    let first = p.platform.rows().await;
    let used = |rows: &[TokenRow], t: &str| {
        rows.iter()
            .find(|r| r.token_sha256 == sha256_hex(t.as_bytes()))
            .unwrap()
            .last_used_at
    };
    assert!(used(&first, &t1).is_some());
    assert!(
        used(&first, &t2).is_none(),
        "only the presented token is marked used"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    p.list("ws-a", &t1).await;
    assert!(used(&p.platform.rows().await, &t1) > used(&first, &t1));
}

#[tokio::test]
async fn revoke_answers_404_for_unknown_and_already_revoked_ids() {
    let p = start().await;
    p.workspace("ws-a").await;
    let keep = p.token("ws-a").await;
    let gone = p.token("ws-a").await;
    let (_, listed) = p.list("ws-a", &keep).await;
    let gone_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == gone[..8])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p.revoke("ws-a", &keep, &gone_id).await, 200);
    assert_eq!(
        p.revoke("ws-a", &keep, &gone_id).await,
        404,
        "already revoked"
    );
    assert_eq!(p.revoke("ws-a", &keep, "no-such-id").await, 404);
    assert_eq!(
        p.list("ws-a", &gone).await.0,
        401,
        "a revoked token no longer authenticates"
    );
    let (_, listed) = p.list("ws-a", &keep).await;
    assert_eq!(listed["count"], 1, "revoked tokens are not listed");
}

#[tokio::test]
async fn a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keep_dir = dir.path().to_path_buf();
    let p = start_at(dir, false).await;
    p.workspace("ws-a").await;
    let token = p.token("ws-a").await;
    p.list("ws-a", &token).await;
    let before = p.platform.rows().await;
    let reopened = Platform::open(&keep_dir.join("platform.json"), ADMIN, false)
        .await
        .unwrap();
    assert_eq!(reopened.rows().await, before);
    drop(p);
}

#[tokio::test]
async fn injected_faults_answer_500_malformed_and_a_wrong_workspace() {
    let p = start().await;
    p.workspace("ws-a").await;
    let set = |fault: &str| {
        p.http
            .post(format!("{}/admin/faults", p.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "fault": fault, "remaining": 1 }))
            .send()
    };
    assert_eq!(set("error500").await.unwrap().status(), 200);
    assert_eq!(p.mint("ws-a").await.0, 500);
    set("malformed").await.unwrap();
    let r = p
        .http
        .post(format!("{}/admin/workspaces/ws-a/tokens", p.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.json::<serde_json::Value>().await.is_err());
    set("wrong_workspace").await.unwrap();
    assert_eq!(p.mint("ws-a").await.1["workspace_id"], "ws-a-other");
    assert_eq!(
        p.mint("ws-a").await.1["workspace_id"],
        "ws-a",
        "one request only"
    );
}

#[test]
fn hashes_compare_equal_only_when_equal() {
    let a = sha256_hex(b"one");
    assert!(same_hash(&a, &a.clone()));
    assert!(!same_hash(&a, &sha256_hex(b"two")));
    assert!(!same_hash(&a, &a[..63]));
    assert!(!same_hash("", &a));
}

#[test]
fn the_generated_admin_token_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.token");
    write_secret_file(&path, "secret").expect("written");
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        write_secret_file(&path, "other").is_err(),
        "never overwrites an existing file"
    );
}
