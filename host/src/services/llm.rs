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
//!   a rate (requests per rolling minute).
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bindings::v0_2::vivarium::agent::llm as wit2;
use crate::bindings::vivarium::agent::llm as wit;
use crate::caps::LlmGrant;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::ledger::{Charge, Exceeded, Ledger, Resource, Scope};
use crate::units::{ByteSize, HumanDuration, Usd};

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

/// Whether the response cache is read, written, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Answer identical requests from the cache; store every new answer.
    #[default]
    ReadWrite,
    /// Store every answer, never answer from the cache (fresh samples, but
    /// the run can be replayed).
    Record,
    /// No cache.
    Off,
}

/// The host's LLM configuration (operator-owned; see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The API's base URL, up to and including the version path, e.g.
    /// `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`; requests go
    /// to `<base_url>/chat/completions`. Optional in replay mode.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the host environment variable holding the API key; `None`
    /// sends no `Authorization` header (a local server).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Grant model name → provider model name. Empty: names pass through
    /// unchanged. Otherwise a name not in the map is refused.
    #[serde(default, rename = "models")]
    pub model_map: BTreeMap<String, String>,
    /// Timeout of one attempt, connection to last body byte.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Extra attempts after a 429, a 5xx, a connection failure or a timeout.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff; doubles per retry.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// Longest backoff (and longest `Retry-After` honoured).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Largest response body read.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: ByteSize,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheMode,
    /// Where cached responses live; relative paths are under
    /// `$VIVARIUM_HOME` (default `llm-cache`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Answer only from the cache; never connect.
    #[serde(default)]
    pub replay: bool,
    /// Provider model → its price in USD per million tokens
    /// (`[prices."gpt-4o-mini"] prompt = 0.15, completion = 0.60`). A model
    /// with no price costs nothing and cannot be used under a dollar budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
}

/// A provider model's price, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million prompt tokens.
    pub prompt: f64,
    /// USD per million completion tokens.
    pub completion: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens, rounded up to the
    /// nano-dollar.
    pub fn cost(&self, prompt: u64, completion: u64) -> Usd {
        // USD per million tokens = nano-dollars per thousandth of a token.
        let nanos = (prompt as f64 * self.prompt + completion as f64 * self.completion) * 1e3;
        Usd(nanos.ceil().min(u64::MAX as f64) as u64)
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_max_response() -> ByteSize {
    ByteSize(8 << 20)
}

impl LlmConfig {
    /// A configuration for `base_url` with every other field at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: Some(base_url.into()),
            api_key_env: None,
            model_map: BTreeMap::new(),
            timeout: default_timeout(),
            retries: default_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            max_response_bytes: default_max_response(),
            cache: CacheMode::default(),
            cache_dir: None,
            replay: false,
            prices: BTreeMap::new(),
        }
    }

    /// Parse and check configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: LlmConfig =
            toml::from_str(text).map_err(|e| Error::invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        config.check().map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Read a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The host's configuration: the file `$VIVARIUM_LLM_CONFIG` names,
    /// else `<home>/llm.toml`, else a bare one from `$VIVARIUM_LLM_BASE_URL`
    /// (with `$VIVARIUM_LLM_API_KEY_ENV` naming the key's variable); `None`
    /// when none is there. `$VIVARIUM_LLM_REPLAY=1` turns replay on in any
    /// of them (and alone gives a replay-only configuration).
    pub fn discover(home: &Home) -> Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = if let Some(path) = var("VIVARIUM_LLM_CONFIG") {
            Some(Self::load(Path::new(&path))?)
        } else if home.root().join(CONFIG_FILE).is_file() {
            Some(Self::load(&home.root().join(CONFIG_FILE))?)
        } else if let Some(url) = var("VIVARIUM_LLM_BASE_URL") {
            let mut c = Self::new(url);
            c.api_key_env = var("VIVARIUM_LLM_API_KEY_ENV");
            c.check().map_err(|e| Error::invalid(format!("$VIVARIUM_LLM_BASE_URL: {e}")))?;
            Some(c)
        } else {
            None
        };
        if matches!(var("VIVARIUM_LLM_REPLAY").as_deref(), Some("1" | "true" | "yes")) {
            let c = config.get_or_insert_with(|| Self { base_url: None, ..Self::new("") });
            c.replay = true;
        }
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        match &self.base_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("base_url `{url}` must start with http:// or https://"));
                }
                reqwest::Url::parse(url).map_err(|e| format!("base_url `{url}` is not a URL: {e}"))?;
            }
            None if !self.replay => return Err("base_url is required unless replay = true".into()),
            None => {}
        }
        if let Some(name) = &self.api_key_env {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!("api_key_env `{name}` is not an environment variable name"));
            }
        }
        if self.timeout.0.is_zero() {
            return Err("timeout must be above 0".into());
        }
        for (model, p) in &self.prices {
            for (side, v) in [("prompt", p.prompt), ("completion", p.completion)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "prices.\"{model}\".{side} = {v} is not a price; write USD per million tokens, 0 or more"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The price of `provider_model`, if `prices` names it.
    pub fn price(&self, provider_model: &str) -> Option<&Price> {
        self.prices.get(provider_model)
    }

    fn url(&self) -> Option<String> {
        self.base_url.as_ref().map(|b| format!("{}/chat/completions", b.trim_end_matches('/')))
    }
}

/// A secret that never prints.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

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

    /// Record one live request for `budget` unless `per_minute` were
    /// reached in the last minute.
    fn take_rate(&self, budget: &str, per_minute: u32) -> bool {
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

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| d.join(&digest[..2]).join(format!("{digest}.json")))
    }

    fn cache_get(&self, digest: &str) -> Option<Completion> {
        let path = self.cache_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("response")?.clone()).ok()
    }

    fn cache_put(&self, digest: &str, body: &[u8], c: &Completion) {
        let Some(path) = self.cache_path(digest) else { return };
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let record = json!({ "digest": digest, "request": request, "response": c });
        let bytes = serde_json::to_vec_pretty(&record).expect("json serializes");
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!("llm cache: cannot create {}: {e}", dir.display());
                return;
            }
        }
        if let Err(e) = crate::fsio::write_atomic(&path, &bytes) {
            tracing::warn!("llm cache: cannot write {}: {e}", path.display());
        }
    }

    /// Send `body` with retries; see the module docs.
    async fn send(&self, body: &[u8], deadline: Option<Instant>) -> std::result::Result<(Completion, u32), Failure> {
        let Some(url) = self.config.url() else {
            return Err(Failure::unavailable("no base_url is configured on this host", false, 0));
        };
        if let (Some(name), None) = (&self.config.api_key_env, &self.key) {
            return Err(Failure::unavailable(
                format!("the host's API key variable {name} is not set; ask the operator"),
                false,
                0,
            ));
        }
        let retries = self.config.retries;
        let mut last = String::new();
        let mut maybe_billed = false;
        let mut attempts = 0;
        for attempt in 0..=retries {
            attempts += 1;
            let mut req = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.config.timeout.0)
                .body(body.to_vec());
            if let Some(Secret(k)) = &self.key {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {k}"));
            }
            let mut retry_after = None;
            match req.send().await {
                Err(e) => {
                    maybe_billed |= e.is_timeout();
                    last = self.scrub(&describe(&e));
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return match read_bounded(resp, self.config.max_response_bytes.bytes()).await {
                            Ok(bytes) => match parse_completion(&bytes) {
                                Ok(c) => Ok((c, attempts)),
                                Err(why) if why.starts_with(BAD_TOOL_CALLS) => Err(Failure {
                                    kind: FailKind::BadResponse,
                                    message: format!("the provider's answer breaks the protocol: {}", self.scrub(&why)),
                                    maybe_billed: true,
                                    attempts,
                                }),
                                Err(why) => Err(Failure::unavailable(
                                    format!("the provider's response is malformed: {}", self.scrub(&why)),
                                    true,
                                    attempts,
                                )),
                            },
                            Err(ReadError::TooLarge(n)) => Err(Failure::unavailable(
                                format!("the provider's response is over {n} bytes; it was cut off"),
                                true,
                                attempts,
                            )),
                            Err(ReadError::Io(why)) => Err(Failure::unavailable(
                                format!("reading the provider's response failed: {}", self.scrub(&why)),
                                true,
                                attempts,
                            )),
                        };
                    }
                    if status.as_u16() == 429 || status.is_server_error() {
                        retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let text = error_text(resp, 4096).await;
                        last = format!("the provider answered {status}: {}", self.scrub(&text));
                    } else {
                        let text = error_text(resp, 4096).await;
                        let msg = format!("the provider refused the request with {status}: {}", self.scrub(&text));
                        return Err(if matches!(status.as_u16(), 400 | 413 | 422) {
                            Failure { kind: FailKind::InvalidRequest, message: msg, maybe_billed: false, attempts }
                        } else {
                            Failure::unavailable(msg, false, attempts)
                        });
                    }
                }
            }
            if attempt == retries {
                break;
            }
            let exp = self.config.backoff.0.saturating_mul(1u32 << attempt.min(16));
            let wait = retry_after.unwrap_or(exp).min(self.config.max_backoff.0);
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                last = format!("{last}; no retry: the call's deadline would pass");
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(Failure::unavailable(format!("after {attempts} attempt(s): {last}"), maybe_billed, attempts))
    }
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&format!(": {s}"));
        src = s.source();
    }
    text
}

async fn error_text(mut resp: reqwest::Response, cap: usize) -> String {
    let mut out = Vec::new();
    while out.len() < cap {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(cap - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum ReadError {
    TooLarge(u64),
    Io(String),
}

async fn read_bounded(mut resp: reqwest::Response, cap: u64) -> std::result::Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(ReadError::TooLarge(cap));
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() as u64 + c.len() as u64 > cap {
                    return Err(ReadError::TooLarge(cap));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ReadError::Io(describe(&e))),
        }
    }
}

/// A completion as answered (and as cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Completion {
    content: String,
    /// Absent from cache files written before tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    model: String,
    finish_reason: String,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

fn parse_completion(bytes: &[u8]) -> std::result::Result<Completion, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| "no `choices[0]` in the response".to_string())?;
    let content = match choice.get("message").and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err("`choices[0].message.content` is not a string".into()),
    };
    let tool_calls = parse_tool_calls(choice.get("message").and_then(|m| m.get("tool_calls")))
        .map_err(|why| format!("{BAD_TOOL_CALLS}{why}"))?;
    let usage = v.get("usage");
    let count = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64);
    Ok(Completion {
        content,
        tool_calls,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).unwrap_or("unknown").to_string(),
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Unavailable,
    InvalidRequest,
    BadResponse,
}

#[derive(Debug)]
struct Failure {
    kind: FailKind,
    message: String,
    maybe_billed: bool,
    attempts: u32,
}

impl Failure {
    fn unavailable(message: impl Into<String>, maybe_billed: bool, attempts: u32) -> Self {
        Self { kind: FailKind::Unavailable, message: message.into(), maybe_billed, attempts }
    }
}

/// The ledger key of a variant's budget in a run (shared with the
/// `trainer`, so it lives with the ledger).
pub use crate::ledger::budget_key;

/// The `budget-exhausted` text of a request refused for dollars: the
/// request's worst case, how it was reckoned, and what is left of which budget.
fn dollars_refusal(e: &Exceeded, prompt: u64, max_tokens: u32, p: &Price) -> String {
    let whose = match e.scope {
        Scope::Grant => "this variant's dollar budget (llm.usd)",
        Scope::Run => "the run's dollar budget (budget.usd)",
    };
    format!(
        "this request may cost up to {} (about {prompt} prompt tokens at ${}/M + {max_tokens} max completion tokens at ${}/M); \
         {} of {whose} of {} is left",
        Usd(e.asked),
        p.prompt,
        p.completion,
        Usd(e.left()),
        Usd(e.limit)
    )
}

/// An estimate of the prompt tokens of `messages`: a quarter token per
/// byte, rounded up, plus 4 per message and 3 for the reply's priming.
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    3 + messages.into_iter().map(|m| (m.len() as u64).div_ceil(4) + 4).sum::<u64>()
}

/// One chat request in the host's terms, from either version of the
/// interface (0.1.0 has no tools and no `tool` role).
#[derive(Debug, Clone)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    tools: Vec<ToolSpec>,
    tool_choice: ToolChoice,
    max_tokens: u32,
    temperature: Option<f32>,
}

#[derive(Debug, Clone)]
struct ChatMessage {
    role: &'static str,
    content: String,
    tool_calls: Vec<ToolCall>,
    tool_call_id: Option<String>,
}

/// A tool call as the provider answered it (and as the cache keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Clone)]
struct ToolSpec {
    name: String,
    description: String,
    parameters: String,
}

#[derive(Debug, Clone, PartialEq)]
enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl ChatMessage {
    /// The OpenAI shape: `tool_calls` and `tool_call_id` only when present,
    /// so a message without them is exactly what 0.1.0 sent.
    fn to_json(&self) -> Value {
        let mut m = json!({ "role": self.role, "content": self.content });
        if !self.tool_calls.is_empty() {
            if self.content.is_empty() {
                m["content"] = Value::Null;
            }
            m["tool_calls"] = self
                .tool_calls
                .iter()
                .map(
                    |c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}),
                )
                .collect();
        }
        if let Some(id) = &self.tool_call_id {
            m["tool_call_id"] = json!(id);
        }
        m
    }
}

impl ChatRequest {
    /// Bytes the request carries, what `max_request_bytes` bounds: every
    /// text of every message, call and tool, plus 16 per message.
    fn size(&self) -> u64 {
        let calls = |m: &ChatMessage| -> u64 {
            m.tool_calls.iter().map(|c| (c.id.len() + c.name.len() + c.arguments.len()) as u64 + 16).sum()
        };
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| m.content.len() as u64 + 16 + calls(m) + m.tool_call_id.as_ref().map_or(0, |i| i.len() as u64))
            .sum();
        let tools: u64 =
            self.tools.iter().map(|t| (t.name.len() + t.description.len() + t.parameters.len()) as u64 + 16).sum();
        messages + tools
    }

    /// The texts the prompt is made of, for the token estimate.
    fn prompt_texts(&self) -> impl Iterator<Item = &str> {
        self.messages
            .iter()
            .flat_map(|m| {
                std::iter::once(m.content.as_str())
                    .chain(m.tool_calls.iter().flat_map(|c| [c.name.as_str(), c.arguments.as_str()]))
            })
            .chain(self.tools.iter().flat_map(|t| [t.name.as_str(), t.description.as_str(), t.parameters.as_str()]))
    }
}

/// A tool name the OpenAI API accepts.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The request's `tools` and `tool_choice` in the OpenAI shape; `None`
/// when no tool is offered and the choice is the default.
fn tools_json(tools: &[ToolSpec], choice: &ToolChoice) -> std::result::Result<Option<(Value, Value)>, String> {
    if tools.is_empty() {
        return match choice {
            ToolChoice::Auto | ToolChoice::None => Ok(None),
            _ => Err("tool-choice asks for a tool call, but no tool is offered".into()),
        };
    }
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if !valid_tool_name(&t.name) {
            let name: String = t.name.chars().take(64).collect();
            return Err(format!("tools[{i}]: the name {name:?} is not 1-64 letters, digits, `_` or `-`"));
        }
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("tools[{i}]: the tool {} is offered twice", t.name));
        }
        let parameters: Value = if t.parameters.trim().is_empty() {
            json!({"type": "object", "properties": {}})
        } else {
            serde_json::from_str(&t.parameters)
                .map_err(|e| format!("tools[{i}] ({}): parameters are not JSON: {e}", t.name))?
        };
        if !parameters.is_object() {
            return Err(format!("tools[{i}] ({}): parameters must be a JSON Schema object", t.name));
        }
        out.push(json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": parameters}}));
    }
    let choice = match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Named(n) => {
            if !tools.iter().any(|t| &t.name == n) {
                let name: String = n.chars().take(64).collect();
                return Err(format!("tool-choice names {name:?}, which is not offered"));
            }
            json!({"type": "function", "function": {"name": n}})
        }
    };
    Ok(Some((Value::Array(out), choice)))
}

/// Why the conversation is not one the protocol allows, if it is not: a
/// `tool` message must answer a call an earlier assistant message made;
/// only assistant messages carry calls.
fn check_messages(messages: &[ChatMessage]) -> Option<String> {
    let mut calls: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if !m.tool_calls.is_empty() && m.role != "assistant" {
            return Some(format!("messages[{i}]: only assistant messages carry tool calls"));
        }
        for c in &m.tool_calls {
            if c.id.is_empty() || !valid_tool_name(&c.name) {
                return Some(format!("messages[{i}]: a tool call needs an id and a valid tool name"));
            }
            calls.push(&c.id);
        }
        match (m.role, &m.tool_call_id) {
            ("tool", None) => return Some(format!("messages[{i}]: a tool message needs the tool-call-id it answers")),
            ("tool", Some(id)) if !calls.contains(&id.as_str()) => {
                let id: String = id.chars().take(64).collect();
                return Some(format!("messages[{i}]: tool-call-id {id:?} answers no earlier tool call"));
            }
            ("tool", Some(_)) => {}
            (_, Some(_)) => return Some(format!("messages[{i}]: only tool messages carry a tool-call-id")),
            (_, None) => {}
        }
    }
    None
}

/// The prefix of a [`parse_completion`] error about `tool_calls`.
const BAD_TOOL_CALLS: &str = "malformed `tool_calls`: ";

/// `message.tool_calls` of an answer: absent or null is none; otherwise
/// an array of `{"id", "type": "function", "function": {"name",
/// "arguments"}}` (arguments as a string, or an object some servers send).
fn parse_tool_calls(v: Option<&Value>) -> std::result::Result<Vec<ToolCall>, String> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("not an array".into()),
    };
    if items.len() > MAX_TOOL_CALLS {
        return Err(format!("{} calls; at most {MAX_TOOL_CALLS} are accepted", items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = c.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
            let f = c.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|s| !s.is_empty());
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("function");
            let arguments = match f.and_then(|f| f.get("arguments")) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(o @ Value::Object(_)) => Some(o.to_string()),
                None | Some(Value::Null) => Some(String::new()),
                Some(_) => None,
            };
            match (id, name, kind, arguments) {
                (Some(id), Some(name), "function", Some(arguments)) => {
                    Ok(ToolCall { id: id.to_string(), name: name.to_string(), arguments })
                }
                _ => Err(format!(
                    "call {i} is not {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}"
                )),
            }
        })
        .collect()
}

/// What a `chat` answers, before it is put in either version's types.
#[derive(Debug)]
struct Reply {
    content: String,
    tool_calls: Vec<ToolCall>,
    model: String,
    prompt_tokens: u32,
    completion_tokens: u32,
    finish_reason: String,
}

impl Reply {
    fn into_v1(self) -> wit::Response {
        wit::Response {
            content: self.content,
            model: self.model,
            usage: wit::Usage { prompt_tokens: self.prompt_tokens, completion_tokens: self.completion_tokens },
            finish_reason: self.finish_reason,
        }
    }

    fn into_v2(self) -> wit2::Response {
        wit2::Response {
            content: self.content,
            tool_calls: self
                .tool_calls
                .into_iter()
                .map(|c| wit2::ToolCall { id: c.id, name: c.name, arguments: c.arguments })
                .collect(),
            model: self.model,
            usage: wit2::Usage { prompt_tokens: self.prompt_tokens, completion_tokens: self.completion_tokens },
            finish_reason: self.finish_reason,
        }
    }
}

/// Why a `chat` failed, before it is put in either version's types.
#[derive(Debug)]
enum Refusal {
    Denied(String),
    BudgetExhausted(String),
    RateLimited(String),
    Unavailable(String),
    InvalidRequest(String),
    BadResponse(String),
}

impl Refusal {
    /// 0.1.0 has no `bad-response`: it is `unavailable` there.
    fn into_v1(self) -> wit::Error {
        match self {
            Refusal::Denied(m) => wit::Error::Denied(m),
            Refusal::BudgetExhausted(m) => wit::Error::BudgetExhausted(m),
            Refusal::RateLimited(m) => wit::Error::RateLimited(m),
            Refusal::Unavailable(m) | Refusal::BadResponse(m) => wit::Error::Unavailable(m),
            Refusal::InvalidRequest(m) => wit::Error::InvalidRequest(m),
        }
    }

    fn into_v2(self) -> wit2::Error {
        match self {
            Refusal::Denied(m) => wit2::Error::Denied(m),
            Refusal::BudgetExhausted(m) => wit2::Error::BudgetExhausted(m),
            Refusal::RateLimited(m) => wit2::Error::RateLimited(m),
            Refusal::Unavailable(m) => wit2::Error::Unavailable(m),
            Refusal::InvalidRequest(m) => wit2::Error::InvalidRequest(m),
            Refusal::BadResponse(m) => wit2::Error::BadResponse(m),
        }
    }
}

/// One request, as the use record shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmRequestRecord {
    /// sha256 of the exact request body (the cache key); `None` when
    /// refused before one was built.
    pub digest: Option<String>,
    /// The model the guest asked for.
    pub model: String,
    /// The model name sent to the provider.
    pub provider_model: Option<String>,
    /// `live`, `cache`, `replay`, or `none` when nothing was answered.
    pub source: &'static str,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Prompt tokens charged.
    pub prompt_tokens: u64,
    /// Completion tokens charged.
    pub completion_tokens: u64,
    /// Dollars charged (at the provider model's price; absent when free).
    #[serde(skip_serializing_if = "Usd::is_zero")]
    pub usd: Usd,
    /// Time in the service, milliseconds.
    pub latency_ms: u64,
    /// `ok`, or the error's name (`denied`, `budget-exhausted`,
    /// `rate-limited`, `unavailable`, `invalid-request`, `bad-response`).
    pub outcome: &'static str,
    /// The names of the tools the request offered (the first 16).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools_offered: Vec<String>,
    /// How many tools the request offered.
    #[serde(skip_serializing_if = "is_zero")]
    pub tools_offered_count: u64,
    /// The names of the tools the model called (the first 16).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools_called: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Usage counters of the llm service for one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmUsage {
    /// The ledger key the budget was charged to.
    pub budget: String,
    /// `chat` calls.
    pub requests: u64,
    /// Answers from the cache (replay included).
    pub cache_hits: u64,
    /// HTTP attempts sent to the provider.
    pub attempts: u64,
    /// `chat` calls refused before sending (denied, invalid, budget, rate).
    pub refused: u64,
    /// `chat` calls that ended `unavailable`.
    pub failed: u64,
    /// Prompt tokens charged.
    pub prompt_tokens: u64,
    /// Completion tokens charged.
    pub completion_tokens: u64,
    /// Tokens reserved by a request the deadline cut off (charged at the
    /// estimate: the provider may have billed it).
    pub pending_tokens: u64,
    /// Dollars charged (settled requests; absent when nothing was priced).
    #[serde(skip_serializing_if = "Usd::is_zero")]
    pub usd: Usd,
    /// Dollars reserved by a request the deadline cut off (its worst case).
    #[serde(skip_serializing_if = "Usd::is_zero")]
    pub pending_usd: Usd,
    /// Time spent in the service, milliseconds.
    pub latency_ms: u64,
    /// One record per request, the first [`MAX_RECORDS_PER_CALL`].
    pub calls: Vec<LlmRequestRecord>,
    /// Records left out past that.
    pub calls_dropped: u64,
}

impl LlmUsage {
    /// Prompt plus completion tokens charged in this call (pending included).
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens + self.pending_tokens
    }

    /// Dollars charged in this call (pending included).
    pub fn dollars(&self) -> Usd {
        Usd(self.usd.0 + self.pending_usd.0)
    }
}

struct Inner {
    grant: Option<LlmGrant>,
    service: Option<Arc<LlmService>>,
    budget: String,
    /// The run the call is in (`-`: none), whose dollar budget is `run_usd`.
    run: String,
    run_usd: Option<Usd>,
    call_cap: Option<u64>,
    deadline: Option<Instant>,
    usage: Mutex<LlmUsage>,
}

/// Per-call state of the llm service; cheap to clone (shared counters).
#[derive(Clone)]
pub struct LlmState {
    inner: Arc<Inner>,
    /// The model every request of this call goes to, whatever the guest
    /// names ([`LlmState::routed_to`]).
    route: Option<Arc<str>>,
}

impl fmt::Debug for LlmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmState").field("budget", &self.inner.budget).finish_non_exhaustive()
    }
}

/// A reservation shown as pending in the call's usage until it is settled.
/// Dropped unsettled (the deadline cut the request off), the reservation
/// stays charged in the ledger at its worst case and stays visible as
/// `pending_tokens` and `pending_usd`.
struct Pending<'a> {
    state: &'a LlmState,
    tokens: u64,
    usd: Usd,
}

impl Pending<'_> {
    fn disarm(self) {
        let (tokens, usd) = (self.tokens, self.usd);
        self.state.count(|u| {
            u.pending_tokens -= tokens;
            u.pending_usd.0 -= usd.0;
        });
    }
}

impl LlmState {
    /// State for one call: `grant` (`None`: not granted, not linked), the
    /// host's service (`None`: no LLM configured), the budget's ledger key,
    /// an optional cap on this call's tokens, and the call's deadline.
    pub fn new(
        grant: Option<LlmGrant>,
        service: Option<Arc<LlmService>>,
        budget: String,
        call_cap: Option<u64>,
        deadline: Option<Instant>,
    ) -> Self {
        Self::with_run_budget(grant, service, budget, None, call_cap, deadline)
    }

    /// [`LlmState::new`] in a run with a dollar budget: `run_usd` is
    /// `(run, budget.usd)`, held in the ledger against every variant of the
    /// run together.
    pub fn with_run_budget(
        grant: Option<LlmGrant>,
        service: Option<Arc<LlmService>>,
        budget: String,
        run_usd: Option<(Option<String>, Usd)>,
        call_cap: Option<u64>,
        deadline: Option<Instant>,
    ) -> Self {
        let usage = LlmUsage { budget: budget.clone(), ..LlmUsage::default() };
        let (run, run_usd) = match run_usd {
            Some((run, usd)) => (run.unwrap_or_else(|| "-".into()), Some(usd)),
            None => ("-".into(), None),
        };
        Self {
            inner: Arc::new(Inner {
                grant,
                service,
                budget,
                run,
                run_usd,
                call_cap,
                deadline,
                usage: Mutex::new(usage),
            }),
            route: None,
        }
    }

    /// This state with every request routed to `model` (`None`: the model
    /// the guest names). The grant and the host's model map are checked
    /// against the routed model, as if the guest had named it.
    pub fn routed_to(mut self, model: Option<String>) -> Self {
        self.route = model.map(Arc::from);
        self
    }

    /// The usage counters so far; `None` when the service is not granted.
    pub fn usage(&self) -> Option<LlmUsage> {
        self.inner.grant.as_ref()?;
        Some(self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn count(&self, f: impl FnOnce(&mut LlmUsage)) {
        f(&mut self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn record(&self, r: LlmRequestRecord) {
        self.count(|u| {
            u.latency_ms += r.latency_ms;
            u.prompt_tokens += r.prompt_tokens;
            u.completion_tokens += r.completion_tokens;
            u.usd.0 += r.usd.0;
            if u.calls.len() < MAX_RECORDS_PER_CALL {
                u.calls.push(r);
            } else {
                u.calls_dropped += 1;
            }
        });
    }

    /// Tokens this call may still spend: the grant's budget left, within the
    /// call's cap.
    fn left(&self) -> u64 {
        let Some(grant) = &self.inner.grant else { return 0 };
        let spent = match &self.inner.service {
            Some(s) => s.spent(&self.inner.budget).unwrap_or(grant.tokens),
            None => 0,
        };
        let mut left = grant.tokens.saturating_sub(spent);
        if let Some(cap) = self.inner.call_cap {
            let used = self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).tokens();
            left = left.min(cap.saturating_sub(used));
        }
        left
    }

    async fn chat(&self, req: ChatRequest) -> std::result::Result<Reply, (Refusal, LlmRequestRecord)> {
        let req = match &self.route {
            Some(m) => ChatRequest { model: m.to_string(), ..req },
            None => req,
        };
        let started = Instant::now();
        let mut rec = LlmRequestRecord {
            digest: None,
            model: req.model.chars().take(128).collect(),
            provider_model: None,
            source: "none",
            attempts: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            usd: Usd(0),
            latency_ms: 0,
            outcome: "ok",
            tools_offered: req
                .tools
                .iter()
                .take(MAX_AUDITED_TOOLS)
                .map(|t| t.name.chars().take(64).collect())
                .collect(),
            tools_offered_count: req.tools.len() as u64,
            tools_called: Vec::new(),
        };
        macro_rules! fail {
            ($kind:ident, $name:literal, $msg:expr) => {{
                rec.outcome = $name;
                rec.latency_ms = started.elapsed().as_millis() as u64;
                return Err((Refusal::$kind($msg), rec));
            }};
        }
        let Some(grant) = self.inner.grant.clone() else {
            fail!(Denied, "denied", "the llm service is not granted".into())
        };
        let Some(service) = self.inner.service.clone() else {
            fail!(Unavailable, "unavailable", "no LLM is configured on this host".into())
        };
        if !grant.allows_model(&req.model) {
            fail!(Denied, "denied", format!("model {:?} is not in this variant's grant", rec.model))
        }
        let provider_model = if service.config.model_map.is_empty() {
            req.model.clone()
        } else {
            match service.config.model_map.get(&req.model) {
                Some(m) => m.clone(),
                None => fail!(Denied, "denied", format!("model {:?} is not offered by this host", rec.model)),
            }
        };
        rec.provider_model = Some(provider_model.clone());
        if req.messages.is_empty() {
            fail!(InvalidRequest, "invalid-request", "the request has no messages".into())
        }
        if req.max_tokens == 0 {
            fail!(InvalidRequest, "invalid-request", "max-tokens must be at least 1".into())
        }
        if req.tools.len() > MAX_TOOLS {
            fail!(
                InvalidRequest,
                "invalid-request",
                format!("the request offers {} tools; at most {MAX_TOOLS} may be offered", req.tools.len())
            )
        }
        let tools = match tools_json(&req.tools, &req.tool_choice) {
            Ok(t) => t,
            Err(why) => fail!(InvalidRequest, "invalid-request", why),
        };
        if let Some(why) = check_messages(&req.messages) {
            fail!(InvalidRequest, "invalid-request", why)
        }
        let size: u64 = req.size();
        if size > grant.max_request_bytes.bytes() {
            fail!(
                InvalidRequest,
                "invalid-request",
                format!("the request is {size} bytes; the grant allows {} bytes", grant.max_request_bytes.bytes())
            )
        }
        let temperature = match req.temperature {
            None => None,
            Some(t) if t.is_finite() && (0.0..=2.0).contains(&t) => {
                Some(t.to_string().parse::<f64>().unwrap_or(t as f64))
            }
            Some(t) => fail!(InvalidRequest, "invalid-request", format!("temperature {t} is not between 0 and 2")),
        };
        let messages: Vec<Value> = req.messages.iter().map(ChatMessage::to_json).collect();
        let mut body = json!({
            "model": provider_model,
            "messages": messages,
            "max_tokens": req.max_tokens,
            "stream": false,
        });
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        // Without tools the body is what 0.1.0 sent (the same cache keys).
        if let Some((tools, choice)) = tools {
            body["tools"] = tools;
            body["tool_choice"] = choice;
        }
        let body = serde_json::to_vec(&body).expect("json serializes");
        let digest = hex::encode(Sha256::digest(&body));
        rec.digest = Some(digest.clone());

        // Budget: refuse before anything is sent.
        let estimate_prompt = estimate_prompt_tokens(req.prompt_texts());
        let estimate = estimate_prompt + u64::from(req.max_tokens);
        if let Some(cap) = self.inner.call_cap {
            let used = self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).tokens();
            if used + estimate > cap {
                fail!(
                    BudgetExhausted,
                    "budget-exhausted",
                    format!(
                        "this request may use {estimate} tokens (about {estimate_prompt} prompt + {} max); {} of this call's {cap} are left",
                        req.max_tokens,
                        cap.saturating_sub(used)
                    )
                )
            }
        }
        // Dollars: the worst case is the estimated prompt and every
        // `max-tokens` at the provider model's prices. A model without a
        // price cannot be bounded by a dollar budget, so it is refused under one.
        let price = service.config.price(&provider_model).copied();
        let run_usd = self.inner.run_usd;
        if price.is_none() && (grant.usd.is_some() || run_usd.is_some()) {
            let m: String = provider_model.chars().take(128).collect();
            fail!(
                Denied,
                "denied",
                format!(
                    "model {m:?} has no price in the host's llm.toml, so a dollar budget cannot bound it; \
                     the operator adds [prices.{m:?}] with prompt and completion in USD per million tokens \
                     (0 for a free local model)"
                )
            )
        }
        let cost = |prompt: u64, completion: u64| price.map_or(Usd(0), |p| p.cost(prompt, completion));
        let worst_usd = cost(estimate_prompt, u64::from(req.max_tokens));
        let mut charges = vec![Charge {
            resource: Resource::LlmTokens,
            amount: estimate,
            limit: Some(grant.tokens),
            run_limit: None,
        }];
        if price.is_some() {
            charges.push(Charge {
                resource: Resource::Usd,
                amount: worst_usd.0,
                limit: grant.usd.map(|u| u.0),
                run_limit: run_usd.map(|u| (self.inner.run.as_str(), u.0)),
            });
        }
        match service.ledger.reserve(&self.inner.budget, &charges) {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.resource == Resource::Usd => {
                let p = price.unwrap_or(Price { prompt: 0.0, completion: 0.0 });
                fail!(BudgetExhausted, "budget-exhausted", dollars_refusal(&e, estimate_prompt, req.max_tokens, &p))
            }
            Ok(Err(e)) => fail!(
                BudgetExhausted,
                "budget-exhausted",
                format!(
                    "this request may use {estimate} tokens (about {estimate_prompt} prompt + {} max); {} of the budget of {} are left",
                    req.max_tokens,
                    e.left(),
                    e.limit
                )
            ),
            Err(e) => {
                tracing::warn!("llm service: {e}");
                fail!(Unavailable, "unavailable", "the host's budget ledger failed".into())
            }
        }
        self.count(|u| {
            u.pending_tokens += estimate;
            u.pending_usd.0 += worst_usd.0;
        });
        let pending = Pending { state: self, tokens: estimate, usd: worst_usd };
        let settle = |tokens: u64, usd: Usd| {
            let budget = &self.inner.budget;
            let settled =
                service.ledger.settle(budget, Resource::LlmTokens, estimate, tokens).and_then(|()| match price {
                    Some(_) => service.ledger.settle(budget, Resource::Usd, worst_usd.0, usd.0),
                    None => Ok(()),
                });
            if let Err(e) = settled {
                tracing::warn!("llm service: {e}");
            }
        };
        let charge = |c: &Completion| {
            let prompt = c.prompt_tokens.unwrap_or(estimate_prompt);
            let completion = c.completion_tokens.unwrap_or_else(|| (c.content.len() as u64).div_ceil(4));
            (prompt, completion)
        };
        let respond = |c: Completion, prompt: u64, completion: u64| Reply {
            content: c.content,
            tool_calls: c.tool_calls,
            model: c.model,
            prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
            finish_reason: c.finish_reason,
        };
        // A call of a tool that was not offered breaks the protocol; the
        // answer was charged all the same.
        let offered = |c: &Completion| -> std::result::Result<(), String> {
            for call in &c.tool_calls {
                if !req.tools.iter().any(|t| t.name == call.name) {
                    let name: String = call.name.chars().take(64).collect();
                    return Err(format!("the model called the tool {name:?}, which the request did not offer"));
                }
            }
            Ok(())
        };
        let called = |c: &Completion| {
            c.tool_calls
                .iter()
                .take(MAX_AUDITED_TOOLS)
                .map(|t| t.name.chars().take(64).collect())
                .collect::<Vec<String>>()
        };

        // The cache, and replay.
        let replay = service.config.replay;
        if replay || service.config.cache == CacheMode::ReadWrite {
            if let Some(c) = service.cache_get(&digest) {
                let (prompt, completion) = charge(&c);
                settle(prompt + completion, cost(prompt, completion));
                pending.disarm();
                rec.source = if replay { "replay" } else { "cache" };
                rec.prompt_tokens = prompt;
                rec.completion_tokens = completion;
                rec.usd = cost(prompt, completion);
                rec.tools_called = called(&c);
                self.count(|u| u.cache_hits += 1);
                if let Err(why) = offered(&c) {
                    fail!(BadResponse, "bad-response", why)
                }
                rec.latency_ms = started.elapsed().as_millis() as u64;
                self.record(rec);
                return Ok(respond(c, prompt, completion));
            }
        }
        if replay {
            settle(0, Usd(0));
            pending.disarm();
            fail!(Unavailable, "unavailable", format!("replay: no recorded response for request {digest}"))
        }
        if !service.take_rate(&self.inner.budget, grant.requests_per_minute) {
            settle(0, Usd(0));
            pending.disarm();
            fail!(
                RateLimited,
                "rate-limited",
                format!("the grant allows {} requests per minute", grant.requests_per_minute)
            )
        }
        match service.send(&body, self.inner.deadline).await {
            Ok((c, attempts)) => {
                let (prompt, completion) = charge(&c);
                settle(prompt + completion, cost(prompt, completion));
                pending.disarm();
                if service.config.cache != CacheMode::Off {
                    service.cache_put(&digest, &body, &c);
                }
                rec.source = "live";
                rec.attempts = attempts;
                rec.prompt_tokens = prompt;
                rec.completion_tokens = completion;
                rec.usd = cost(prompt, completion);
                rec.tools_called = called(&c);
                self.count(|u| u.attempts += u64::from(attempts));
                if let Err(why) = offered(&c) {
                    fail!(BadResponse, "bad-response", why)
                }
                rec.latency_ms = started.elapsed().as_millis() as u64;
                self.record(rec);
                Ok(respond(c, prompt, completion))
            }
            Err(f) => {
                // Refund unless the provider may have done (and billed) the work.
                let (kept, kept_usd) = if f.maybe_billed { (estimate, worst_usd) } else { (0, Usd(0)) };
                settle(kept, kept_usd);
                pending.disarm();
                rec.attempts = f.attempts;
                rec.prompt_tokens = kept;
                rec.usd = kept_usd;
                self.count(|u| u.attempts += u64::from(f.attempts));
                match f.kind {
                    FailKind::Unavailable => fail!(Unavailable, "unavailable", f.message),
                    FailKind::InvalidRequest => fail!(InvalidRequest, "invalid-request", f.message),
                    FailKind::BadResponse => fail!(BadResponse, "bad-response", f.message),
                }
            }
        }
    }
}

impl LlmState {
    /// One `chat` of either interface version, counted.
    async fn chat_counted(&self, req: ChatRequest) -> std::result::Result<Reply, Refusal> {
        self.count(|u| u.requests += 1);
        match LlmState::chat(self, req).await {
            Ok(r) => Ok(r),
            Err((e, rec)) => {
                self.count(|u| match e {
                    Refusal::Unavailable(_) | Refusal::BadResponse(_) => u.failed += 1,
                    _ => u.refused += 1,
                });
                self.record(rec);
                Err(e)
            }
        }
    }
}

/// `vivarium:agent/llm@0.1.0`: text messages, no tools.
impl wit::Host for LlmState {
    async fn chat(&mut self, req: wit::Request) -> wasmtime::Result<Result<wit::Response, wit::Error>> {
        let req = ChatRequest {
            model: req.model,
            messages: req
                .messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: match m.role {
                        wit::Role::System => "system",
                        wit::Role::User => "user",
                        wit::Role::Assistant => "assistant",
                    },
                    content: m.content,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                })
                .collect(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            max_tokens: req.max_tokens,
            temperature: req.temperature,
        };
        Ok(self.chat_counted(req).await.map(Reply::into_v1).map_err(Refusal::into_v1))
    }

    async fn tokens_left(&mut self) -> wasmtime::Result<u64> {
        Ok(self.left())
    }
}

/// `vivarium:agent/llm@0.2.0`: multi-turn, tools, tool calls.
impl wit2::Host for LlmState {
    async fn chat(&mut self, req: wit2::Request) -> wasmtime::Result<Result<wit2::Response, wit2::Error>> {
        let req = ChatRequest {
            model: req.model,
            messages: req
                .messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: match m.role {
                        wit2::Role::System => "system",
                        wit2::Role::User => "user",
                        wit2::Role::Assistant => "assistant",
                        wit2::Role::Tool => "tool",
                    },
                    content: m.content,
                    tool_calls: m
                        .tool_calls
                        .into_iter()
                        .map(|c| ToolCall { id: c.id, name: c.name, arguments: c.arguments })
                        .collect(),
                    tool_call_id: m.tool_call_id,
                })
                .collect(),
            tools: req
                .tools
                .into_iter()
                .map(|t| ToolSpec { name: t.name, description: t.description, parameters: t.parameters })
                .collect(),
            tool_choice: match req.tool_choice {
                wit2::ToolChoice::Auto => ToolChoice::Auto,
                wit2::ToolChoice::None => ToolChoice::None,
                wit2::ToolChoice::Required => ToolChoice::Required,
                wit2::ToolChoice::Named(n) => ToolChoice::Named(n),
            },
            max_tokens: req.max_tokens,
            temperature: req.temperature,
        };
        Ok(self.chat_counted(req).await.map(Reply::into_v2).map_err(Refusal::into_v2))
    }

    async fn tokens_left(&mut self) -> wasmtime::Result<u64> {
        Ok(self.left())
    }
}

/// The `llm` service in the [registry](super::REGISTRY).
pub(crate) struct LlmFactor;

impl super::Service for LlmFactor {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn add_to_linker(
        &self,
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<LlmState>>(linker, |s| &mut s.services.llm)?;
        // Both versions: a 0.1.0 component and a 0.2.0 one share the service.
        wit2::add_to_linker::<_, wasmtime::component::HasSelf<LlmState>>(linker, |s| &mut s.services.llm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_checks() {
        let c = LlmConfig::parse(
            "base_url = \"http://127.0.0.1:8000/v1/\"\napi_key_env = \"MY_KEY\"\nretries = 1\n[models]\nsmall = \"qwen2.5:0.5b\"\n",
            "llm.toml",
        )
        .unwrap();
        assert_eq!(c.url().unwrap(), "http://127.0.0.1:8000/v1/chat/completions");
        assert_eq!(c.model_map["small"], "qwen2.5:0.5b");
        assert_eq!(c.timeout, default_timeout());
        assert_eq!(c.cache, CacheMode::ReadWrite);
        for bad in [
            "base_url = \"ftp://x\"",
            "api_key_env = \"A\"",
            "base_url = \"http://x\"\napi_key_env = \"BAD-NAME\"",
            "base_url = \"http://x\"\nsurprise = 1",
            "base_url = \"http://x\"\ncache = \"sometimes\"",
        ] {
            assert!(LlmConfig::parse(bad, "llm.toml").is_err(), "{bad}");
        }
        assert!(LlmConfig::parse("replay = true", "llm.toml").unwrap().replay);
    }

    #[test]
    fn parses_openai_responses() {
        let c = parse_completion(
            br#"{"id":"x","object":"chat.completion","model":"m-1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Completion {
                content: "hi".into(),
                tool_calls: vec![],
                model: "m-1".into(),
                finish_reason: "stop".into(),
                prompt_tokens: Some(9),
                completion_tokens: Some(2)
            }
        );
        assert!(parse_completion(b"{not json").unwrap_err().starts_with("not JSON"));
        assert!(parse_completion(br#"{"choices":[]}"#).is_err());
        assert!(parse_completion(br#"{"choices":[{"message":{"content":5}}]}"#).is_err());
        let bare = parse_completion(br#"{"choices":[{"message":{"content":null}}]}"#).unwrap();
        assert_eq!((bare.content.as_str(), bare.prompt_tokens), ("", None));
    }

    #[test]
    fn prices_parse_cost_and_refuse_negatives() {
        let c = LlmConfig::parse(
            "base_url = \"http://x/v1\"\n[prices.\"gpt-4o-mini\"]\nprompt = 0.15\ncompletion = 0.60\n",
            "llm.toml",
        )
        .unwrap();
        let p = c.price("gpt-4o-mini").unwrap();
        // 1M prompt tokens at $0.15 and 1M completion tokens at $0.60.
        assert_eq!(p.cost(1_000_000, 1_000_000), Usd::from_dollars(0.75).unwrap());
        // 1000 prompt + 500 completion: $0.00015 + $0.0003.
        assert_eq!(p.cost(1000, 500).to_string(), "$0.00045");
        assert!(c.price("other").is_none());
        let bad = LlmConfig::parse("base_url = \"http://x/v1\"\n[prices.m]\nprompt = -1\ncompletion = 0\n", "llm.toml")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("prices.\"m\".prompt = -1 is not a price"), "{bad}");
        assert!(LlmConfig::parse("base_url = \"http://x/v1\"\n[prices.m]\nprompt = 1\n", "llm.toml").is_err());
    }

    #[test]
    fn rate_window_and_scrubbing() {
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("VIVARIUM_LLM_UNIT_KEY", "sk-unit-secret") };
        let mut c = LlmConfig::new("http://127.0.0.1:9/v1");
        c.api_key_env = Some("VIVARIUM_LLM_UNIT_KEY".into());
        let s = LlmService::new(c, None, None).unwrap();
        assert!(s.take_rate("b", 2));
        assert!(s.take_rate("b", 2));
        assert!(!s.take_rate("b", 2));
        assert!(s.take_rate("c", 2));
        assert_eq!(s.scrub("bad key sk-unit-secret\x1b[0m"), "bad key [redacted]\u{FFFD}[0m");
        assert!(!format!("{s:?}").contains("sk-unit-secret"));
        assert_eq!(estimate_prompt_tokens(["abcd", "abcde"]), 3 + 1 + 4 + 2 + 4);
    }
}
