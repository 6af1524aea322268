//! How a CLI command reaches the cluster: kubectl's `--kubeconfig` and `--context`, the
//! namespace of `-n` or of the context, and the one message of a WorkspaceToken that is not
//! there.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Where a command reaches the cluster, as kubectl's flags say it (given after the command
/// too: kubectl passes a plugin only what follows its name).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Connection {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl Connection {
    /// The client configuration these flags name.
    pub async fn config(&self) -> Result<Config, String> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let loaded = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| format!("read kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(file, &options).await
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options).await,
            None => {
                return Config::infer()
                    .await
                    .map_err(|e| format!("connect to Kubernetes: {e}"));
            }
        };
        loaded.map_err(|e| format!("load kubeconfig: {e}"))
    }

    pub async fn client(&self) -> Result<Client, String> {
        let config = self.config().await?;
        Client::try_from(config).map_err(|e| format!("connect to Kubernetes: {e}"))
    }
}

/// The client, and `namespace` or else the context's.
pub(crate) async fn client_and_namespace(
    connection: &Connection,
    namespace: Option<String>,
) -> Result<(Client, String), String> {
    let client = connection.client().await?;
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
