//! Log lines for systemd's journal: the journal stamps every line it reads from standard
//! error with its own time and takes a `<N>` prefix as the line's syslog priority, so a
//! line here is `<6>message, key: value, ...` with no timestamp of ours (doubled stamps
//! otherwise) and no level word (the priority says it, and `journalctl -p` filters on it).
//!
//! Written here rather than taken from a crate: the journald crates for slog talk to the
//! journal's socket through libsystemd, which the appliance may not have and which would
//! bypass the stream systemd already gives the service; this is thirty lines of format.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::Mutex;

use slog::{Drain, Level, OwnedKVList, Record, Serializer, KV};

/// systemd's stream of this process's standard error (`JOURNAL_STREAM=<dev>:<inode>`),
/// checked against what standard error is now: a shell started from the service, or a
/// redirect, must not get `<6>` prefixes.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsRawFd;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) {
        Ok(st) => dev == st.st_dev.to_string() && ino == st.st_ino.to_string(),
        Err(_) => false,
    }
}

/// The syslog priority of a slog level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Critical => 2,
        Level::Error => 3,
        Level::Warning => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Writes one journal line per record.
pub struct JournalDrain<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JournalDrain<W> {
    pub fn new(out: W) -> Self {
        JournalDrain {
            out: Mutex::new(out),
        }
    }
}

/// The record's message and key-value pairs as one line.
pub fn line(record: &Record, values: &OwnedKVList) -> String {
    let mut text = format!("<{}>{}", priority(record.level()), record.msg());
    let mut pairs = Pairs(&mut text);
    // The record's own pairs first, then the logger's (`driver`, ...), as slog-term does.
    let _ = record.kv().serialize(record, &mut pairs);
    let _ = values.serialize(record, &mut pairs);
    // One record, one journal entry: a newline inside a value would split it.
    let mut text = text.replace('\n', "\\n");
    text.push('\n');
    text
}

struct Pairs<'a>(&'a mut String);

impl Serializer for Pairs<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, ", {key}: {val}");
        Ok(())
    }
}

impl<W: Write + Send> Drain for JournalDrain<W> {
    type Ok = ();
    type Err = std::io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), std::io::Error> {
        let text = line(record, values);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{info, o, warn, Logger};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_the_priority_and_no_timestamp() {
        let buf = Shared::default();
        let log = Logger::root(
            JournalDrain::new(buf.clone()).fuse(),
            o!("driver" => "haproxy"),
        );
        info!(log, "libra-worker started"; "function" => "lb-1");
        warn!(log, "two\nlines"; "n" => 2);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<6>libra-worker started, function: lb-1, driver: haproxy",
                "<4>two\\nlines, n: 2, driver: haproxy"
            ]
        );
    }

    #[test]
    fn an_unrelated_journal_stream_is_not_ours() {
        // The variable inherited from a service by a shell whose stderr is elsewhere.
        std::env::set_var("JOURNAL_STREAM", "1:1");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
