//! What the HAProxy on this machine can do. Asked once of the binary (`haproxy -vv`) when
//! the driver starts and again whenever the binary changes on disk (a package upgrade),
//! and kept as one small value: the renderer and the driver consult its flags, never a
//! version number. Every version threshold of the worker is in this file.
//!
//! Distributions ship 2.2 (Debian 11), 2.4 (Ubuntu 22.04, RHEL 9), 2.6 (Debian 12),
//! 2.8 (Ubuntu 24.04) and 3.0 (Debian 13). The thresholds are the versions the worker was
//! tested with where a feature appeared in between (see README, "HAProxy versions").

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::command::{self, CommandError};

/// The oldest HAProxy the worker drives.
pub const MINIMUM: Version = Version {
    major: 2,
    minor: 2,
    patch: 0,
};

/// How long `haproxy -vv` may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// A HAProxy release, as `haproxy -vv` names it on its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    const fn at_least(self, major: u32, minor: u32) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the renderer and the driver may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub version: Version,
    /// The version as the package spells it (`2.6.12-1+deb12u4`), for messages.
    pub release: String,
    /// `option idle-close-on-response` (2.6): asks an old process to answer a keep-alive
    /// client's next request (with `Connection: close`) before closing the connection.
    pub idle_close_on_response: bool,
    /// A reload loses no request of a keep-alive client: before 2.4 that is how an old
    /// process behaves by default, from 2.6 with `idle-close-on-response`. 2.4 and 2.5
    /// close idle connections at once when a reload retires the process, and a client
    /// that sends a request just then sees it fail unless it retries.
    pub keep_alive_safe_reloads: bool,
    /// The internal HTTP client's `httpclient.*` keywords (2.6), and with them a load of
    /// the whole system CA store at every start, which `httpclient.ssl.verify none` skips.
    pub httpclient: bool,
    /// `add server` / `del server` on the runtime API without experimental mode, with the
    /// options the worker gives its servers (2.6 tested; 2.5 has them with fewer options,
    /// 2.4 only in experimental mode). Without them nodes are added and removed by a
    /// reload, with health carried over in the server-state file.
    pub dynamic_servers: bool,
    /// A retiring process still lists its proxies in `show stat` (2.6 tested): what it
    /// served while a reload ran is billed. 2.2 drops a stopping process's proxies from
    /// the dump, so those bytes go unbilled there.
    pub retiring_counters: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("cannot ask HAProxy what it is: {0}")]
    Run(#[from] CommandError),
    #[error("`{binary} -vv` does not say which HAProxy it is; it printed: {first_line}")]
    Unrecognised { binary: String, first_line: String },
    #[error("{binary} is HAProxy {found}; libra-worker needs HAProxy {MINIMUM} or newer (the oldest a supported distribution ships)")]
    TooOld { binary: String, found: String },
}

impl Capabilities {
    /// Runs `<binary> -vv` and reads its answer.
    pub fn ask(binary: &Path) -> Result<Capabilities, CapabilityError> {
        let argv = [binary.display().to_string(), "-vv".to_string()];
        let out = command::run(&argv, ASK_TIMEOUT)?;
        Capabilities::from_vv(&binary.display().to_string(), &out.output)
    }

    /// Reads the output of `haproxy -vv`. `binary` is only for messages.
    pub fn from_vv(binary: &str, text: &str) -> Result<Capabilities, CapabilityError> {
        let first_line = text.lines().next().unwrap_or("").trim();
        let unrecognised = || CapabilityError::Unrecognised {
            binary: binary.to_string(),
            first_line: first_line.chars().take(200).collect(),
        };
        // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"; 2.2 and
        // older spell it "HA-Proxy".
        let release = first_line
            .strip_prefix("HAProxy version ")
            .or_else(|| first_line.strip_prefix("HA-Proxy version "))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(unrecognised)?;
        let version = parse_release(release).ok_or_else(unrecognised)?;
        if version < MINIMUM {
            return Err(CapabilityError::TooOld {
                binary: binary.to_string(),
                found: release.to_string(),
            });
        }
        Ok(Capabilities::of(version, release))
    }

    /// The capabilities of `version`.
    pub fn of(version: Version, release: &str) -> Capabilities {
        Capabilities {
            version,
            release: release.to_string(),
            idle_close_on_response: version.at_least(2, 6),
            keep_alive_safe_reloads: !version.at_least(2, 4) || version.at_least(2, 6),
            httpclient: version.at_least(2, 6),
            dynamic_servers: version.at_least(2, 6),
            retiring_counters: version.at_least(2, 6),
        }
    }

    /// One line per capability, for `check-config` and the start-up log.
    pub fn describe(&self) -> Vec<(&'static str, bool)> {
        vec![
            (
                "dynamic servers (nodes added and removed without a reload)",
                self.dynamic_servers,
            ),
            (
                "keep-alive requests survive reloads",
                self.keep_alive_safe_reloads,
            ),
            ("option idle-close-on-response", self.idle_close_on_response),
            (
                "httpclient keywords (no CA store load at each start)",
                self.httpclient,
            ),
            (
                "bytes served while a reload runs are billed",
                self.retiring_counters,
            ),
        ]
    }
}

/// `2.6.12-1+deb12u4`, `3.0.11`, `2.9-dev3`, `3.1.0+git`: major, minor and (if any) patch.
fn parse_release(release: &str) -> Option<Version> {
    let numeric: &str = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(Version {
        major,
        minor,
        patch,
    })
}

/// What identifies the binary's contents without reading it: when this changes (a
/// package upgrade replaces the file), the capabilities are asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl BinaryStamp {
    /// None when the binary cannot be looked at; the caller then keeps what it knows.
    pub fn of(binary: &Path) -> Option<BinaryStamp> {
        let meta = std::fs::metadata(binary).ok()?;
        Some(BinaryStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VV_2_2: &str = include_str!("../../../tests/fixtures/haproxy-vv/2.2.9.txt");
    const VV_2_6: &str = include_str!("../../../tests/fixtures/haproxy-vv/2.6.12.txt");
    const VV_3_0: &str = include_str!("../../../tests/fixtures/haproxy-vv/3.0.11.txt");

    #[test]
    fn the_shipped_versions_are_read_from_their_own_output() {
        let caps = |text| Capabilities::from_vv("haproxy", text).unwrap();
        let v22 = caps(VV_2_2);
        assert_eq!(
            (v22.version.to_string(), v22.release.as_str()),
            ("2.2.9".into(), "2.2.9-2+deb11u7")
        );
        assert!(!v22.idle_close_on_response && !v22.httpclient && !v22.dynamic_servers);
        let v26 = caps(VV_2_6);
        assert_eq!(v26.version.to_string(), "2.6.12");
        assert!(v26.idle_close_on_response && v26.httpclient && v26.dynamic_servers);
        let v30 = caps(VV_3_0);
        assert_eq!(v30.version.to_string(), "3.0.11");
        assert!(v30.idle_close_on_response && v30.httpclient && v30.dynamic_servers);
    }

    #[test]
    fn older_than_the_minimum_is_refused_naming_both() {
        let text = "HA-Proxy version 2.0.33-1 2023/01/01 - https://haproxy.org/\n";
        let err = Capabilities::from_vv("/usr/sbin/haproxy", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HAProxy 2.0.33-1"), "{err}");
        assert!(err.contains("HAProxy 2.2.0 or newer"), "{err}");
        let text = "HA-Proxy version 1.8.19 2019/02/11\n";
        assert!(matches!(
            Capabilities::from_vv("h", text),
            Err(CapabilityError::TooOld { .. })
        ));
    }

    #[test]
    fn releases_of_every_shape() {
        let v = |s| parse_release(s).map(|v| v.to_string());
        assert_eq!(v("2.6.12-1+deb12u4").as_deref(), Some("2.6.12"));
        assert_eq!(v("2.9-dev3").as_deref(), Some("2.9.0"));
        assert_eq!(v("3.1.0+git").as_deref(), Some("3.1.0"));
        assert_eq!(v("10.0.1").as_deref(), Some("10.0.1"));
        assert_eq!(v("dev"), None);
        assert_eq!(v("2"), None);
    }

    #[test]
    fn thresholds_sit_where_the_features_appeared() {
        let caps = |major, minor| {
            Capabilities::of(
                Version {
                    major,
                    minor,
                    patch: 0,
                },
                "x",
            )
        };
        assert!(!caps(2, 5).idle_close_on_response && caps(2, 6).idle_close_on_response);
        let safe = |major, minor| caps(major, minor).keep_alive_safe_reloads;
        assert!(safe(2, 2) && safe(2, 3) && !safe(2, 4) && !safe(2, 5) && safe(2, 6));
        assert!(!caps(2, 4).dynamic_servers && caps(2, 6).dynamic_servers);
        assert!(caps(3, 0).httpclient && caps(4, 0).dynamic_servers);
    }

    #[test]
    fn anything_else_is_unrecognised_with_what_it_printed() {
        let err = Capabilities::from_vv("/bin/true", "nginx version: 1.2\n").unwrap_err();
        assert!(err.to_string().contains("nginx version: 1.2"), "{err}");
        assert!(matches!(
            Capabilities::from_vv("x", ""),
            Err(CapabilityError::Unrecognised { .. })
        ));
    }

    #[test]
    fn a_real_binary_is_asked() {
        let binary = crate::config::resolve_program(Path::new("haproxy"));
        let caps = Capabilities::ask(&binary).unwrap();
        assert!(caps.version >= MINIMUM, "{caps:?}");
        let stamp = BinaryStamp::of(&binary);
        assert!(stamp.is_some() && stamp == BinaryStamp::of(&binary));
    }
}
