//! Host work charged to the call's fuel.
//!
//! Fuel counts the guest's own instructions; left at that, everything a
//! guest makes the host do would be free, and only the wall clock would
//! bound a loop of `get-random-bytes(1 MiB)` (the review saw 3 s of it cost
//! 6,702 fuel). So the host charges its own work to the same budget, at the
//! moment each host call returns (a wasmtime call hook): fuel stays the one
//! deterministic measure of what a call cost (`usage.fuel` is guest plus
//! host), and a call whose guest and host work together exceed it ends
//! `out-of-fuel` like any other — at the host call that crosses the line,
//! at the next epoch tick, or, for a call that finished within that tick,
//! when it ends, so the verdict does not depend on timing.
//!
//! What is charged, per call:
//!
//! * [`FUEL_PER_HOST_CALL`] for every return from the host to the guest:
//!   every import (WASI and Vivarium's services alike) and every runtime
//!   libcall (`memory.grow`, …) except the epoch tick. The tick is a
//!   libcall too (wasmtime wraps it in the same call hooks), but how many
//!   ticks a call sees depends on the wall clock and the machine's load,
//!   not on the guest: charging them made the same call cost a different
//!   fuel from one run to the next (by 1,000 per tick). The epoch callback
//!   marks its tick ([`mark_epoch_tick`]) and the hook lets it pass free;
//! * [`FUEL_PER_BYTE`] for every byte of randomness generated
//!   (`wasi:random`, secure and insecure) and every byte handed to the
//!   `log` service or written to stdout/stderr, kept or dropped.
//!
//! What is not: work that a service already budgets in its own unit and
//! bounds by the wall clock (`llm` tokens, `simulator` steps, `trainer`
//! seconds), and file bytes, which the disk quota bounds. Those budgets are
//! the limit for that work; fuel is the limit for everything else.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::{CallHook, StoreContextMut, Trap};

use super::HostState;

/// Fuel charged each time the host returns to the guest.
pub const FUEL_PER_HOST_CALL: u64 = 1_000;
/// Fuel charged per byte the host generates or takes in for the guest.
pub const FUEL_PER_BYTE: u64 = 1;

/// Fuel owed for host work not yet taken from the store; shared by the
/// parts of one call that do host work (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct HostWork(Arc<AtomicU64>);

impl HostWork {
    /// Owe `bytes` bytes' worth of fuel.
    pub fn charge_bytes(&self, bytes: usize) {
        self.0.fetch_add((bytes as u64).saturating_mul(FUEL_PER_BYTE), Ordering::Relaxed);
    }

    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// What the hook has charged so far.
#[derive(Debug, Default)]
pub(crate) struct Charged {
    log_bytes: u64,
    /// Fuel charged for host work in this call so far.
    pub(crate) total: u64,
    /// The host call now returning is an epoch tick (set by the epoch
    /// callback, taken by the next [`hook`]).
    epoch_tick: bool,
}

/// Mark the libcall in progress as an epoch tick, which [`hook`] does not
/// charge. Called first thing in every store's epoch-deadline callback.
pub(crate) fn mark_epoch_tick(store: &mut StoreContextMut<'_, HostState>) {
    store.data_mut().charged.epoch_tick = true;
}

/// The store's call hook: on every return from the host, add what the
/// host's work cost to [`Charged::total`]; a call whose guest fuel left
/// cannot cover it ends with [`Trap::OutOfFuel`].
///
/// The charge is kept beside the store's fuel rather than taken from it:
/// wasmtime's compiled code caches the fuel counter across an import call
/// and writes it back afterwards, so a `set_fuel` from a host call does not
/// stick. What the guest has left is therefore [`fuel_left`]: the store's
/// fuel less this total, checked here, at every epoch tick
/// ([`over_budget`]) and when the call ends.
pub(crate) fn hook(mut store: StoreContextMut<'_, HostState>, hook: CallHook) -> wasmtime::Result<()> {
    if !matches!(hook, CallHook::ReturningFromHost) {
        return Ok(());
    }
    let state = store.data_mut();
    let log_bytes = state.log.bytes_in();
    let per_call = if std::mem::take(&mut state.charged.epoch_tick) { 0 } else { FUEL_PER_HOST_CALL };
    let owed = per_call
        .saturating_add(state.host_work.take())
        .saturating_add(log_bytes.saturating_sub(state.charged.log_bytes).saturating_mul(FUEL_PER_BYTE));
    state.charged.log_bytes = log_bytes;
    state.charged.total = state.charged.total.saturating_add(owed);
    if over_budget(&store) {
        return Err(Trap::OutOfFuel.into());
    }
    Ok(())
}

/// Whether the host work charged so far exceeds the fuel the store has left.
pub(crate) fn over_budget(store: &StoreContextMut<'_, HostState>) -> bool {
    store.get_fuel().map_or(false, |fuel| store.data().charged.total > fuel)
}

/// Fuel a call used, guest and host together, given the store's fuel
/// `limit` and what it has `left`; at most `limit`.
pub(crate) fn fuel_used(limit: u64, left: u64, charged: u64) -> u64 {
    limit.saturating_sub(left).saturating_add(charged).min(limit)
}

/// Whether guest and host work together went past `limit` (the call is then
/// out of fuel, whichever way it ended).
pub(crate) fn exhausted(limit: u64, left: u64, charged: u64) -> bool {
    limit.saturating_sub(left).saturating_add(charged) > limit
}

/// A random source that charges the bytes it generates to a [`HostWork`].
pub struct CountingRng {
    inner: Box<dyn rand_core::Rng + Send>,
    work: HostWork,
}

impl CountingRng {
    /// `inner`, charging its output to `work`.
    pub fn new(inner: Box<dyn rand_core::Rng + Send>, work: HostWork) -> Self {
        Self { inner, work }
    }
}

impl rand_core::TryRng for CountingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.work.charge_bytes(4);
        Ok(self.inner.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.work.charge_bytes(8);
        Ok(self.inner.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.work.charge_bytes(dst.len());
        self.inner.fill_bytes(dst);
        Ok(())
    }
}
