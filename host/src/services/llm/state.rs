//! Per-call state: the grant, the budget key, the call's caps and deadline,
//! the usage counters, and one `chat` through every check — the order the
//! module docs give — to the cache or the provider.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::FailKind;
use super::config::{CacheMode, Price};
use super::host::{Refusal, Reply};
use super::protocol::{check_messages, estimate_prompt_tokens, tools_json, ChatMessage, ChatRequest, Completion};
use super::LlmGrant;
use super::{LlmService, MAX_AUDITED_TOOLS, MAX_RECORDS_PER_CALL, MAX_TOOLS};
use crate::ledger::{Charge, Exceeded, Resource, Scope};
use crate::units::Usd;

/// The `budget-exhausted` text of a request refused for dollars: the
/// request's worst case, how it was reckoned, and what is left of which budget.
pub(super) fn dollars_refusal(e: &Exceeded, prompt: u64, max_tokens: u32, p: &Price) -> String {
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

pub(super) fn is_zero(n: &u64) -> bool {
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

pub(super) struct Inner {
    pub(super) grant: Option<LlmGrant>,
    pub(super) service: Option<Arc<LlmService>>,
    pub(super) budget: String,
    /// The run the call is in (`-`: none), whose dollar budget is `run_usd`.
    pub(super) run: String,
    pub(super) run_usd: Option<Usd>,
    pub(super) call_cap: Option<u64>,
    pub(super) deadline: Option<Instant>,
    pub(super) usage: Mutex<LlmUsage>,
}

/// Per-call state of the llm service; cheap to clone (shared counters).
#[derive(Clone)]
pub struct LlmState {
    pub(super) inner: Arc<Inner>,
    /// The model every request of this call goes to, whatever the guest
    /// names ([`LlmState::routed_to`]).
    pub(super) route: Option<Arc<str>>,
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
pub(super) struct Pending<'a> {
    pub(super) state: &'a LlmState,
    pub(super) tokens: u64,
    pub(super) usd: Usd,
}

impl Pending<'_> {
    pub(super) fn disarm(self) {
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

    pub(super) fn count(&self, f: impl FnOnce(&mut LlmUsage)) {
        f(&mut self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn record(&self, r: LlmRequestRecord) {
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
    pub(super) fn left(&self) -> u64 {
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

    pub(super) async fn chat(&self, req: ChatRequest) -> std::result::Result<Reply, (Refusal, LlmRequestRecord)> {
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
    pub(super) async fn chat_counted(&self, req: ChatRequest) -> std::result::Result<Reply, Refusal> {
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
