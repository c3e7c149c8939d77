//! `vivarium serve`: a live control room over `$VIVARIUM_HOME` — runs,
//! lineage with scores, each variant's grant, diff and audit records,
//! budgets, pending escalation requests with approve and deny, and a stop
//! button per run and for all runs.
//!
//! # What it guards against
//!
//! The server is a way to act on runs (approve a capability escalation,
//! stop a run) from a browser, so it is an attack surface of its own:
//!
//! - **Who may ask.** Every request but the login page and its script needs
//!   the access token ([`auth`]): `Authorization: Bearer <token>`, or the
//!   `vivarium_token` cookie (HttpOnly, SameSite=Strict) the page sets after
//!   the token is entered once. The token is random (256 bits) unless
//!   `--token-file` or `VIVARIUM_SERVE_TOKEN` gives it, and is compared in
//!   constant time. The audit log names who acted by the token's
//!   fingerprint (`serve:<8 hex digits>`), never the token.
//! - **Where from.** Loopback by default; another address needs
//!   `--allow-remote` ([`check_listen`]). On loopback the `Host` header must
//!   name a loopback host, so a page on another site cannot reach the server
//!   through DNS rebinding.
//! - **Forged actions (CSRF).** Actions are POST only (a GET of an action is
//!   405 and changes nothing), and every POST needs the header
//!   `X-Vivarium-Action: 1` — which a cross-site form cannot send and a
//!   cross-site script cannot send without a CORS preflight this server
//!   never grants — and, when the browser sends `Origin`, an `Origin` of
//!   this server. The cookie is SameSite=Strict besides.
//! - **Guest text.** Summaries, reasons, notes and audit details were
//!   written by variants. The API returns them as JSON strings; the page
//!   puts them into the document with `textContent` only, under a
//!   Content-Security-Policy that allows no inline script and no other
//!   origin.
//! - **Secrets.** Nothing the server reads holds the operator's keys: the
//!   llm service's configuration (`llm.toml`, the key's environment
//!   variable) is never read, grants name environment variables but never
//!   their values, and run configurations hold no keys.
//! - **Floods.** Connections are bounded ([`Limits::max_connections`]; past
//!   it a new connection waits in the kernel's backlog), a client must send
//!   its headers within [`Limits::header_read_timeout`], reads of the
//!   archive run a few at a time on the blocking pool, event streams are
//!   bounded ([`Limits::max_streams`]), and the CLI lowers the server's
//!   scheduling priority so that a running evolution is served first.
//!
//! # Live updates
//!
//! One watcher ([`events`]) looks at the audit log's length, the approvals
//! directory and the archive index's size and mtime twice a second, and
//! reads only what changed (new audit lines from the last offset, the runs
//! whose state or variants changed); each browser holds one server-sent
//! event stream (`/api/events`) and fetches only what an event names.
//!
//! # Stopping a run
//!
//! A stop is a request file the evolve loop reads between steps
//! ([`crate::evolve::request_stop`]); the run ends as `stopped`, exactly as a
//! budget ends it, and `--resume` continues it.

pub mod api;
pub mod auth;
pub mod events;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::Token;

use crate::error::{Error, Result};
use crate::home::Home;

/// The environment variable that gives the access token.
pub const TOKEN_ENV: &str = "VIVARIUM_SERVE_TOKEN";

/// Bounds that keep a flood of requests from taking the machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time a connection has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Event streams open at once; past it `/api/events` answers 503.
    pub max_streams: usize,
    /// Archive and audit reads running at once (on the blocking pool).
    pub max_reads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 512, header_read_timeout: Duration::from_secs(10), max_streams: 64, max_reads: 2 }
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` is allowed.
    pub allow_remote: bool,
    /// The access token.
    pub token: Token,
    /// Bounds on connections and work.
    pub limits: Limits,
}

/// `Ok` when `addr` is a loopback address, or `allow_remote` is set.
///
/// Errors: [`Error::Invalid`] naming the address and `--allow-remote`.
pub fn check_listen(addr: &SocketAddr, allow_remote: bool) -> Result<()> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{addr} is not a loopback address: anyone who can reach it could try the token; \
         listen on 127.0.0.1 (the default), or pass --allow-remote to serve other machines \
         (then put TLS in front: the token travels in every request)"
    )))
}

/// The token the server requires: the first line of `token_file` when
/// given, else `$VIVARIUM_SERVE_TOKEN` when set, else a new random one.
/// The second value says which (`"file"`, `"env"`, `"random"`).
///
/// Errors: [`Error::Invalid`] when the file cannot be read or the token is
/// shorter than 16 characters or not printable ASCII.
pub fn token_from(token_file: Option<&Path>) -> Result<(Token, &'static str)> {
    if let Some(f) = token_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Error::invalid(format!("cannot read the token file {}: {e}", f.display())))?;
        let line = text.lines().next().unwrap_or_default().trim();
        return Token::new(line).map(|t| (t, "file")).map_err(|e| Error::invalid(format!("{}: {e}", f.display())));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            Token::new(v.trim()).map(|t| (t, "env")).map_err(|e| Error::invalid(format!("${TOKEN_ENV}: {e}")))
        }
        _ => Token::random().map(|t| (t, "random")),
    }
}

/// A bound server: [`Server::addr`] is where it listens; [`Server::run`]
/// serves until the future is dropped.
pub struct Server {
    listener: TcpListener,
    state: Arc<api::AppState>,
    limits: Limits,
}

impl Server {
    /// Check the options and bind the listening socket of a server over
    /// `home`; starts the file watcher.
    ///
    /// Errors: [`Error::Invalid`] for a non-loopback address without
    /// `allow_remote`; [`Error::Io`] when the address cannot be bound.
    pub async fn bind(home: Home, opts: ServeOptions) -> Result<Server> {
        check_listen(&opts.listen, opts.allow_remote)?;
        let listener = listen(opts.listen).map_err(|e| Error::io(format!("cannot listen on {}", opts.listen), e))?;
        let local = listener.local_addr().map_err(|e| Error::io("reading the listening address", e))?;
        let state = api::AppState::new(home, opts.token, local, opts.allow_remote, &opts.limits);
        events::spawn_watcher(state.clone());
        Ok(Server { listener, state, limits: opts.limits })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// The URL to open, with the token in the fragment (which the browser
    /// never sends to the server; the page trades it for the cookie).
    pub fn url_with_token(&self) -> String {
        format!("{}/#token={}", self.base_url(), self.state.token.expose())
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        let a = self.addr();
        match a.ip() {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", a.port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", a.port()),
        }
    }

    /// The token's fingerprint, as the audit log names who acted.
    pub fn actor(&self) -> String {
        self.state.token.actor()
    }

    /// Serve connections until dropped; each connection is served by
    /// hyper's HTTP/1 with a header-read timeout, and at most
    /// [`Limits::max_connections`] at once.
    pub async fn run(self) -> Result<()> {
        let router = api::router(self.state.clone());
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        loop {
            let permit = permits.clone().acquire_owned().await.map_err(|e| Error::Internal(e.into()))?;
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                // Out of file descriptors and the like: wait, then go on.
                Err(e) => {
                    tracing::warn!("serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let timeout = self.limits.header_read_timeout;
            tokio::spawn(async move {
                // hyper's header timeout starts at the first byte; a
                // connection that never sends one is closed here.
                let mut first = [0u8; 1];
                if !matches!(tokio::time::timeout(timeout, stream.peek(&mut first)).await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout)
                    .max_buf_size(64 << 10)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = conn.await;
                drop(permit);
            });
        }
    }
}

/// A listening socket on `addr` with a backlog of 1024, so that a burst
/// of connections waits in the kernel's accept queue instead of being
/// dropped (`TcpListener::bind` asks for 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Lower the calling thread's scheduling priority (nice 10), so that a
/// server under load leaves the CPU to the evolution it watches. Best
/// effort. Linux keeps the nice value per thread and threads inherit it
/// from the thread that creates them: call this before any thread starts
/// (the CLI does, before its async runtime).
pub fn lower_priority() {
    #[cfg(unix)]
    // SAFETY: setpriority on this process only; no memory is passed.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
