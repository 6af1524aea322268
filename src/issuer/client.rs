//! The HTTP client of every platform: one connection pool (plus one per `caBundle`), the
//! trust it places (system roots and the issuer's bundle, no redirects, no proxy) and the
//! calls in flight to each platform.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::http::IssuerError;
use crate::api::HttpIssuerSpec;

/// Calls in flight to one platform at once: a platform that hangs holds at most this many
/// of the controller's workers (16 by default), never all of them.
pub const PER_PLATFORM_IN_FLIGHT: usize = 4;

/// How long a call waits for a free slot before the pass is retried later.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// `https://Platform.example:443/x` and `https://platform.example` are one platform.
fn platform_key(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(url) => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => base.to_string(),
    }
}

/// A connection pool shared by every WorkspaceToken (timeouts are per request), and the
/// calls in flight to each platform.
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    /// One client per distinct `caBundle` (by its SHA-256): the system roots plus its own.
    with_roots: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    in_flight: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Told how long each call took, by operation (the metrics' issuer latency).
    timed: Option<Timed>,
}

/// Receives each platform call's operation and round-trip time.
pub type Timed = Arc<dyn Fn(&'static str, std::time::Duration) + Send + Sync>;

impl HttpClient {
    pub fn new() -> Self {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // kube already links ring; one provider for every TLS client in the process.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = builder()
            .build()
            .expect("an HTTP client with the default TLS provider");
        HttpClient {
            http,
            with_roots: Arc::default(),
            in_flight: Arc::default(),
            timed: None,
        }
    }

    /// The same client, telling `timed` how long each call to a platform took.
    pub fn timed(self, timed: Timed) -> Self {
        HttpClient {
            timed: Some(timed),
            ..self
        }
    }

    /// Reports one call's round trip (sent to answer read, or failed).
    pub(super) fn took(&self, operation: &'static str, elapsed: std::time::Duration) {
        if let Some(timed) = &self.timed {
            timed(operation, elapsed);
        }
    }

    /// The client for an issuer: the shared one, or one that also trusts `ca_bundle` (base64
    /// of PEM certificates), built once per bundle.
    pub(super) fn for_roots(
        &self,
        ca_bundle: Option<&str>,
    ) -> Result<reqwest::Client, IssuerError> {
        let Some(bundle) = ca_bundle else {
            return Ok(self.http.clone());
        };
        let key = crate::token::sha256_hex(bundle.as_bytes());
        let mut clients = self.with_roots.lock().expect("client lock");
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let certificates = ca_certificates(bundle)?;
        let client = builder()
            .tls_certs_merge(certificates)
            .build()
            .map_err(|e| IssuerError::Unusable {
                reason: format!("caBundle: {e}"),
            })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// A slot for one call to the platform at `base`, waiting a moment for one to free up
    /// (a burst of rotations at one healthy platform queues briefly); None when every slot
    /// stays taken (a slow or hanging platform), and the pass is retried later.
    pub(super) async fn slot(&self, base: &str) -> Option<OwnedSemaphorePermit> {
        let slots = self.slots(base);
        let wait = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await;
        wait.ok()?.ok()
    }

    /// The slots of one platform: one per scheme, host and port, however its URL is spelled.
    pub(super) fn slots(&self, base: &str) -> Arc<Semaphore> {
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        let slots = in_flight
            .entry(platform_key(base))
            .or_insert_with(|| Arc::new(Semaphore::new(PER_PLATFORM_IN_FLIGHT)));
        slots.clone()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Every client's settings: no redirects, no proxy, DNS in Rust.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
        // A redirect would send the bearer token's request somewhere the issuer did not
        // name; a 3xx is an error like any other status.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // DNS in Rust (reads /etc/resolv.conf): the static binary in a distroless image
        // has no glibc NSS modules for getaddrinfo to load.
        .hickory_dns(true)
}

/// The certificates of a `caBundle`: base64 of one or more PEM certificates, at least one.
pub fn ca_certificates(bundle: &str) -> Result<Vec<reqwest::Certificate>, IssuerError> {
    use base64::Engine;
    let unusable = |why: &str| IssuerError::Unusable {
        reason: format!("caBundle {why}"),
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .map_err(|_| unusable("is not base64"))?;
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| unusable("holds no readable PEM certificate"))?;
    if ders.is_empty() {
        return Err(unusable("holds no PEM certificate"));
    }
    // Parsed as trust anchors now, so a broken certificate is said when the issuer is checked,
    // not at its first call.
    let mut anchors = rustls::RootCertStore::empty();
    for der in &ders {
        anchors
            .add(der.clone())
            .map_err(|_| unusable("holds a PEM block that is not an X.509 certificate"))?;
    }
    ders.into_iter()
        .map(|der| reqwest::Certificate::from_der(&der))
        .collect::<Result<_, _>>()
        .map_err(|_| unusable("holds a certificate the TLS client refused"))
}

/// What makes `spec` unusable without asking anyone, with the issuer's Ready reason:
/// `InsecureUrl` (see [`check_url`]) or `InvalidCaBundle` (see [`ca_certificates`]).
pub fn spec_problem(spec: &HttpIssuerSpec) -> Option<(&'static str, IssuerError)> {
    if let Err(e) = check_url(spec) {
        return Some(("InsecureUrl", e));
    }
    let bundle = spec.ca_bundle.as_deref()?;
    ca_certificates(bundle)
        .err()
        .map(|e| ("InvalidCaBundle", e))
}

/// Whether `spec` may be called at all: https, or http with `allowInsecureHttp` (the API
/// server checks this too; an older CRD might not).
pub fn check_url(spec: &HttpIssuerSpec) -> Result<(), IssuerError> {
    let url = reqwest::Url::parse(&spec.url).map_err(|_| IssuerError::Unusable {
        reason: "http.url is not a URL".into(),
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if spec.allow_insecure_http => Ok(()),
        "http" => Err(IssuerError::Unusable {
            reason: "http.url is http:// without allowInsecureHttp: true".into(),
        }),
        _ => Err(IssuerError::Unusable {
            reason: "http.url is neither https:// nor http://".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_platform_however_its_url_is_spelled() {
        let key = platform_key("https://Platform.example");
        assert_eq!(key, "https://platform.example:443");
        assert_eq!(platform_key("https://platform.example:443/tokens"), key);
        assert_ne!(platform_key("http://platform.example"), key);
        assert_eq!(
            platform_key("http://127.0.0.1:8090/"),
            "http://127.0.0.1:8090"
        );
    }

    fn spec(url: &str, allow_insecure_http: bool) -> HttpIssuerSpec {
        serde_json::from_value(serde_json::json!({
            "url": url, "allowInsecureHttp": allow_insecure_http,
            "adminTokenSecretRef": { "name": "a", "key": "t" }
        }))
        .unwrap()
    }

    #[test]
    fn plaintext_is_called_only_when_the_issuer_allows_it() {
        assert!(check_url(&spec("https://p.example", false)).is_ok());
        assert!(check_url(&spec("http://p.example", true)).is_ok());
        assert!(check_url(&spec("http://p.example", false)).is_err());
        assert!(check_url(&spec("ftp://p.example", true)).is_err());
    }

    #[test]
    fn a_ca_bundle_must_be_base64_of_at_least_one_pem_certificate() {
        use base64::Engine;
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (bundle, why) in [
            ("not base64!".to_string(), "is not base64"),
            (encode("hello"), "holds no"),
            (
                encode("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"),
                "PEM",
            ),
        ] {
            let error = ca_certificates(&bundle).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }
}
