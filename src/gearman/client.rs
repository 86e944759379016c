//! A small async Gearman client over tokio (no actix): submits jobs and waits for their
//! answers. It backs `libra-worker submit`, the load generator and the tests; with a
//! window it keeps many jobs outstanding on one connection.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::codec::{CodecError, GearmanCodec};
use super::packet::Packet;

/// What can go wrong while talking to a job server as a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to job server {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("job server protocol error: {0}")]
    Codec(#[from] CodecError),
    #[error("job server closed the connection")]
    Closed,
    #[error("job server answered {0} where a job answer was expected")]
    Unexpected(&'static str),
    #[error("job server error {code}: {text}")]
    Server { code: String, text: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How a submitted job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Complete(Bytes),
    Fail,
    Exception(Bytes),
}

/// One finished job of a pipelined run: its submission sequence number and outcome.
#[derive(Debug)]
pub struct Finished {
    pub seq: u64,
    pub outcome: JobOutcome,
}

/// A client connection to one job server.
pub struct Client {
    framed: Framed<TcpStream, GearmanCodec>,
    next_seq: u64,
    awaiting_handle: VecDeque<u64>,
    running: HashMap<Bytes, u64>,
}

impl Client {
    /// Connects to `server` (`host:port`).
    pub async fn connect(server: &str) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(server)
            .await
            .map_err(|source| ClientError::Connect {
                server: server.to_string(),
                source,
            })?;
        // Small request/answer packets: never let Nagle hold one back.
        let _ = stream.set_nodelay(true);
        Ok(Client {
            framed: Framed::new(stream, GearmanCodec::client(u32::MAX)),
            next_seq: 0,
            awaiting_handle: VecDeque::new(),
            running: HashMap::new(),
        })
    }

    /// Submits one job and waits for its answer.
    pub async fn submit(
        &mut self,
        function: &str,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<JobOutcome, ClientError> {
        self.submit_unique(function, Bytes::new(), data, timeout)
            .await
    }

    /// Submits one job under the client's `unique` id (as the API server does) and waits
    /// for its answer. Jobs with equal non-empty ids are coalesced by the job server.
    pub async fn submit_unique(
        &mut self,
        function: &str,
        unique: impl Into<Bytes>,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<JobOutcome, ClientError> {
        let seq = self.queue(function, unique.into(), data.into()).await?;
        self.framed.flush().await?;
        let wait = async {
            loop {
                let done = self.next_finished().await?;
                if done.seq == seq {
                    return Ok(done.outcome);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Sends a SUBMIT_JOB without waiting; returns the job's sequence number, which the
    /// matching [`Finished`] carries.
    pub async fn send(
        &mut self,
        function: &str,
        data: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let seq = self.feed(function, data).await?;
        self.framed.flush().await?;
        Ok(seq)
    }

    /// Queues a SUBMIT_JOB in the write buffer; [`Client::flush`] sends what is queued.
    pub async fn feed(
        &mut self,
        function: &str,
        data: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        // An empty unique id: gearmand would otherwise coalesce equal ids.
        self.queue(function, Bytes::new(), data.into()).await
    }

    async fn queue(
        &mut self,
        function: &str,
        unique: Bytes,
        data: Bytes,
    ) -> Result<u64, ClientError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let packet = Packet::SubmitJob {
            function: Bytes::copy_from_slice(function.as_bytes()),
            unique,
            data,
        };
        self.framed.feed(packet).await?;
        self.awaiting_handle.push_back(seq);
        Ok(seq)
    }

    /// Sends everything queued by [`Client::feed`].
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.framed.flush().await?)
    }

    /// The sequence number the next job sent will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Jobs sent and not finished yet.
    pub fn outstanding(&self) -> usize {
        self.awaiting_handle.len() + self.running.len()
    }

    /// Waits for the next job to finish.
    pub async fn next_finished(&mut self) -> Result<Finished, ClientError> {
        loop {
            let packet = self.framed.next().await.ok_or(ClientError::Closed)??;
            let (handle, outcome) = match packet {
                Packet::JobCreated { handle } => {
                    // gearmand answers SUBMIT_JOBs of one connection in order.
                    let seq = self
                        .awaiting_handle
                        .pop_front()
                        .ok_or(ClientError::Unexpected("JOB_CREATED"))?;
                    self.running.insert(handle, seq);
                    continue;
                }
                Packet::WorkComplete { handle, data } => (handle, JobOutcome::Complete(data)),
                Packet::WorkFail { handle } => (handle, JobOutcome::Fail),
                Packet::WorkException { handle, data } => (handle, JobOutcome::Exception(data)),
                Packet::WorkData { .. }
                | Packet::WorkWarning { .. }
                | Packet::WorkStatus { .. } => continue,
                Packet::Error { code, text } => {
                    return Err(ClientError::Server {
                        code: String::from_utf8_lossy(&code).into_owned(),
                        text: String::from_utf8_lossy(&text).into_owned(),
                    })
                }
                other => return Err(ClientError::Unexpected(other.name())),
            };
            if let Some(seq) = self.running.remove(&handle) {
                return Ok(Finished { seq, outcome });
            }
        }
    }
}
