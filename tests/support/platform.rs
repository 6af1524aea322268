//! The reference platform for HTTP-issuer tests: real HTTP on loopback, on a runtime of its
//! own so stopping it closes every connection (like a crashed server), and restartable on the
//! same address with the same store.

use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokenwarden::api::TokenIssuer;
use tokenwarden_platform::{Platform, TokenRow};

pub struct TestPlatform {
    runtime: Option<tokio::runtime::Runtime>,
    pub platform: Platform,
    pub addr: SocketAddr,
    pub admin: String,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPlatform {
    pub async fn start() -> TestPlatform {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("platform dir");
        let path = dir.path().join("platform.json");
        let admin = tokenwarden_platform::new_admin_token();
        let (runtime, platform, addr) =
            serve(path.clone(), admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
        TestPlatform {
            runtime: Some(runtime),
            platform,
            addr,
            admin,
            path,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the server: the listener and every open connection go at once.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Starts it again on the same address from the same store.
    pub async fn restart(&mut self) {
        self.stop();
        let (runtime, platform, _) = serve(self.path.clone(), self.admin.clone(), self.addr).await;
        self.runtime = Some(runtime);
        self.platform = platform;
    }

    async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::StatusCode {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("platform call")
            .status()
    }

    pub async fn create_workspace(&self, id: &str) {
        let status = self
            .admin_call(reqwest::Method::POST, "/workspaces", json!({ "id": id }))
            .await;
        assert_eq!(status, 201, "create workspace {id}");
    }

    /// `fault`: none | error500 | hang | malformed | wrong_workspace | hang_after_mint |
    /// refuse_list | partial_list | ...
    pub async fn fault(&self, fault: &str, remaining: Option<u32>) {
        let status = self
            .admin_call(
                reqwest::Method::POST,
                "/admin/faults",
                json!({ "fault": fault, "remaining": remaining }),
            )
            .await;
        assert_eq!(status, 200, "set fault {fault}");
    }

    /// The `redirect` fault, sending clients to `location`.
    pub async fn fault_with_location(&self, fault: &str, remaining: Option<u32>, location: &str) {
        let body = json!({ "fault": fault, "remaining": remaining, "location": location });
        let status = self
            .admin_call(reqwest::Method::POST, "/admin/faults", body)
            .await;
        assert_eq!(status, 200, "set fault {fault}");
    }

    /// Tokens of `workspace` the platform still accepts.
    pub async fn live(&self, workspace: &str) -> Vec<TokenRow> {
        self.platform
            .rows()
            .await
            .into_iter()
            .filter(|r| r.workspace_id == workspace && r.revoked_at.is_none())
            .collect()
    }

    /// A token minted straight through the admin route (as a client that then crashed).
    pub async fn mint_directly(&self, workspace: &str) -> String {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!(
                "{}/admin/workspaces/{workspace}/tokens",
                self.url()
            ))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("mint answer");
        answer["auth_token"]
            .as_str()
            .expect("auth_token")
            .to_string()
    }

    /// Revokes the token with platform id `id` through the token API, authenticating with
    /// `bearer` (a token of the workspace): by hand, or by another tool, behind tokenwarden.
    pub async fn revoke_directly(&self, workspace: &str, id: &str, bearer: &str) {
        let status = reqwest::Client::new()
            .delete(format!("{}/workspaces/{workspace}/tokens/{id}", self.url()))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("revoke")
            .status();
        assert!(status.is_success(), "revoke {id}: {status}");
    }

    /// The admin token as the Secret `platform-admin` (key `token`) in `ns`, and the
    /// TokenIssuer `platform` of `ns` that uses it (`timeoutSeconds: 3`); an operator marks
    /// it Ready.
    pub async fn admin_secret(&self, client: &Client, ns: &str, token: &str) {
        self.admin_secret_only(client, ns, token).await;
        self.issuer(client, ns, ISSUER, json!({})).await;
    }

    /// The TokenIssuer `name` in `ns` for this platform (plain http, so
    /// `allowInsecureHttp`), with `extra` merged into its spec (applied server-side: a second
    /// call edits it).
    pub async fn issuer(&self, client: &Client, ns: &str, name: &str, extra: serde_json::Value) {
        let mut spec = self.issuer_spec();
        merge(&mut spec, extra);
        let issuer: TokenIssuer = serde_json::from_value(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenIssuer",
            "metadata": { "name": name, "namespace": ns },
            "spec": spec
        }))
        .expect("TokenIssuer");
        let api: Api<TokenIssuer> = Api::namespaced(client.clone(), ns);
        let params = PatchParams::apply("tokenwarden-tests").force();
        api.patch(name, &params, &Patch::Apply(&issuer))
            .await
            .expect("apply TokenIssuer");
    }

    /// The spec of a TokenIssuer or ClusterTokenIssuer for this platform.
    pub fn issuer_spec(&self) -> serde_json::Value {
        json!({ "http": {
            "url": self.url(),
            "allowInsecureHttp": true,
            "adminTokenSecretRef": { "name": "platform-admin", "key": "token" },
            "timeoutSeconds": 3
        } })
    }

    /// The admin token as the Secret `platform-admin` (key `token`) in `ns`, without an issuer.
    pub async fn admin_secret_only(&self, client: &Client, ns: &str, token: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "platform-admin" },
            "stringData": { "token": token }
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("admin Secret");
        // The leak scan looks for the admin token too.
        let sha = tokenwarden::token::sha256_hex(token.as_bytes());
        std::fs::write(
            super::artifacts_dir().join(format!("{ns}-admin-token.json")),
            json!({ "tokenSha256": sha }).to_string(),
        )
        .expect("record admin token hash");
    }

    /// A WorkspaceToken spec minting at the TokenIssuer `platform` of its namespace (see
    /// [`TestPlatform::admin_secret`]).
    pub fn spec(&self, workspace: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({
            "workspaceId": workspace,
            "issuerRef": { "name": ISSUER }
        });
        merge(&mut spec, extra);
        spec
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The name of the TokenIssuer [`TestPlatform::admin_secret`] creates.
pub const ISSUER: &str = "platform";

/// Waits (up to 30 s) until the issuer `name` is Ready for its current generation.
pub async fn wait_ready<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let object = serde_json::to_value(api.get(name).await.expect("get issuer")).unwrap();
        let generation = &object["metadata"]["generation"];
        let ready = object["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && &c["observedGeneration"] == generation
            })
        });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "issuer {name} not Ready within 30 s (is an operator running?): {}",
            object["status"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

async fn serve(
    path: PathBuf,
    admin: String,
    addr: SocketAddr,
) -> (tokio::runtime::Runtime, Platform, SocketAddr) {
    let served =
        tokio::task::spawn_blocking(move || tokenwarden_platform::serve(&path, &admin, addr))
            .await
            .expect("platform start");
    (served.runtime, served.platform, served.addr)
}
