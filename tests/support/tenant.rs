//! A tenant of one namespace, as a platform team hands it out: `edit`-like rights on
//! WorkspaceTokens and Secrets, read-only Deployments, nothing else (no TokenIssuers), and a
//! capture server standing where a tenant would like credentials to go.

use std::sync::{Arc, Mutex};

use kube::api::{Api, PostParams};
use serde_json::json;

/// Grants the unprivileged identity of the control plane the tenant Role in `ns`.
pub async fn grant_tenant(admin: &kube::Client, ns: &str) {
    grant_tenant_with(admin, ns, &[]).await;
}

/// The tenant Role in `ns`, plus `extra` RBAC rules.
pub async fn grant_tenant_with(admin: &kube::Client, ns: &str, extra: &[serde_json::Value]) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let mut rules = vec![
        json!({ "apiGroups": ["tokenwarden.dev"], "resources": ["workspacetokens"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] }),
        json!({ "apiGroups": [""], "resources": ["secrets"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"] }),
        json!({ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"] }),
    ];
    rules.extend_from_slice(extra);
    let role: Role =
        serde_json::from_value(json!({ "metadata": { "name": "tenant" }, "rules": rules }))
            .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "tenant" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant" },
        "subjects": [{ "kind": "User", "name": tokenwarden_testenv::UNPRIVILEGED_USER }],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("tenant Role");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("tenant RoleBinding");
}

/// One request the capture server saw: never its Authorization header in the clear, only
/// whether it had one and its SHA-256 (to match against tokens the cluster holds).
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    pub authorization_sha256: Option<String>,
}

/// An HTTP server that answers 200 `{}` to everything and records every request.
pub struct CaptureServer {
    pub url: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CaptureServer {
    pub fn start() -> CaptureServer {
        let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("capture runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind capture server");
        listener.set_nonblocking(true).expect("non-blocking");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let record = seen.clone();
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                let authorization = request.headers().get("authorization").map(|v| {
                    let bearer = v.to_str().unwrap_or_default();
                    let token = bearer.strip_prefix("Bearer ").unwrap_or(bearer);
                    tokenwarden::token::sha256_hex(token.as_bytes())
                });
                record.lock().unwrap().push(Captured {
                    method: request.method().to_string(),
                    path: request.uri().path().to_string(),
                    authorization_sha256: authorization,
                });
                "{}"
            }
        });
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(listener, router).await
        });
        CaptureServer {
            url,
            seen,
            runtime: Some(runtime),
        }
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    /// The rule of every tenant test: nothing ever reached the capture server.
    pub fn assert_untouched(&self) {
        let seen = self.requests();
        assert!(
            seen.is_empty(),
            "the capture server saw {} request(s): {seen:?}",
            seen.len()
        );
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
