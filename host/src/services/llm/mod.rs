//! The `llm` service: chat completions through an OpenAI-compatible HTTP
//! API, with the key kept in the host and every token budgeted.
//!
//! * **Configuration** ([`LlmConfig`]) is the operator's, never the
//!   variant's: the base URL, the *name* of the host environment variable
//!   holding the API key, the model map, timeouts, retries, the cache and
//!   replay mode. [`LlmConfig::discover`] reads `$VIVARIUM_LLM_CONFIG`, else
//!   `$VIVARIUM_HOME/llm.toml`, else `$VIVARIUM_LLM_BASE_URL`; with none of
//!   them the host has no LLM and every `chat` answers `unavailable`.
//! * **The key** is read from the host environment when the service starts
//!   and is only ever written into the `Authorization: Bearer` header of
//!   the request to the configured URL. It is not in the guest's
//!   environment (WASI gets only the grant's `env`), not in any answer,
//!   log line, cache file or audit record; error texts from the provider are
//!   scrubbed of it before anyone sees them. Redirects are not followed.
//! * **Grant** ([`LlmGrant`]): allowed models, a token budget (prompt +
//!   completion, over the variant's life in one run), a request-size cap and
//!   a rate (requests per rolling minute), and optionally dollars (`usd`).
//! * **Order of checks** for one `chat`: model allowed by the grant and
//!   offered by the model map (`denied`); request well-formed and within
//!   `max_request_bytes` (`invalid-request`); budget: tokens already spent +
//!   an estimate of the prompt's tokens + `max-tokens` must fit the grant's
//!   budget and the call's cap ([`CallOptions::llm_tokens`](crate::runtime::CallOptions::llm_tokens)),
//!   else `budget-exhausted` and nothing is sent; the estimate is reserved
//!   in the ledger; the cache; the rate (`rate-limited`); then the provider.
//! * **Counting.** Real usage comes from the response's `usage` (the
//!   estimate when a server omits it) and replaces the reservation in the
//!   ledger. A request the provider refused or that never reached it is
//!   refunded; one cut off by the call's deadline keeps its reservation
//!   (the provider may have billed it) and shows as `pending_tokens`.
//!   The ledger is the host's one budget ledger ([`crate::ledger`],
//!   `$VIVARIUM_HOME/ledger.sqlite`), keyed by run and variant, so a resumed
//!   run does not get a fresh budget.
//! * **Dollars.** `[prices."<provider model>"]` in `llm.toml` gives a
//!   model's price in USD per million prompt and completion tokens. Before
//!   a request is sent, its worst case — the estimated prompt tokens at the
//!   prompt price plus every `max-tokens` at the completion price — is
//!   reserved against the grant's `usd` and the run's `budget.usd`
//!   ([`CallOptions::run_usd`](crate::runtime::CallOptions::run_usd)); one
//!   that does not fit is `budget-exhausted`, naming the dollars, and
//!   nothing is sent. The answer's usage settles it. A model with no price
//!   costs nothing, and is `denied` under a dollar budget, which could not
//!   bound it. A settled cost can pass the reservation only where the
//!   prompt had more tokens than estimated (a quarter token per byte): by
//!   at most (prompt bytes − estimate) × the prompt price, per request in
//!   flight.
//! * **Retries**: 429, 5xx, connection failures and timeouts are retried up
//!   to `retries` times with exponential backoff (`backoff`, doubling, at
//!   most `max_backoff`; a `Retry-After` in seconds is honoured within that
//!   bound). A backoff that would pass the call's deadline is not slept: the
//!   guest gets `unavailable` while it still has time to fall back.
//!   Other 4xx answers are not retried.
//! * **Cancellation**: the runtime's timeout around the whole call drops the
//!   guest's future and with it this request, its connection and any
//!   backoff sleep — nothing outlives the variant's deadline.
//! * **Bounds**: a response body over `max_response_bytes` is cut off while
//!   streaming (the host never holds more) and is `unavailable`; malformed
//!   JSON is `unavailable` with the parse error.
//! * **Cache and replay.** Every completed request is stored under
//!   `cache_dir/ab/<sha256>.json`, keyed by the sha256 of the exact request
//!   body sent (provider model, messages, max_tokens, temperature), written
//!   atomically. With `cache = "read-write"` (the default) an identical
//!   request is answered from the cache; `record` only writes; `off` neither.
//!   With `replay = true` the service never opens a connection: it answers
//!   only from the cache, and a miss is `unavailable`. A cached answer is
//!   charged its recorded usage, so a replayed run spends its budget exactly
//!   as the recorded one did.
//! * **Audit**: the call's `use` record carries, per request, the request
//!   digest, the model asked for and the provider model, where the answer
//!   came from (`live`, `cache`, `replay`), attempts, token counts, latency
//!   and the outcome ([`LlmUsage`]).
//!
//! # Where things are
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | [`LlmService`] (the host side, shared by every call) and the registry's `LlmFactor` |
//! | `config.rs` | [`LlmConfig`] (`llm.toml`), [`CacheMode`], [`Price`] |
//! | `client.rs` | the HTTP client: one request with retries, backoff, a bounded body, typed failures |
//! | `cache.rs` | the response cache and what `--replay` answers from |
//! | `rate.rs` | requests per rolling minute |
//! | `protocol.rs` | the chat-completions shapes: request checks, tools, the answer's parse, the token estimate |
//! | `state.rs` | per-call state ([`LlmState`], [`LlmUsage`]): one `chat` through every check, budgets in the ledger |
//! | `host.rs` | the `vivarium:agent/llm` interfaces, 0.1.0 and 0.2.0, over one `chat` |
//! | `tests.rs` | unit tests; the integration tests with a scripted server are `tests/all/services.rs` |

mod cache;
mod client;
mod config;
mod host;
mod protocol;
mod rate;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod grant;
pub use config::{CacheMode, LlmConfig, Price};
pub use grant::{LlmGrant, LlmPolicy, LlmRequest};
pub use protocol::estimate_prompt_tokens;
pub use state::{LlmRequestRecord, LlmState, LlmUsage};

use crate::bindings::v0_2::vivarium::agent::llm as wit2;
use crate::bindings::vivarium::agent::llm as wit;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::ledger::{Ledger, Resource};
use client::Secret;

/// The operator's configuration file under `$VIVARIUM_HOME`.
pub const CONFIG_FILE: &str = "llm.toml";
/// The default cache directory under `$VIVARIUM_HOME`.
pub const CACHE_DIR: &str = "llm-cache";
/// Per-request records kept in one call's use record.
pub const MAX_RECORDS_PER_CALL: usize = 64;
/// Tools one request may offer (the OpenAI API's limit).
pub const MAX_TOOLS: usize = 128;
/// Tool calls one answer may hold; more is a `bad-response`.
pub const MAX_TOOL_CALLS: usize = 128;
/// Tool names listed in one request's audit record (the count is always there).
const MAX_AUDITED_TOOLS: usize = 16;
/// Length of a provider error text passed on (after scrubbing).
const MAX_ERROR_TEXT: usize = 300;

/// The host side of the `llm` service: configuration, the HTTP client, the
/// key, the budget ledger and the rate windows. Shared by every call.
pub struct LlmService {
    config: LlmConfig,
    key: Option<Secret>,
    client: reqwest::Client,
    cache_dir: Option<PathBuf>,
    ledger: Arc<Ledger>,
    rate: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl fmt::Debug for LlmService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmService")
            .field("config", &self.config)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl LlmService {
    /// Start the service: read the key from the host environment, build the
    /// client, open the budget ledger at `ledger` (`None`: in memory, for one
    /// process). `home` resolves a relative `cache_dir` (and the default one).
    pub fn new(config: LlmConfig, home: Option<&Path>, ledger: Option<&Path>) -> Result<Self> {
        let ledger = match ledger {
            Some(p) => Ledger::at(p.to_path_buf()),
            None => Ledger::in_memory(),
        };
        Self::with_ledger(config, home, Arc::new(ledger))
    }

    /// [`LlmService::new`] charging an open budget ledger (the one the
    /// host's other services share).
    pub fn with_ledger(config: LlmConfig, home: Option<&Path>, ledger: Arc<Ledger>) -> Result<Self> {
        config.check().map_err(Error::invalid)?;
        let key = config.api_key_env.as_ref().and_then(|n| std::env::var(n).ok()).filter(|k| !k.is_empty()).map(Secret);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout.0.min(Duration::from_secs(10)))
            .user_agent(concat!("vivarium/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(anyhow::anyhow!("cannot build the HTTP client: {e}")))?;
        let cache_dir = match (config.cache, &config.cache_dir, home) {
            (CacheMode::Off, _, _) if !config.replay => None,
            (_, Some(d), _) if d.is_absolute() => Some(d.clone()),
            (_, Some(d), Some(h)) => Some(h.join(d)),
            (_, None, Some(h)) => Some(h.join(CACHE_DIR)),
            (_, _, None) => None,
        };
        Ok(Self { config, key, client, cache_dir, ledger, rate: Mutex::default() })
    }

    /// The service for a home: [`LlmConfig::discover`], the cache under it,
    /// charging `ledger` (the home's). `None` when no LLM is configured.
    pub fn for_home(home: &Home, ledger: Arc<Ledger>) -> Result<Option<Self>> {
        match LlmConfig::discover(home)? {
            Some(c) => Ok(Some(Self::with_ledger(c, Some(home.root()), ledger)?)),
            None => Ok(None),
        }
    }

    /// The budget ledger the service charges.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Where responses are cached, if anywhere.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Tokens charged to `budget` so far (see [`budget_key`]).
    pub fn spent(&self, budget: &str) -> Result<u64> {
        self.ledger.spent(budget, Resource::LlmTokens)
    }

    /// Tokens charged in `run` so far, over every variant of the run: what
    /// `vivarium evolve` holds against the run's `budget.tokens`.
    pub fn spent_in_run(&self, run: &str) -> Result<u64> {
        self.ledger.spent_in_run(run, Resource::LlmTokens)
    }

    /// `text` with the key replaced, cut to a short length.
    fn scrub(&self, text: &str) -> String {
        let mut t = match &self.key {
            Some(Secret(k)) if !k.is_empty() => text.replace(k.as_str(), "[redacted]"),
            _ => text.to_string(),
        };
        t = crate::services::log::sanitize(t.as_bytes());
        if t.len() > MAX_ERROR_TEXT {
            t.truncate(t.floor_char_boundary(MAX_ERROR_TEXT));
            t.push('…');
        }
        t
    }
}

/// The ledger key of a variant's budget in a run (shared with the
/// `trainer`, so it lives with the ledger).
pub use crate::ledger::budget_key;

/// The `llm` service: its line in the registry (`services/registry.rs`).
pub struct LlmFactor;

impl super::Service for LlmFactor {
    type Grant = LlmGrant;
    type State = LlmState;
    type Usage = LlmUsage;
    const VERSIONS: &'static [&'static str] =
        &[crate::caps::imports::AGENT_VERSION, crate::caps::imports::AGENT_VERSION_0_2];
}

impl super::PerCall for LlmFactor {
    fn state(
        section: Option<&LlmGrant>,
        _grant: &crate::caps::Grant,
        host: &super::HostServices,
        scope: &super::CallScope,
    ) -> LlmState {
        LlmState::with_run_budget(
            section.cloned(),
            host.llm.clone(),
            scope.budget_key(),
            scope.run_usd.map(|u| (scope.run.clone(), u)),
            scope.llm_tokens,
            Some(scope.deadline),
        )
        .routed_to(scope.llm_model.clone())
    }

    fn unlinked() -> LlmState {
        LlmState::new(None, None, String::new(), None, None)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut LlmState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<LlmState>>(linker, get)?;
        // Both versions: a 0.1.0 component and a 0.2.0 one share the service.
        wit2::add_to_linker::<_, wasmtime::component::HasSelf<LlmState>>(linker, get)
    }

    fn usage(state: &LlmState) -> Option<LlmUsage> {
        state.usage()
    }
}
