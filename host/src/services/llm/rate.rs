//! The rate limit: requests per rolling minute, per budget key.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::LlmService;

impl LlmService {
    /// Record one live request for `budget` unless `per_minute` were
    /// reached in the last minute.
    pub(super) fn take_rate(&self, budget: &str, per_minute: u32) -> bool {
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let window = rate.entry(budget.to_string()).or_default();
        let now = Instant::now();
        while window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            window.pop_front();
        }
        if window.len() >= per_minute as usize {
            return false;
        }
        window.push_back(now);
        true
    }
}
