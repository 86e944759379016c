//! TLS for the integration tests: a throw-away PKI made with the `openssl` CLI (a CA, a
//! server and a client certificate, the X.509 v1 CN-only kinds that `openssl x509 -req`
//! makes without an extension file, a server certificate for another name, and a rogue
//! CA with its own server certificate), and a real TLS terminator - HAProxy in TCP mode demanding a client certificate - in front of
//! a real gearmand, as sites deploy it (Debian's gearmand does not negotiate TLS itself).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, port_open, wait_until};

/// Certificates and keys in a temporary directory, valid for `127.0.0.1` and `localhost`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA the worker trusts (`ssl_ca`) and the terminator checks clients against.
    pub ca: PathBuf,
    /// Server certificate and key in one PEM, signed by `ca` (HAProxy's `crt`).
    pub server_pem: PathBuf,
    /// Client certificate and key, signed by `ca` (`ssl_cert`, `ssl_key`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Server certificate and key signed by a CA the worker does not trust.
    pub rogue_server_pem: PathBuf,
    /// X.509 v1 server certificate (no extensions: CN `localhost` only, no
    /// subjectAltName) and key, signed by `ca`.
    pub v1_server_pem: PathBuf,
    /// X.509 v1 client certificate (CN only) and key, signed by `ca`.
    pub v1_client_cert: PathBuf,
    pub v1_client_key: PathBuf,
    /// v3 server certificate and key signed by `ca` for `gearman.example` (subjectAltName
    /// and CN) only: not for `127.0.0.1` nor `localhost`, the names the tests dial.
    pub other_name_server_pem: PathBuf,
}

/// The name in `v1_server_pem` and `other_name_server_pem`.
pub const V1_SERVER_CN: &str = "localhost";
pub const OTHER_SERVER_NAME: &str = "gearman.example";

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[other-name]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:gearman.example
";

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        new_ca(d, "ca", "libra-worker test CA");
        new_leaf(d, "server", "ca", "server", "127.0.0.1");
        new_leaf(d, "client", "ca", "client", "libra-worker test client");
        new_ca(d, "rogue-ca", "someone else's CA");
        new_leaf(d, "rogue-server", "rogue-ca", "server", "127.0.0.1");
        new_v1_leaf(d, "v1-server", "ca", V1_SERVER_CN);
        new_v1_leaf(d, "v1-client", "ca", "libra-worker v1 client");
        new_leaf(d, "other-name", "ca", "other-name", OTHER_SERVER_NAME);
        Pki {
            v1_server_pem: d.join("v1-server.bundle.pem"),
            v1_client_cert: d.join("v1-client.pem"),
            v1_client_key: d.join("v1-client.key"),
            other_name_server_pem: d.join("other-name.bundle.pem"),
            ca: d.join("ca.pem"),
            server_pem: d.join("server.bundle.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            rogue_server_pem: d.join("rogue-server.bundle.pem"),
            dir,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    openssl_output(dir, args);
}

/// Runs the `openssl` CLI in `dir` and returns what it printed.
fn openssl_output(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn new_ca(dir: &Path, name: &str, cn: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    let mut args = vec![
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
    ];
    args.extend(EC);
    args.extend([
        "-nodes", "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj,
    ]);
    openssl(dir, &args);
}

/// A key and a certificate signed by CA `ca`, plus `<name>.bundle.pem` (cert then key).
fn new_leaf(dir: &Path, name: &str, ca: &str, extensions: &str, cn: &str) {
    sign_leaf(dir, name, ca, Some(extensions), cn);
}

/// As operators have them: `openssl x509 -req` without `-extfile` signs an X.509 v1
/// certificate with the CSR's subject (CN only) and no extension at all.
fn new_v1_leaf(dir: &Path, name: &str, ca: &str, cn: &str) {
    sign_leaf(dir, name, ca, None, cn);
    let text = openssl_output(
        dir,
        &["x509", "-noout", "-text", "-in", &format!("{name}.pem")],
    );
    assert!(
        text.contains("Version: 1 (0x0)") && !text.contains("X509v3"),
        "openssl x509 -req no longer makes a v1 certificate without -extfile:\n{text}"
    );
}

fn sign_leaf(dir: &Path, name: &str, ca: &str, extensions: Option<&str>, cn: &str) {
    let (key, csr, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
    args.extend(EC);
    args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let serial = format!("{}", rand::random::<u32>());
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-set_serial",
        &serial,
        "-days",
        "2",
        "-out",
        &pem,
    ];
    if let Some(ext) = extensions {
        args.extend(["-extfile", "openssl.cnf", "-extensions", ext]);
    }
    openssl(dir, &args);
    let mut bundle = std::fs::read(dir.join(&pem)).expect("read cert");
    bundle.extend(std::fs::read(dir.join(&key)).expect("read key"));
    std::fs::write(dir.join(format!("{name}.bundle.pem")), bundle).expect("write bundle");
}

/// HAProxy in TCP mode terminating TLS on a free loopback port and passing the plain
/// stream to `127.0.0.1:<backend>`. Killed when dropped.
pub struct TlsTerminator {
    pub port: u16,
    pub log_path: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl TlsTerminator {
    /// Presents `server_pem` and requires a client certificate signed by `client_ca`.
    pub fn haproxy(server_pem: &Path, client_ca: &Path, backend: u16) -> TlsTerminator {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = format!(
            "global\n    maxconn 256\n    nbthread 1\n    log stderr format raw local0 info\n\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 5s\n\
             \x20   timeout client 1h\n    timeout server 1h\n\n\
             frontend tls_in\n    bind 127.0.0.1:{port} ssl crt {crt} ca-file {ca} verify required\n\
             \x20   default_backend gearmand\n\n\
             backend gearmand\n    server g 127.0.0.1:{backend}\n",
            crt = server_pem.display(),
            ca = client_ca.display(),
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
        let log_path = dir.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path).expect("haproxy log");
        let child = Command::new(libra_worker::config::default_haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        let mut t = TlsTerminator {
            port,
            log_path,
            child: Some(child),
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(10), || port_open(port));
        assert!(up, "haproxy did not listen on {port}:\n{}", t.log());
        if let Some(Ok(Some(status))) = t.child.as_mut().map(|c| c.try_wait()) {
            panic!("haproxy exited ({status}):\n{}", t.log());
        }
        t
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `tls://127.0.0.1:<port>`, as the worker's server list writes it.
    pub fn server_entry(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- haproxy log ----\n{}", self.log());
        }
    }
}
