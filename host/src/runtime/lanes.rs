//! Two lanes for guest calls, so long-running calls cannot starve short ones.
//!
//! Every call starts on the caller's executor (the *fast lane*). A call that
//! is still running when an epoch tick interrupts it — it has computed for
//! a tick already — is handed to the *long lane*: a separate tokio runtime
//! owned by the [`Runtime`](super::Runtime), whose threads are marked
//! CPU-bound for the OS (`SCHED_BATCH` on Linux: the same share of CPU as
//! any thread, but a thread that wakes up preempts them). From there it goes
//! on yielding at every tick and ends at its deadline as before.
//!
//! Why: the epoch yield alone makes calls take turns, one tick each, on the
//! caller's worker threads. With 100 spinning calls on 2 workers, a short
//! call waits behind ~50 ticks — a quarter of a second — before it runs;
//! measured in `tests/fairness.rs`, the median latency of a 0.5 ms call went
//! to ~8× its solo latency (p90 ~25×). With the long lane the caller's
//! workers only ever run calls that are young, and a short call's thread
//! preempts the busy lane's when it wakes: the median stays at 0.8–1.4×.
//!
//! A lower nice value for the long lane gave the same medians but starves
//! long calls when other processes (a variant build, a trainer) compete for
//! the CPU, so they hit their wall-clock limit for reasons not their own;
//! `SCHED_BATCH` does not change the lane's share.
//!
//! A call blocked in an async host call (a sleep, a socket) is not computing
//! and costs nothing where it waits; it stays where it is until it computes
//! through a tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The long lane: a multi-thread tokio runtime whose workers are `SCHED_BATCH`.
pub(crate) fn long_lane(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("vivarium-long")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
}

/// Mark the calling thread CPU-bound (best effort): it keeps its share of
/// the CPU, but threads that wake up preempt it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system call on a valid `sched_param`; on Linux, pid 0
    // means the calling thread only.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// A call's execution future that moves itself to the long lane once
/// `demote` is set and it is pending.
pub(crate) struct Demotable<F: Future> {
    state: State<F>,
    demote: Arc<AtomicBool>,
    lane: Option<Handle>,
}

enum State<F: Future> {
    Here(Pin<Box<F>>),
    There(AbortOnDrop<F::Output>),
    Moving,
}

/// Aborts the task when the caller stops waiting for it (the caller's own
/// future was dropped), so a call never outlives whoever awaits it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<F: Future> Demotable<F> {
    /// Run `fut` here until `demote` is set, then on `lane` (when given).
    pub(crate) fn new(fut: F, demote: Arc<AtomicBool>, lane: Option<Handle>) -> Self {
        Self { state: State::Here(Box::pin(fut)), demote, lane }
    }
}

impl<F> Future for Demotable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Here(fut) => {
                    if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                        return Poll::Ready(v);
                    }
                    let Some(lane) = this.lane.as_ref().filter(|_| this.demote.load(Ordering::Relaxed)) else {
                        return Poll::Pending;
                    };
                    let State::Here(fut) = std::mem::replace(&mut this.state, State::Moving) else { unreachable!() };
                    this.state = State::There(AbortOnDrop(lane.spawn(fut)));
                }
                State::There(task) => {
                    return match Pin::new(&mut task.0).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(v)) => Poll::Ready(v),
                        Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        // Only `AbortOnDrop` cancels the task, and then nobody polls.
                        Poll::Ready(Err(e)) => panic!("a guest call on the long lane was cancelled: {e}"),
                    };
                }
                State::Moving => unreachable!("polled while moving"),
            }
        }
    }
}
