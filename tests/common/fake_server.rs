//! A fake job server on a free loopback port that records every byte a worker sends it.
//! Hostile mode speaks just enough Gearman (reads CAN_DO and a grab, answers NO_JOB, waits
//! for PRE_SLEEP) and then misbehaves; relay mode forwards to a real server (e.g. a TLS
//! terminator) so a test can check what went over the wire. Stopped when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use libra_worker::gearman::codec::encode_packet;
use libra_worker::gearman::{GearmanCodec, Packet};
use tokio_util::codec::Decoder;

/// How a hostile job server misbehaves once the worker is waiting for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Bytes that are not Gearman at all.
    Garbage,
    /// A JOB_ASSIGN_UNIQ header claiming a body of 4 GiB - 1, and 64 KiB of it.
    HugeHeader,
    /// A JOB_ASSIGN_UNIQ header claiming 8 MiB, 4 MiB of body, then silence forever.
    Stall,
    /// A packet of a type no Gearman version defines.
    UnknownType,
    /// An ERROR packet.
    Error,
}

/// Half of `STALL_CLAIM` is sent before the stall.
pub const STALL_CLAIM: u32 = 8 * 1024 * 1024;

impl Hostile {
    /// The bytes sent after NO_JOB.
    pub fn bytes(self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Hostile::Garbage => {
                b.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                let mut x: u32 = 0x9e37_79b9;
                for _ in 0..4096 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b.push(x as u8);
                }
            }
            Hostile::HugeHeader => {
                header(&mut b, 31, u32::MAX);
                b.extend(std::iter::repeat_n(b'A', 64 * 1024));
            }
            Hostile::Stall => {
                header(&mut b, 31, STALL_CLAIM);
                b.extend_from_slice(b"H:fake:1\0fn\0u\0");
                let half = STALL_CLAIM as usize / 2;
                b.resize(12 + half, b'x');
            }
            Hostile::UnknownType => {
                header(&mut b, 0x00BA_DBAD, 16);
                b.extend_from_slice(&[0x55; 16]);
            }
            Hostile::Error => {
                let body = b"ERR_HOSTILE\0this job server is hostile";
                header(&mut b, 19, body.len() as u32);
                b.extend_from_slice(body);
            }
        }
        b
    }
}

fn header(b: &mut Vec<u8>, code: u32, len: u32) {
    b.extend_from_slice(b"\0RES");
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
}

/// One accepted connection, as seen from the fake server.
#[derive(Debug, Clone)]
pub struct Conn {
    pub accepted: Instant,
    /// Everything the worker sent, in order.
    pub received: Vec<u8>,
    /// The worker's packets, decoded (hostile mode only).
    pub packets: Vec<Packet>,
    /// When the connection ended (in hostile mode: when the worker closed it).
    pub closed: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Mode {
    Hostile(Hostile),
    Relay(u16),
}

pub struct FakeServer {
    pub port: u16,
    conns: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(50);

impl FakeServer {
    pub fn hostile(how: Hostile) -> FakeServer {
        Self::start(Mode::Hostile(how))
    }

    /// Forwards every connection to `127.0.0.1:<upstream>`, recording what the worker sent.
    pub fn relay(upstream: u16) -> FakeServer {
        Self::start(Mode::Relay(upstream))
    }

    fn start(mode: Mode) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let accept = thread::spawn(move || accept_loop(listener, mode, c, s));
        FakeServer {
            port,
            conns,
            stop,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.conns.lock().expect("lock").len()
    }

    /// Connections that have ended so far.
    pub fn closed(&self) -> usize {
        let conns = self.conns.lock().expect("lock");
        conns.iter().filter(|c| c.closed.is_some()).count()
    }

    pub fn connections(&self) -> Vec<Conn> {
        self.conns.lock().expect("lock").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    conns: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let index = {
                    let mut all = conns.lock().expect("lock");
                    all.push(Conn {
                        accepted: Instant::now(),
                        received: Vec::new(),
                        packets: Vec::new(),
                        closed: None,
                    });
                    all.len() - 1
                };
                let (c, s) = (conns.clone(), stop.clone());
                thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(POLL));
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                    let rec = Recorder {
                        conns: c,
                        index,
                        stop: s,
                    };
                    match mode {
                        Mode::Hostile(how) => hostile(stream, how, rec),
                        Mode::Relay(upstream) => relay(stream, upstream, rec),
                    }
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// One connection's view of the shared record.
struct Recorder {
    conns: Arc<Mutex<Vec<Conn>>>,
    index: usize,
    stop: Arc<AtomicBool>,
}

enum Got {
    Data(usize),
    Idle,
    Closed,
}

impl Recorder {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Reads once (at most `POLL`), recording what arrived.
    fn read(&self, stream: &mut TcpStream, buf: &mut [u8]) -> Got {
        match stream.read(buf) {
            Ok(0) => {
                self.with(|c| c.closed = Some(Instant::now()));
                Got::Closed
            }
            Ok(n) => {
                self.with(|c| c.received.extend_from_slice(&buf[..n]));
                Got::Data(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Got::Idle,
            Err(_) => {
                self.with(|c| c.closed = Some(Instant::now()));
                Got::Closed
            }
        }
    }

    fn with(&self, f: impl FnOnce(&mut Conn)) {
        let mut all = self.conns.lock().expect("lock");
        f(&mut all[self.index]);
    }
}

fn write_packet(stream: &mut TcpStream, p: &Packet) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    encode_packet(p, &mut buf).map_err(std::io::Error::other)?;
    stream.write_all(&buf)
}

fn hostile(mut stream: TcpStream, how: Hostile, rec: Recorder) {
    let mut codec = GearmanCodec::server(u32::MAX);
    let mut pending = BytesMut::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut can_do, mut answered, mut misbehaved) = (false, false, false);
    loop {
        if rec.stopped() {
            return;
        }
        match rec.read(&mut stream, &mut buf) {
            Got::Closed => return,
            Got::Idle => continue,
            Got::Data(n) => pending.put_slice(&buf[..n]),
        }
        // Once the worker has been sent the hostile bytes, it is only recorded.
        while !misbehaved {
            let packet = match codec.decode(&mut pending) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => return,
            };
            rec.with(|c| c.packets.push(packet.clone()));
            match packet {
                Packet::CanDo { .. } => can_do = true,
                Packet::GrabJobUniq | Packet::GrabJob if can_do && !answered => {
                    answered = true;
                    if write_packet(&mut stream, &Packet::NoJob).is_err() {
                        return;
                    }
                }
                Packet::PreSleep if answered => {
                    misbehaved = true;
                    // The worker may close before all of it is written: that is the point.
                    let _ = stream.write_all(&how.bytes());
                }
                _ => {}
            }
        }
        if misbehaved {
            pending.clear();
        }
    }
}

fn relay(mut client: TcpStream, upstream: u16, rec: Recorder) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = server.set_read_timeout(Some(POLL));
    let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let stop = rec.stop.clone();
    let back = thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while !stop.load(Ordering::SeqCst) {
            match server_r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if client_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = client_w.shutdown(Shutdown::Both);
    });
    let mut buf = vec![0u8; 16 * 1024];
    while !rec.stopped() {
        match rec.read(&mut client, &mut buf) {
            Got::Closed => break,
            Got::Idle => {
                if back.is_finished() {
                    break;
                }
            }
            Got::Data(n) => {
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = back.join();
    rec.with(|c| {
        c.closed.get_or_insert_with(Instant::now);
    });
}
