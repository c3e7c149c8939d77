//! Per-call memory, table and instance limits, with peak tracking.
//!
//! The limiter records *which* limit was hit so that the trap a guest raises
//! afterwards (a Rust guest aborts with `unreachable` when allocation fails)
//! is reported as `memory-limit`, not as a generic trap.

use wasmtime::ResourceLimiter;

/// Enforces one call's limits and remembers the peak and any limit hit.
#[derive(Debug, Clone)]
pub struct CallLimiter {
    memory_limit: u64,
    table_limit: u64,
    instance_limit: usize,
    memory_now: u64,
    /// Highest total linear memory seen during the call, in bytes.
    pub memory_peak: u64,
    tables_now: u64,
    /// Set when a growth request was refused; says what and by how much.
    pub hit: Option<String>,
}

impl CallLimiter {
    /// A limiter for `memory_limit` bytes, `table_limit` elements and
    /// `instance_limit` instances.
    pub fn new(memory_limit: u64, table_limit: u64, instance_limit: u32) -> Self {
        Self {
            memory_limit,
            table_limit,
            instance_limit: instance_limit as usize,
            memory_now: 0,
            memory_peak: 0,
            tables_now: 0,
            hit: None,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current) as u64;
        let total = self.memory_now.saturating_add(delta);
        if total > self.memory_limit || maximum.is_some_and(|m| desired > m) {
            if self.hit.is_none() {
                self.hit = Some(format!(
                    "linear memory would grow to {total} bytes; the limit is {} bytes",
                    self.memory_limit
                ));
            }
            return Ok(false);
        }
        self.memory_now = total;
        self.memory_peak = self.memory_peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current) as u64;
        let total = self.tables_now.saturating_add(delta);
        if total > self.table_limit || maximum.is_some_and(|m| desired > m) {
            if self.hit.is_none() {
                self.hit =
                    Some(format!("tables would grow to {total} elements; the limit is {} elements", self.table_limit));
            }
            return Ok(false);
        }
        self.tables_now = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instance_limit
    }

    fn tables(&self) -> usize {
        self.instance_limit.saturating_mul(4)
    }

    fn memories(&self) -> usize {
        self.instance_limit
    }
}
