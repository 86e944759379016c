//! Opening a connection to a job server: TCP with TCP_NODELAY and the configured
//! keepalive, then TLS when the server is a TLS one: the server's chain verified against
//! `ssl_ca` only, `ssl_cert`/`ssl_key` presented when given, the server's name checked
//! when `gearman.ssl_verify_hostname` says so. No actix in here.
//!
//! TLS is OpenSSL (Debian's libssl, linked dynamically), not rustls. Sites run the
//! certificates the reference (Python `ssl`, i.e. OpenSSL) accepted, and those are often
//! what `openssl x509 -req` makes without an extension file: X.509 version 1, a CN and no
//! subjectAltName. webpki, rustls' verifier, refuses a v1 certificate anywhere in a chain
//! (our own client certificate included) and no well-kept pure-Rust verifier accepts
//! one; OpenSSL verifies the same certificates the same way the reference did, with no
//! certificate handling of our own. The name check is OpenSSL's too (X509_VERIFY_PARAM):
//! an IP address entry must be in an IP subjectAltName, a host name in a DNS
//! subjectAltName or, when the certificate has none, in its CN.

use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509VerifyResult, X509};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

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
    /// The server's certificate was refused: OpenSSL's verify error, e.g. "unable to get
    /// local issuer certificate" or "hostname mismatch".
    #[error("TLS handshake failed: certificate verify failed: {0}")]
    Verify(String),
    /// Any other handshake failure (an alert from the server, the connection closed).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("TLS setup for '{host}' failed: {problem}")]
    Setup { host: String, problem: String },
    #[error("{key}: {problem}")]
    TlsFiles { key: &'static str, problem: String },
}

/// The TLS client side, built once at start and shared by every connection.
#[derive(Clone)]
pub struct TlsConnector {
    context: SslContext,
    verify_hostname: bool,
}

impl TlsConnector {
    /// A session for `host`: SNI for a host name, and the name check when configured.
    fn session(&self, host: &str) -> Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        let ip = host.parse::<IpAddr>().ok();
        // SNI carries names only (RFC 6066); it lets a terminator pick its certificate.
        if ip.is_none() {
            ssl.set_hostname(host)?;
        }
        if self.verify_hostname {
            let param = ssl.param_mut();
            // As OpenSSL's own SslConnector does: "*" only as a whole left-most label.
            param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Some(ip) => param.set_ip(ip)?,
                None => param.set_host(host)?,
            }
        }
        Ok(ssl)
    }
}

/// Builds the TLS client context from the configured files (start-up check): an
/// unreadable or invalid file, or a key that does not match the certificate, is an
/// error naming the key.
pub fn tls_connector(files: &TlsFiles) -> Result<TlsConnector, TransportError> {
    let setup = |key: &'static str, path: &Path, e: ErrorStack| TransportError::TlsFiles {
        key,
        problem: format!("{}: {}", path.display(), reasons(&e)),
    };
    // A bare context, not `SslConnector::builder`: that one also trusts the system's CA
    // store, and the reference trusted `ssl_ca` alone.
    let mut builder = SslContext::builder(SslMethod::tls_client())
        .map_err(|e| setup("gearman.ssl_ca", &files.ca, e))?;
    builder.set_verify(SslVerifyMode::PEER);
    // The floor rustls had; Debian's OpenSSL refuses older versions by default anyway.
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| setup("gearman.ssl_ca", &files.ca, e))?;
    for cert in read_certs("gearman.ssl_ca", &files.ca)? {
        builder
            .cert_store_mut()
            .add_cert(cert)
            .map_err(|e| setup("gearman.ssl_ca", &files.ca, e))?;
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        let mut chain = read_certs("gearman.ssl_cert", cert)?.into_iter();
        if let Some(leaf) = chain.next() {
            builder
                .set_certificate(&leaf)
                .map_err(|e| setup("gearman.ssl_cert", cert, e))?;
        }
        for intermediate in chain {
            builder
                .add_extra_chain_cert(intermediate)
                .map_err(|e| setup("gearman.ssl_cert", cert, e))?;
        }
        let pem = std::fs::read(key).map_err(|e| TransportError::TlsFiles {
            key: "gearman.ssl_key",
            problem: format!("{}: {e}", key.display()),
        })?;
        // An empty passphrase instead of OpenSSL's default prompt on the terminal: an
        // encrypted key fails at start rather than waiting for input nobody gives.
        let pkey = PKey::private_key_from_pem_callback(&pem, |_| Ok(0)).map_err(|e| {
            TransportError::TlsFiles {
                key: "gearman.ssl_key",
                problem: format!(
                    "{}: no usable PEM private key (an encrypted key is not supported): {}",
                    key.display(),
                    reasons(&e)
                ),
            }
        })?;
        let mismatch = |e: ErrorStack| TransportError::TlsFiles {
            key: "gearman.ssl_key",
            problem: format!(
                "{} does not match the certificate in {}: {}",
                key.display(),
                cert.display(),
                reasons(&e)
            ),
        };
        // OpenSSL compares the key with the certificate already set here, and again below.
        builder.set_private_key(&pkey).map_err(mismatch)?;
        builder.check_private_key().map_err(mismatch)?;
    }
    Ok(TlsConnector {
        context: builder.build(),
        verify_hostname: files.verify_hostname,
    })
}

/// The PEM certificates in `path`; none is an error.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<X509>, TransportError> {
    let bad = |problem: String| TransportError::TlsFiles {
        key,
        problem: format!("{}: {problem}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| bad(reasons(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate found".to_string()));
    }
    Ok(certs)
}

/// OpenSSL's reasons, without the codes, source files and line numbers of its full text.
fn reasons(stack: &ErrorStack) -> String {
    let parts: Vec<String> = stack
        .errors()
        .iter()
        .map(|e| match (e.reason(), e.data()) {
            (Some(r), Some(d)) => format!("{r} ({d})"),
            (Some(r), None) => r.to_string(),
            _ => e.to_string(),
        })
        .collect();
    if parts.is_empty() {
        "unknown OpenSSL error".to_string()
    } else {
        parts.join("; ")
    }
}

/// Why a handshake failed: the certificate verify error when there is one, else the
/// alert or I/O error.
fn handshake_error(ssl: &openssl::ssl::SslRef, e: &openssl::ssl::Error) -> TransportError {
    let verify = ssl.verify_result();
    if verify != X509VerifyResult::OK {
        return TransportError::Verify(verify.error_string().to_string());
    }
    match (e.ssl_error(), e.io_error()) {
        (Some(stack), _) => TransportError::Handshake(reasons(stack)),
        (None, Some(io)) => TransportError::Handshake(io.to_string()),
        _ => TransportError::Handshake(e.to_string()),
    }
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
                let setup = |e: ErrorStack| TransportError::Setup {
                    host: server.host.clone(),
                    problem: reasons(&e),
                };
                let ssl = connector.session(&server.host).map_err(setup)?;
                let mut stream = SslStream::new(ssl, tcp).map_err(setup)?;
                if let Err(e) = Pin::new(&mut stream).connect().await {
                    return Err(handshake_error(stream.ssl(), &e));
                }
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
