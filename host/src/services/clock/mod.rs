//! The `clock` service (`vivarium:agent/clock@0.2.0`): the call's own
//! elapsed and remaining time.
//!
//! * **Why a service.** WASI's monotonic clock says what time it is, not
//!   how long the call may still run: the wall-clock limit is the host's.
//!   `remaining` lets a variant spend its call as an anytime algorithm does
//!   (search until little is left, then answer) instead of guessing and
//!   being cut off with nothing. It needs no WASI, so a variant built for
//!   `wasm32-unknown-unknown` can read it.
//! * **Grant.** `clock = {}` under `[capabilities]`; the policy's
//!   `clock = true` allows it (the built-in policy does: it stays on the
//!   machine and reveals nothing the WASI clocks do not).
//! * **Per call.** Each call's clock starts at 0 when the call's services
//!   are made and ends at the call's deadline (the wall limit, after any
//!   caller's tightening).
//! * **Determinism.** In deterministic mode the clock is virtual, as
//!   the WASI clocks are ([`crate::caps::wasi`]): each reading advances it
//!   by [`VIRTUAL_TICK`], and `remaining` is the wall limit less the
//!   virtual time, so two runs read the same values.
//! * **Monotonic.** A reading of `elapsed` is never below the one before.
//! * **Audit.** [`ClockUsage`] (how many readings) rides in the call's
//!   `use` record under `services.clock`.

mod grant;
pub use grant::{ClockGrant, ClockRequest};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bindings::clock::vivarium::agent::clock as wit;

/// How far one reading advances the virtual clock of deterministic mode
/// (the WASI clocks' tick).
pub const VIRTUAL_TICK: Duration = Duration::from_millis(1);

/// Usage counters of the clock service for one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClockUsage {
    /// `elapsed` and `remaining` calls.
    pub readings: u64,
}

#[derive(Debug)]
struct Inner {
    granted: bool,
    /// `Some(time)`: deterministic mode, the virtual time so far.
    virtual_time: Option<Duration>,
    start: Instant,
    deadline: Instant,
    /// The call's wall-clock limit, which the virtual clock counts down.
    wall: Duration,
    /// The highest `elapsed` answered, so no answer goes below it.
    last: Duration,
    usage: ClockUsage,
}

/// Per-call state of the clock service; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct ClockState {
    inner: Arc<Mutex<Inner>>,
}

impl ClockState {
    /// The clock of one call starting now and ending at `deadline`, after
    /// `wall`; `granted: false` gives a state that is not linked and reports
    /// no usage; `deterministic` makes the clock virtual.
    pub fn new(granted: bool, deterministic: bool, deadline: Instant, wall: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                granted,
                virtual_time: deterministic.then_some(Duration::ZERO),
                start: Instant::now(),
                deadline,
                wall,
                last: Duration::ZERO,
                usage: ClockUsage::default(),
            })),
        }
    }

    /// The usage counters so far; `None` when the service is not granted.
    pub fn usage(&self) -> Option<ClockUsage> {
        let g = self.lock();
        g.granted.then(|| g.usage.clone())
    }

    /// One reading: the time since the call began (never below the last
    /// one) and the time left before the call's deadline; a virtual reading
    /// first advances the virtual clock, and its time left is the wall limit
    /// less the virtual time.
    fn read(&self) -> (Duration, Duration) {
        let mut g = self.lock();
        g.usage.readings += 1;
        let wall = g.wall;
        let (now, left) = match &mut g.virtual_time {
            Some(t) => {
                *t += VIRTUAL_TICK;
                (*t, wall.saturating_sub(*t))
            }
            None => {
                let now = Instant::now();
                (now.saturating_duration_since(g.start), g.deadline.saturating_duration_since(now))
            }
        };
        let now = now.max(g.last);
        g.last = now;
        (now, left)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl wit::Host for ClockState {
    async fn elapsed(&mut self) -> wasmtime::Result<u64> {
        Ok(nanos(self.read().0))
    }

    async fn remaining(&mut self) -> wasmtime::Result<u64> {
        Ok(nanos(self.read().1))
    }
}

/// The `clock` service: its line in the registry (`services/registry.rs`).
pub struct ClockFactor;

impl super::Service for ClockFactor {
    type Grant = ClockGrant;
    type State = ClockState;
    type Usage = ClockUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION_0_2];
}

impl super::PerCall for ClockFactor {
    fn state(
        section: Option<&ClockGrant>,
        grant: &crate::caps::Grant,
        _host: &super::HostServices,
        scope: &super::CallScope,
    ) -> ClockState {
        ClockState::new(section.is_some(), grant.deterministic.is_some(), scope.deadline, scope.wall)
    }

    fn unlinked() -> ClockState {
        ClockState::new(false, false, Instant::now(), Duration::ZERO)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut ClockState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<ClockState>>(linker, get)
    }

    fn usage(state: &ClockState) -> Option<ClockUsage> {
        state.usage()
    }
}

#[cfg(test)]
mod tests;
