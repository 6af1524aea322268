//! Certificates and keys the control plane needs, generated fresh for every start.
//!
//! One CA signs the API server's serving certificate and the client certificates of the
//! identities tests use: an admin in `system:masters`, and an unprivileged user that holds
//! no RBAC at all until a test grants it some.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The unprivileged identity's user name, as RBAC subjects name it.
pub const UNPRIVILEGED_USER: &str = "tokenwarden-test-user";

/// A client identity: certificate and key files signed by the control plane's CA.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the control plane's processes read.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Signs and verifies service-account tokens (an ECDSA P-256 private key, PKCS#8 PEM).
    pub service_account_key: PathBuf,
    /// The public half of `service_account_key`, which verifies the tokens.
    pub service_account_public_key: PathBuf,
    pub admin: ClientIdentity,
    pub unprivileged: ClientIdentity,
    /// The CA a node's kubelet trusts: it signs one certificate only, the API server's
    /// (`kubectl logs`, `exec`), so no identity of the cluster's CA reaches the kubelet.
    pub kubelet_client_ca: PathBuf,
    pub apiserver_kubelet_client: ClientIdentity,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Pki {
    /// Writes a new CA, serving certificate, client certificates and service-account key to `dir`.
    pub fn generate(dir: &Path) -> Result<Self, BoxError> {
        fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tokenwarden-testenv-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let kubelet_ca_params = ca_params.clone();
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let ca_cert = write(dir, "ca.crt", &ca.pem())?;
        let kubelet_ca = CertifiedIssuer::self_signed(kubelet_ca_params, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let service_account_key = KeyPair::generate()?;

        Ok(Pki {
            ca_cert,
            serving_cert: write(dir, "apiserver.crt", &serving_cert.pem())?,
            serving_key: write(dir, "apiserver.key", &serving_key.serialize_pem())?,
            service_account_key: write(dir, "sa.key", &service_account_key.serialize_pem())?,
            service_account_public_key: write(
                dir,
                "sa.pub",
                &service_account_key.public_key_pem(),
            )?,
            admin: client(dir, &ca, "admin", "tokenwarden-admin", &["system:masters"])?,
            unprivileged: client(dir, &ca, "user", UNPRIVILEGED_USER, &[])?,
            kubelet_client_ca: write(dir, "kubelet-client-ca.crt", &kubelet_ca.pem())?,
            apiserver_kubelet_client: client(
                dir,
                &kubelet_ca,
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                &[],
            )?,
        })
    }
}

fn client(
    dir: &Path,
    ca: &CertifiedIssuer<'_, KeyPair>,
    file_stem: &str,
    user: &str,
    groups: &[&str],
) -> Result<ClientIdentity, BoxError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok(ClientIdentity {
        cert: write(dir, &format!("{file_stem}.crt"), &cert.pem())?,
        key: write(dir, &format!("{file_stem}.key"), &key.serialize_pem())?,
    })
}

/// Writes a file only its owner may read (keys among them).
fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, BoxError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?
        .write_all(contents.as_bytes())?;
    Ok(path)
}
