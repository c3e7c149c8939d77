//! The WASI surface of a call, built from the grant alone.
//!
//! No ambient authority: no arguments, no environment variable the grant
//! does not name, no preopened directory but the granted ones (inside the
//! call's scratch area), no network unless sockets are granted, stdin empty,
//! stdout and stderr captured into the capped log. In deterministic mode the
//! clocks are virtual and randomness is seeded, so two runs are identical.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::caps::grant::{Access, Grant};
use crate::error::{Error, Result};
use crate::services::log::{CaptureStream, LogState, Stream};

/// Build the WASI context for one call.
///
/// `scratch` is the call's scratch area; granted directories are created
/// inside it. `host_env` looks up environment variables (the grant names
/// which; secrets were already filtered when the grant was computed).
pub fn build(
    grant: &Grant,
    log: &LogState,
    scratch: Option<&Path>,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<WasiCtx> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(CaptureStream::new(log.clone(), Stream::Stdout));
    b.stderr(CaptureStream::new(log.clone(), Stream::Stderr));
    b.allow_blocking_current_thread(false);
    // Network: off unless the grant lists host:port pairs.
    b.allow_ip_name_lookup(false);
    b.allow_udp(false);
    if grant.sockets.is_empty() {
        b.allow_tcp(false);
        b.socket_addr_check(|_, _| Box::pin(async { false }));
    } else {
        let allowed = grant.sockets.clone();
        b.allow_tcp(true);
        b.socket_addr_check(move |addr, _use| {
            let ok = allowed.iter().any(|a| a.parse::<std::net::SocketAddr>().is_ok_and(|s| s == addr));
            Box::pin(async move { ok })
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
            let dir = scratch.join(&f.path);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot create scratch directory {}", dir.display()), e))?;
            let perms = match f.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            b.preopened_dir(&dir, &f.path, perms)
                .map_err(|e| Error::Internal(anyhow::anyhow!("cannot preopen {}: {e:#}", dir.display())))?;
        }
    }
    if let Some(seed) = grant.deterministic {
        b.secure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(seed, 1)));
        b.insecure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(seed, 2)));
        b.insecure_random_seed(u128::from(seed));
        let clock = VirtualClock::default();
        b.wall_clock(clock.clone());
        b.monotonic_clock(clock);
    }
    Ok(b.build())
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
