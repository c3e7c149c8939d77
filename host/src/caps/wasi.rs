//! The WASI surface of a call, built from the grant alone.
//!
//! No ambient authority: no arguments, no environment variable the grant
//! does not name, no preopened directory but the granted ones (inside the
//! call's scratch area, never reached through a symbolic link), no network
//! unless sockets are granted (then outgoing TCP to the listed pairs only, no
//! name lookup), stdin empty, stdout and stderr captured into the capped log.
//! In deterministic mode the clocks are virtual and randomness is seeded, so
//! two runs are identical.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::caps::grant::{Access, Grant};
use crate::caps::manifest::{parse_socket, validate_rel_path, SocketSpec};
use crate::caps::policy::{is_internal_host, is_internal_ip};
use crate::error::{Error, Result};
use crate::runtime::host_work::{CountingRng, HostWork};
use crate::services::log::{CaptureStream, LogState, Stream};

/// The most bytes one `wasi:random` `get-random-bytes` call may ask for
/// (wasmtime's default is 64 MiB, allocated by the host on the guest's word).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Build the WASI context for one call.
///
/// `scratch` is the call's scratch area; granted directories are created
/// inside it. `host_env` looks up environment variables (the grant names
/// which; secrets were already filtered when the grant was computed).
/// Randomness generated for the guest is charged to `work`.
pub fn build(
    grant: &Grant,
    log: &LogState,
    scratch: Option<&Path>,
    host_env: &dyn Fn(&str) -> Option<String>,
    work: &HostWork,
) -> Result<WasiCtx> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(CaptureStream::new(log.clone(), Stream::Stdout));
    b.stderr(CaptureStream::new(log.clone(), Stream::Stderr));
    b.allow_blocking_current_thread(false);
    // The host builds a `get-random-bytes` result before copying it into the
    // guest, outside the guest's memory limit: keep it small.
    b.max_random_size(MAX_RANDOM_BYTES);
    // Network: off unless the grant lists host:port pairs, and then only
    // outgoing TCP connections to them (see `SocketRules`). Name lookup
    // stays off: a lookup of an arbitrary name is itself a channel out.
    b.allow_ip_name_lookup(false);
    b.allow_udp(false);
    if grant.sockets.is_empty() {
        b.allow_tcp(false);
        b.socket_addr_check(|_, _| Box::pin(async { false }));
    } else {
        let rules = Arc::new(SocketRules::new(&grant.sockets)?);
        b.allow_tcp(true);
        b.socket_addr_check(move |addr, use_| {
            let rules = rules.clone();
            Box::pin(async move { rules.permits(addr, use_).await })
        });
    }
    for name in &grant.env {
        if let Some(value) = host_env(name) {
            b.env(name, value);
        }
    }
    if !grant.files.is_empty() {
        let scratch = scratch.ok_or_else(|| Error::invalid("file grants need a scratch directory"))?;
        for f in &grant.files {
            let dir = scratch_subdir(scratch, &f.path)?;
            let perms = match f.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            b.preopened_dir(&dir, &f.path, perms)
                .map_err(|e| Error::Internal(anyhow::anyhow!("cannot preopen {}: {e:#}", dir.display())))?;
        }
    }
    // Every byte of randomness is host work charged to the call's fuel.
    let counted = |rng: Box<dyn rand_core::Rng + Send>| CountingRng::new(rng, work.clone());
    if let Some(seed) = grant.deterministic {
        b.secure_random(counted(Box::new(wasmtime_wasi::Deterministic::new(seeded_bytes(seed, 1)))));
        b.insecure_random(counted(Box::new(wasmtime_wasi::Deterministic::new(seeded_bytes(seed, 2)))));
        b.insecure_random_seed(u128::from(seed));
        let clock = VirtualClock::default();
        b.wall_clock(clock.clone());
        b.monotonic_clock(clock);
    } else {
        b.secure_random(counted(wasmtime_wasi::random::thread_rng()));
        b.insecure_random(counted(wasmtime_wasi::random::thread_rng()));
    }
    Ok(b.build())
}

/// The directory of the file grant `rel` inside `scratch`, created when
/// missing. The grant's path is checked again here (a grant built in code
/// skips the manifest's checks), and no component of it may be a symbolic
/// link or a non-directory: a link planted in the scratch area would
/// otherwise make the host preopen whatever it points to.
fn scratch_subdir(scratch: &Path, rel: &str) -> Result<PathBuf> {
    let refuse = |detail: String| Error::Refused { what: vec!["files".to_string()], detail };
    validate_rel_path(rel).map_err(|why| refuse(format!("file grant refused: {why}")))?;
    let mut dir = scratch.to_path_buf();
    for component in rel.split('/') {
        dir.push(component);
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(format!("cannot create scratch directory {}", dir.display()), e)),
                }
                std::fs::symlink_metadata(&dir)
                    .map_err(|e| Error::io(format!("cannot inspect scratch directory {}", dir.display()), e))?
            }
            Err(e) => return Err(Error::io(format!("cannot inspect scratch directory {}", dir.display()), e)),
        };
        if meta.file_type().is_symlink() {
            return Err(refuse(format!(
                "file grant `{rel}`: {} in the scratch area is a symbolic link; a grant is never preopened through a link",
                dir.display()
            )));
        }
        if !meta.is_dir() {
            return Err(refuse(format!(
                "file grant `{rel}`: {} in the scratch area is not a directory",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// What a socket grant lets the guest do: open outgoing TCP connections to
/// the listed pairs, nothing else (no listening, no accepting, no UDP, no
/// explicit bind but the wildcard address with port 0, which every connect
/// checks as its implicit bind).
///
/// * An IP pair (`127.0.0.1:8080`, `[::1]:8080`) admits that address and
///   port (compared in canonical form; wasmtime itself already refuses
///   IPv4-mapped IPv6 addresses and the wildcard address).
/// * A name pair (`api.example.com:443`) admits a connection to an address
///   the *host* resolves the name to at connect time, on that port. The
///   guest cannot resolve names itself (ip-name-lookup is off), so it
///   connects by address. A resolved private or loopback address
///   ([`is_internal_ip`]) is refused unless the name is itself an internal
///   name ([`is_internal_host`], e.g. `localhost`), which the policy admits
///   only when it lists that exact pair — so a public name that resolves to
///   an internal address (DNS rebinding) reaches nothing inside.
struct SocketRules {
    addrs: Vec<SocketAddr>,
    names: Vec<(SocketSpec, bool)>,
}

/// Longest the host waits for a name of the grant to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl SocketRules {
    fn new(sockets: &[String]) -> Result<Self> {
        let mut rules = SocketRules { addrs: Vec::new(), names: Vec::new() };
        for s in sockets {
            let spec = parse_socket(s).map_err(|why| Error::Refused {
                what: vec!["sockets".to_string()],
                detail: format!("socket grant refused: {why}"),
            })?;
            match spec.ip {
                Some(ip) => rules.addrs.push(SocketAddr::new(ip.to_canonical(), spec.port)),
                None => {
                    let internal_ok = is_internal_host(&spec);
                    rules.names.push((spec, internal_ok));
                }
            }
        }
        Ok(rules)
    }

    async fn permits(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        match use_ {
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => {
                if self.addrs.contains(&addr) {
                    return true;
                }
                for (spec, internal_ok) in self.names.iter().filter(|(s, _)| s.port == addr.port()) {
                    if !internal_ok && is_internal_ip(&addr.ip()) {
                        continue;
                    }
                    let lookup = tokio::net::lookup_host((spec.host.as_str(), spec.port));
                    if let Ok(Ok(mut found)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                        if found.any(|a| a.ip().to_canonical() == addr.ip()) {
                            return true;
                        }
                    }
                }
                false
            }
            _ => false,
        }
    }
}

/// 64 KiB of bytes derived from `seed` (sha256 in counter mode).
fn seeded_bytes(seed: u64, stream: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 << 10);
    let mut counter = 0u64;
    while out.len() < (64 << 10) {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update([stream]);
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out
}

/// A clock that starts at a fixed instant and advances 1 ms per reading, so
/// time-dependent guests replay identically.
#[derive(Clone, Default)]
pub struct VirtualClock {
    ticks: Arc<AtomicU64>,
}

const VIRTUAL_EPOCH: Duration = Duration::from_secs(1_700_000_000);
const VIRTUAL_STEP_NS: u64 = 1_000_000;

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_STEP_NS)
    }
    fn now(&self) -> Duration {
        let t = self.ticks.fetch_add(1, Ordering::Relaxed);
        VIRTUAL_EPOCH + Duration::from_nanos(t * VIRTUAL_STEP_NS)
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        VIRTUAL_STEP_NS
    }
    fn now(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed) * VIRTUAL_STEP_NS
    }
}
