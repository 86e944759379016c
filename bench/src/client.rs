//! A blocking, one-job-at-a-time Gearman client for the bench sections that time single
//! jobs (UPDATE latency, the STATS set-up, the UPDATE storms of the zero-drop check): one
//! connection kept open, each job timed from the SUBMIT_JOB write to its WORK_COMPLETE,
//! the answer parsed as JSON. The pipelined generator (`load`) is for throughput.

use std::time::{Duration, Instant};

use bytes::Bytes;
use libra_worker::gearman::client::{Client, ClientError, JobOutcome};
use serde_json::Value;

/// Why a job got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot start the job client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Connect(ClientError),
    #[error("submitting the job failed: {0}")]
    Submit(ClientError),
    #[error("the worker answered WORK_FAIL")]
    WorkFail,
    #[error("the worker answered WORK_EXCEPTION: {0}")]
    WorkException(String),
    #[error("the answer is not JSON ({source}): {text}")]
    Answer {
        text: String,
        source: serde_json::Error,
    },
}

/// One answered job.
#[derive(Debug, Clone)]
pub struct Answered {
    /// Submit to WORK_COMPLETE, at the client.
    pub took: Duration,
    pub answer: Value,
}

impl Answered {
    /// Whether the answer says `"hpcs_response": "PASS"`.
    pub fn passed(&self) -> bool {
        self.answer.get("hpcs_response").and_then(Value::as_str)
            == Some(libra_worker::jobs::response::PASS)
    }

    /// The answer's `hpcs_error`, or a short form of the answer when it has none.
    pub fn error_text(&self) -> String {
        match self.answer.get("hpcs_error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => {
                let text = self.answer.to_string();
                text.chars().take(200).collect()
            }
        }
    }
}

/// A connection to a job server that submits one job at a time (window 1).
pub struct JobClient {
    rt: tokio::runtime::Runtime,
    client: Client,
    function: String,
    timeout: Duration,
}

impl JobClient {
    /// Connects to `server` for jobs of `function`, each bounded by `timeout`.
    pub fn connect(server: &str, function: &str, timeout: Duration) -> Result<Self, JobError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(JobError::Runtime)?;
        let client = rt
            .block_on(Client::connect(server))
            .map_err(JobError::Connect)?;
        Ok(JobClient {
            rt,
            client,
            function: function.to_string(),
            timeout,
        })
    }

    /// Submits `body`, waits for its answer and times it.
    pub fn submit(&mut self, body: &Bytes) -> Result<Answered, JobError> {
        let started = Instant::now();
        let outcome = self
            .rt
            .block_on(
                self.client
                    .submit(&self.function, body.clone(), self.timeout),
            )
            .map_err(JobError::Submit)?;
        let took = started.elapsed();
        match outcome {
            JobOutcome::Complete(data) => {
                let answer = serde_json::from_slice(&data).map_err(|source| JobError::Answer {
                    text: String::from_utf8_lossy(&data).chars().take(200).collect(),
                    source,
                })?;
                Ok(Answered { took, answer })
            }
            JobOutcome::Fail => Err(JobError::WorkFail),
            JobOutcome::Exception(d) => {
                Err(JobError::WorkException(String::from_utf8_lossy(&d).into()))
            }
        }
    }

    /// As `submit`, but an answer that is not PASS is an error carrying its `hpcs_error`.
    pub fn submit_pass(&mut self, body: &Bytes) -> Result<Answered, String> {
        let a = self.submit(body).map_err(|e| e.to_string())?;
        if a.passed() {
            Ok(a)
        } else {
            Err(format!("answered FAIL: {}", a.error_text()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pass_and_error_text_are_read_from_the_answer() {
        let ok = Answered {
            took: Duration::ZERO,
            answer: json!({"hpcs_response": "PASS"}),
        };
        assert!(ok.passed());
        let bad = Answered {
            took: Duration::ZERO,
            answer: json!({"hpcs_response": "FAIL", "hpcs_error": "no"}),
        };
        assert!(!bad.passed());
        assert_eq!(bad.error_text(), "no");
        let odd = Answered {
            took: Duration::ZERO,
            answer: json!({"x": 1}),
        };
        assert_eq!(odd.error_text(), r#"{"x":1}"#);
    }

    #[test]
    fn a_server_nobody_listens_on_is_a_connect_error() {
        let port = crate::procs::free_port().unwrap();
        let r = JobClient::connect(&format!("127.0.0.1:{port}"), "f", Duration::from_secs(1));
        assert!(matches!(r, Err(JobError::Connect(_))));
    }
}
