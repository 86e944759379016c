//! gearmand's text administration protocol (`workers`), so a test can see which functions
//! a job server has registered workers for - the proof that a worker did, or did not,
//! get through to it - without submitting a job that would wait forever.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The `workers` listing: one line per connection, `FD IP CLIENT-ID : FUNCTION ...`.
pub fn workers(port: u16) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gearmand");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"workers\n").expect("send workers");
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.expect("read workers listing");
        if line == "." {
            break;
        }
        lines.push(line);
    }
    lines
}

/// Whether some worker connection has registered `function`.
pub fn registered(port: u16, function: &str) -> bool {
    workers(port).iter().any(|l| {
        l.split_once(" : ")
            .is_some_and(|(_, fs)| fs.split_whitespace().any(|f| f == function))
    })
}
