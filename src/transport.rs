//! Opening a connection to a job server: TCP with TCP_NODELAY and the configured
//! keepalive, then TLS (rustls) when the server is a TLS one, verifying it against
//! `ssl_ca` and presenting `ssl_cert`/`ssl_key` when given. No actix in here.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
pub use tokio_rustls::TlsConnector;

use crate::config::{Keepalive, ServerAddr, TlsFiles};

/// A byte stream to a job server, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// How long connecting (TCP plus TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("{key}: {problem}")]
    TlsFiles { key: &'static str, problem: String },
}

/// Builds the TLS client configuration from the configured files (start-up check).
pub fn tls_connector(files: &TlsFiles) -> Result<TlsConnector, TransportError> {
    let bad = |key: &'static str, problem: String| TransportError::TlsFiles { key, problem };
    let mut roots = RootCertStore::empty();
    for cert in read_certs("gearman.ssl_ca", &files.ca)? {
        roots
            .add(cert)
            .map_err(|e| bad("gearman.ssl_ca", format!("{}: {e}", files.ca.display())))?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("gearman.ssl_cert", cert)?;
            let pem = std::fs::read(key)
                .map_err(|e| bad("gearman.ssl_key", format!("{}: {e}", key.display())))?;
            let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| bad("gearman.ssl_key", format!("{}: {e}", key.display())))?
                .ok_or_else(|| {
                    bad(
                        "gearman.ssl_key",
                        format!("{}: no private key found", key.display()),
                    )
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad("gearman.ssl_cert", format!("{}: {e}", cert.display())))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn read_certs(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = std::fs::read(path).map_err(|e| TransportError::TlsFiles {
        key,
        problem: format!("{}: {e}", path.display()),
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::TlsFiles {
            key,
            problem: format!("{}: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TransportError::TlsFiles {
            key,
            problem: format!("{}: no PEM certificate found", path.display()),
        });
    }
    Ok(certs)
}

/// Connects to `server`, applying socket options and TLS as configured.
pub async fn connect(
    server: &ServerAddr,
    tls: Option<&TlsConnector>,
    keepalive: Option<Keepalive>,
) -> Result<BoxStream, TransportError> {
    let work = async {
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(TransportError::Connect)?;
        // Answers are small; never let Nagle hold one back for a delayed ACK.
        tcp.set_nodelay(true).map_err(TransportError::Connect)?;
        if let Some(k) = keepalive {
            let mut params = socket2::TcpKeepalive::new();
            if let Some(idle) = k.idle {
                params = params.with_time(idle);
            }
            if let Some(interval) = k.interval {
                params = params.with_interval(interval);
            }
            if let Some(count) = k.count {
                params = params.with_retries(count);
            }
            socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&params)
                .map_err(TransportError::Connect)?;
        }
        match (server.tls, tls) {
            (true, Some(connector)) => {
                let name = ServerName::try_from(server.host.clone())
                    .map_err(|_| TransportError::ServerName(server.host.clone()))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(TransportError::Handshake)?;
                Ok(Box::new(stream) as BoxStream)
            }
            (true, None) => Err(TransportError::TlsFiles {
                key: "gearman.ssl_ca",
                problem: "a TLS job server needs ssl_ca".to_string(),
            }),
            (false, _) => Ok(Box::new(tcp) as BoxStream),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| TransportError::Timeout(CONNECT_TIMEOUT))?
}
