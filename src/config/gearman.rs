//! The `[gearman]` section: job servers (`host:port`, IPv6 in brackets, `tls://`), TLS
//! files, reconnect and heartbeat timing.

use super::*;

pub(super) fn gearman_settings(f: &FileConfig) -> Result<GearmanSettings, ConfigError> {
    let g = &f.gearman;
    let tls = match (&g.ssl_ca, &g.ssl_cert, &g.ssl_key) {
        (None, None, None) => None,
        (ca, cert, key) => {
            let ca = ca.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid("gearman.ssl_ca", "required when ssl_cert or ssl_key is set")
            })?;
            if cert.is_some() != key.is_some() {
                return Err(invalid(
                    "gearman.ssl_cert",
                    "ssl_cert and ssl_key must be given together",
                ));
            }
            let files = TlsFiles {
                ca: readable("gearman.ssl_ca", ca)?,
                cert: cert
                    .as_deref()
                    .map(|c| readable("gearman.ssl_cert", c))
                    .transpose()?,
                key: key
                    .as_deref()
                    .map(|k| readable("gearman.ssl_key", k))
                    .transpose()?,
                verify_hostname: g.ssl_verify_hostname.unwrap_or(true),
            };
            Some(files)
        }
    };
    let default_list = vec![DEFAULT_SERVER.to_string()];
    let list = g.servers.as_ref().unwrap_or(&default_list);
    if list.is_empty() {
        return Err(invalid(
            "gearman.servers",
            "at least one job server is required",
        ));
    }
    let servers = list
        .iter()
        .map(|s| parse_server(s, tls.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.iter().any(|s| s.tls) && tls.is_none() {
        return Err(invalid(
            "gearman.ssl_ca",
            "a tls:// job server needs ssl_ca to verify it",
        ));
    }
    let keepalive = if g.keepalive.unwrap_or(false) {
        Some(Keepalive {
            idle: g.keepidle.map(Duration::from_secs),
            interval: g.keepintvl.map(Duration::from_secs),
            count: g.keepcnt,
        })
    } else {
        None
    };
    let reconnect_sleep = g.reconnect_sleep.unwrap_or(DEFAULT_RECONNECT_SLEEP);
    if reconnect_sleep == 0 {
        return Err(invalid(
            "gearman.reconnect_sleep",
            "must be at least 1 second",
        ));
    }
    let max_packet_bytes = g
        .max_packet_bytes
        .unwrap_or(crate::gearman::DEFAULT_MAX_PACKET_BYTES);
    if max_packet_bytes < 1024 {
        return Err(invalid("gearman.max_packet_bytes", "must be at least 1024"));
    }
    let prefetch = g.prefetch.unwrap_or(DEFAULT_PREFETCH);
    if !(1..=1024).contains(&prefetch) {
        return Err(invalid("gearman.prefetch", "must be between 1 and 1024"));
    }
    let heartbeat = g.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
    if heartbeat == 0 {
        return Err(invalid("gearman.heartbeat", "must be at least 1 second"));
    }
    Ok(GearmanSettings {
        servers,
        reconnect_sleep: Duration::from_secs(reconnect_sleep),
        poll: Duration::from_secs(g.poll.unwrap_or(1)),
        tls,
        keepalive,
        max_packet_bytes,
        prefetch,
        heartbeat: Duration::from_secs(heartbeat),
    })
}

/// Parses `host:port`, `[v6]:port`, `host` (default port), with an optional `tls://` or
/// `tcp://` scheme. Without a scheme a server uses TLS when `ssl_ca` is configured, as
/// the reference worker did.
pub fn parse_server(text: &str, tls_default: bool) -> Result<ServerAddr, ConfigError> {
    let bad = |why: &str| invalid("gearman.servers", format!("'{text}': {why}"));
    let (tls, rest) = if let Some(r) = text.strip_prefix("tls://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("tcp://") {
        (false, r)
    } else {
        (tls_default, text)
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad("port must be 1..65535"))?,
            None if after.is_empty() => DEFAULT_GEARMAN_PORT,
            None => return Err(bad("expected ':' after ']'")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("port must be 1..65535"))?,
            ),
            None => (rest.to_string(), DEFAULT_GEARMAN_PORT),
        }
    };
    if port == 0 {
        return Err(bad("port must be 1..65535"));
    }
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(bad("not a host name or address"));
    }
    Ok(ServerAddr { host, port, tls })
}

pub(super) fn readable(key: &'static str, path: &str) -> Result<PathBuf, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    Ok(PathBuf::from(path))
}
