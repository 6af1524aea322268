//! A TLS front for a plain HTTP server on loopback: it serves a certificate for 127.0.0.1
//! signed by a CA of its own and passes the bytes through, so a client trusts it only when
//! given that CA (a platform behind a private CA).

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TlsFront {
    /// `https://127.0.0.1:<port>`
    pub url: String,
    /// The CA that signed the front's certificate, PEM.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Starts a front for `backend` on a free loopback port, on the current runtime.
    pub async fn start(backend: SocketAddr) -> TlsFront {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA");
        let key = KeyPair::generate().expect("serving key");
        let serving = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("serving params")
            .signed_by(&key, &ca)
            .expect("serving certificate");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(serving.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS front");
        let url = format!("https://{}", listener.local_addr().expect("front addr"));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return; // a client that does not trust the CA hangs up here
                    };
                    if let Ok(mut plain) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            url,
            ca_pem: ca.pem(),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
