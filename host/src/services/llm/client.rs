//! The HTTP client: one request with retries, backoff and `Retry-After`,
//! a bounded body, the key only in the `Authorization` header, and the
//! provider's errors scrubbed and typed.

use std::fmt;
use std::time::{Duration, Instant};

use super::protocol::{parse_completion, Completion, BAD_TOOL_CALLS};
use super::LlmService;

/// A secret that never prints.
#[derive(Clone)]
pub(super) struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl LlmService {
    /// Send `body` with retries; see the module docs.
    pub(super) async fn send(
        &self,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> std::result::Result<(Completion, u32), Failure> {
        let Some(url) = self.config.url() else {
            return Err(Failure::unavailable("no base_url is configured on this host", false, 0));
        };
        if let (Some(name), None) = (&self.config.api_key_env, &self.key) {
            return Err(Failure::unavailable(
                format!("the host's API key variable {name} is not set; ask the operator"),
                false,
                0,
            ));
        }
        let retries = self.config.retries;
        let mut last = String::new();
        let mut maybe_billed = false;
        let mut attempts = 0;
        for attempt in 0..=retries {
            attempts += 1;
            let mut req = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.config.timeout.0)
                .body(body.to_vec());
            if let Some(Secret(k)) = &self.key {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {k}"));
            }
            let mut retry_after = None;
            match req.send().await {
                Err(e) => {
                    maybe_billed |= e.is_timeout();
                    last = self.scrub(&describe(&e));
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return match read_bounded(resp, self.config.max_response_bytes.bytes()).await {
                            Ok(bytes) => match parse_completion(&bytes) {
                                Ok(c) => Ok((c, attempts)),
                                Err(why) if why.starts_with(BAD_TOOL_CALLS) => Err(Failure {
                                    kind: FailKind::BadResponse,
                                    message: format!("the provider's answer breaks the protocol: {}", self.scrub(&why)),
                                    maybe_billed: true,
                                    attempts,
                                }),
                                Err(why) => Err(Failure::unavailable(
                                    format!("the provider's response is malformed: {}", self.scrub(&why)),
                                    true,
                                    attempts,
                                )),
                            },
                            Err(ReadError::TooLarge(n)) => Err(Failure::unavailable(
                                format!("the provider's response is over {n} bytes; it was cut off"),
                                true,
                                attempts,
                            )),
                            Err(ReadError::Io(why)) => Err(Failure::unavailable(
                                format!("reading the provider's response failed: {}", self.scrub(&why)),
                                true,
                                attempts,
                            )),
                        };
                    }
                    if status.as_u16() == 429 || status.is_server_error() {
                        retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let text = error_text(resp, 4096).await;
                        last = format!("the provider answered {status}: {}", self.scrub(&text));
                    } else {
                        let text = error_text(resp, 4096).await;
                        let msg = format!("the provider refused the request with {status}: {}", self.scrub(&text));
                        return Err(if matches!(status.as_u16(), 400 | 413 | 422) {
                            Failure { kind: FailKind::InvalidRequest, message: msg, maybe_billed: false, attempts }
                        } else {
                            Failure::unavailable(msg, false, attempts)
                        });
                    }
                }
            }
            if attempt == retries {
                break;
            }
            let exp = self.config.backoff.0.saturating_mul(1u32 << attempt.min(16));
            let wait = retry_after.unwrap_or(exp).min(self.config.max_backoff.0);
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                last = format!("{last}; no retry: the call's deadline would pass");
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(Failure::unavailable(format!("after {attempts} attempt(s): {last}"), maybe_billed, attempts))
    }
}

pub(super) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&format!(": {s}"));
        src = s.source();
    }
    text
}

pub(super) async fn error_text(mut resp: reqwest::Response, cap: usize) -> String {
    let mut out = Vec::new();
    while out.len() < cap {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(cap - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) enum ReadError {
    TooLarge(u64),
    Io(String),
}

pub(super) async fn read_bounded(mut resp: reqwest::Response, cap: u64) -> std::result::Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(ReadError::TooLarge(cap));
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() as u64 + c.len() as u64 > cap {
                    return Err(ReadError::TooLarge(cap));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ReadError::Io(describe(&e))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailKind {
    Unavailable,
    InvalidRequest,
    BadResponse,
}

#[derive(Debug)]
pub(super) struct Failure {
    pub(super) kind: FailKind,
    pub(super) message: String,
    pub(super) maybe_billed: bool,
    pub(super) attempts: u32,
}

impl Failure {
    pub(super) fn unavailable(message: impl Into<String>, maybe_billed: bool, attempts: u32) -> Self {
        Self { kind: FailKind::Unavailable, message: message.into(), maybe_billed, attempts }
    }
}
