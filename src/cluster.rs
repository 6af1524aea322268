//! How a CLI command reaches the cluster: the kubeconfig's client and namespace, and the one
//! message of a WorkspaceToken that is not there.

use kube::Client;

pub(crate) async fn client_and_namespace(
    namespace: Option<String>,
) -> Result<(Client, String), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("connect to Kubernetes: {e}"))?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, ns))
}

pub(crate) fn not_found(name: &str, ns: &str) -> impl FnOnce(kube::Error) -> String {
    let (name, ns) = (name.to_string(), ns.to_string());
    move |e| match e {
        kube::Error::Api(s) if s.code == 404 => format!("WorkspaceToken {ns}/{name} not found"),
        e => format!("get WorkspaceToken {ns}/{name}: {e}"),
    }
}
