//! The `log` service, plus capture of the guest's stdout and stderr.
//!
//! A guest may try to flood the host through its log. Every message is
//! truncated to the grant's per-message cap, control and terminal-escape
//! characters are replaced, and once the per-call byte or message cap is
//! reached further output is dropped and only counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::bindings::vivarium::agent::log as wit;
use crate::caps::LogGrant;

/// Marker appended to a shortened message.
const TRUNCATED: &str = " …[truncated]";

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// `trace` … `error`, or `stdout`/`stderr` for captured streams.
    pub level: String,
    /// The sanitized, possibly truncated message.
    pub message: String,
}

/// Usage counters of the log service for one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogUsage {
    /// Messages the guest sent (kept or not).
    pub calls: u64,
    /// Bytes the guest sent (kept or not).
    pub bytes: u64,
    /// Messages dropped because a per-call cap was reached.
    pub dropped: u64,
    /// Messages shortened to the per-message cap.
    pub truncated: u64,
}

#[derive(Debug, Default)]
struct Sink {
    lines: Vec<LogLine>,
    kept_bytes: u64,
    usage: LogUsage,
    // Partial lines of stdout/stderr waiting for a newline.
    pending_stdout: Vec<u8>,
    pending_stderr: Vec<u8>,
}

/// Per-call state of the log service; cheap to clone (shared sink).
#[derive(Debug, Clone)]
pub struct LogState {
    grant: LogGrant,
    sink: Arc<Mutex<Sink>>,
    // Bytes handed to the host (messages and captured output), kept or
    // not: the host work the call is charged fuel for. Outside the sink's
    // lock, since the call hook reads it on every return from the host.
    bytes_in: Arc<AtomicU64>,
}

impl LogState {
    /// Fresh state for one call under `grant`.
    pub fn new(grant: LogGrant) -> Self {
        Self { grant, sink: Arc::default(), bytes_in: Arc::default() }
    }

    /// Bytes the guest has handed this log so far (messages and captured
    /// output, kept or dropped): charged to the call's fuel
    /// ([`crate::runtime::host_work`]).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Record one message, applying every cap.
    pub fn record(&self, level: &str, message: &[u8]) {
        self.bytes_in.fetch_add(message.len() as u64, Ordering::Relaxed);
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        Self::record_locked(&self.grant, &mut sink, level, message);
    }

    fn record_locked(grant: &LogGrant, sink: &mut Sink, level: &str, message: &[u8]) {
        sink.usage.calls += 1;
        sink.usage.bytes += message.len() as u64;
        let cap = grant.max_message.bytes() as usize;
        if sink.lines.len() as u64 >= u64::from(grant.max_messages_per_call)
            || sink.kept_bytes >= grant.max_bytes_per_call.bytes()
        {
            sink.usage.dropped += 1;
            return;
        }
        let room = (grant.max_bytes_per_call.bytes() - sink.kept_bytes) as usize;
        // Sanitizing may widen bytes (a NUL becomes a 3-byte U+FFFD), so the
        // caps apply to the sanitized text.
        let mut text = sanitize(&message[..message.len().min(cap)]);
        let mut truncated = message.len() > cap;
        if text.len() > room.min(cap) {
            text.truncate(text.floor_char_boundary(room.min(cap)));
            truncated = true;
        }
        if truncated {
            sink.usage.truncated += 1;
            if text.len() + TRUNCATED.len() <= room {
                text.push_str(TRUNCATED);
            }
        }
        sink.kept_bytes += text.len() as u64;
        sink.lines.push(LogLine { level: level.to_string(), message: text });
    }

    /// Append raw bytes the guest wrote to stdout or stderr; complete lines
    /// become log lines. Bounded: the pending buffer never exceeds one message.
    pub fn capture(&self, stream: Stream, bytes: &[u8]) {
        self.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.grant.max_message.bytes() as usize;
        for &b in bytes {
            let pending = match stream {
                Stream::Stdout => &mut sink.pending_stdout,
                Stream::Stderr => &mut sink.pending_stderr,
            };
            if b == b'\n' || pending.len() >= cap {
                let line = std::mem::take(pending);
                Self::record_locked(&self.grant, &mut sink, stream.name(), &line);
                if b != b'\n' {
                    let pending = match stream {
                        Stream::Stdout => &mut sink.pending_stdout,
                        Stream::Stderr => &mut sink.pending_stderr,
                    };
                    pending.push(b);
                }
            } else {
                pending.push(b);
            }
        }
    }

    /// Flush partial lines and return what was kept plus the usage counters.
    pub fn finish(&self) -> (Vec<LogLine>, LogUsage) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = match stream {
                Stream::Stdout => std::mem::take(&mut sink.pending_stdout),
                Stream::Stderr => std::mem::take(&mut sink.pending_stderr),
            };
            if !line.is_empty() {
                Self::record_locked(&self.grant, &mut sink, stream.name(), &line);
            }
        }
        (std::mem::take(&mut sink.lines), sink.usage.clone())
    }

    /// The guest's last words on stderr: up to three of its last stderr
    /// lines (a Rust guest's panic location and message), without the
    /// standard backtrace hint.
    pub fn last_stderr(&self) -> Option<String> {
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = sink
            .lines
            .iter()
            .filter(|l| l.level == "stderr" && !l.message.starts_with("note: run with `RUST_BACKTRACE=1`"))
            .map(|l| l.message.clone())
            .collect();
        if !sink.pending_stderr.is_empty() {
            lines.push(sanitize(&sink.pending_stderr));
        }
        let tail = &lines[lines.len().saturating_sub(3)..];
        (!tail.is_empty()).then(|| tail.join(" / "))
    }
}

/// Which captured stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Lossy UTF-8 with every hidden character replaced by `�`, keeping tabs:
/// [`crate::text::sanitize`], named here because log lines are where the
/// host stores most guest text.
pub use crate::text::sanitize;

impl wit::Host for LogState {
    async fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit::Level::Trace => "trace",
            wit::Level::Debug => "debug",
            wit::Level::Info => "info",
            wit::Level::Warn => "warn",
            wit::Level::Error => "error",
        };
        self.record(level, message.as_bytes());
        Ok(())
    }
}

/// A WASI stdout/stderr that feeds [`LogState::capture`].
pub struct CaptureStream {
    state: LogState,
    stream: Stream,
}

impl CaptureStream {
    /// Capture `stream` into `state`.
    pub fn new(state: LogState, stream: Stream) -> Self {
        Self { state, stream }
    }
}

impl wasmtime_wasi::cli::IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CaptureWriter { state: self.state.clone(), stream: self.stream })
    }

    /// A WASI output stream that records each write at once: wasmtime's
    /// default adapter would hand every write to a worker task on the
    /// executor that created the stream, a round trip per `println!` (and a
    /// cross-thread one once the call runs on the long lane).
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(CaptureWriter { state: self.state.clone(), stream: self.stream })
    }
}

/// What one `check-write` allows: capture never blocks, so any size would
/// do; this keeps single writes (and the host's copies) small.
const CAPTURE_WRITE_BUDGET: usize = 64 << 10;

impl wasmtime_wasi::p2::OutputStream for CaptureWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        // Over-cap output is dropped and counted, never an error.
        self.state.capture(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(CAPTURE_WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for CaptureWriter {
    async fn ready(&mut self) {}
}

struct CaptureWriter {
    state: LogState,
    stream: Stream,
}

impl tokio::io::AsyncWrite for CaptureWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Accept everything: over-cap output is dropped and counted, never an
        // error the guest could use to detect or stall the host.
        self.state.capture(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ByteSize;

    fn grant() -> LogGrant {
        LogGrant { max_message: ByteSize(16), max_bytes_per_call: ByteSize(40), max_messages_per_call: 3 }
    }

    #[test]
    fn caps_and_sanitizes() {
        let log = LogState::new(grant());
        log.record("info", b"\x1b[31mred\x1b[0m");
        log.record("info", b"0123456789abcdefXYZ");
        log.record("info", b"third");
        log.record("info", b"fourth is dropped");
        let (lines, usage) = log.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].message, "\u{FFFD}[31mred\u{FFFD}[0m");
        // No room left in the per-call byte cap for the marker.
        assert_eq!(lines[1].message, "0123456789abcdef");
        assert_eq!(usage, LogUsage { calls: 4, bytes: 12 + 19 + 5 + 17, dropped: 1, truncated: 1 });
    }

    #[test]
    fn captures_lines_and_invalid_utf8() {
        let log = LogState::new(grant());
        log.capture(Stream::Stderr, b"panicked at x\nhalf \xff");
        // Up to the last three stderr lines, the pending partial one included.
        assert_eq!(log.last_stderr().as_deref(), Some("panicked at x / half \u{FFFD}"));
        let (lines, _) = log.finish();
        assert_eq!(
            lines,
            vec![
                LogLine { level: "stderr".into(), message: "panicked at x".into() },
                LogLine { level: "stderr".into(), message: "half \u{FFFD}".into() },
            ]
        );
    }
}
