//! The `llm` service's capabilities: `llm = { models = [...], tokens = N,
//! … }` in `variant.toml`, its ceiling in `policy.toml`, and the grant
//! computed from both (names, a token budget, a request size and rate, and
//! an optional dollar budget).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::grant::list_allows;
use crate::caps::manifest::{any, de_names};
use crate::caps::resolve::{Builder, Source};
use crate::caps::service::{allowed_names, show_list, Budget, ServiceCaps};
use crate::units::{ByteSize, Usd};

/// `llm = { models = [...], tokens = N, max_request_bytes = SIZE, requests_per_minute = N, usd = DOLLARS }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmRequest {
    /// Model names, or `["*"]` (the default) for any the policy allows.
    #[serde(default = "any", deserialize_with = "de_names")]
    pub models: Vec<String>,
    /// Total token budget.
    pub tokens: u64,
    /// Largest single request; the policy's value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<ByteSize>,
    /// Request rate; the policy's value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Dollar budget at the host's prices; the policy's `usd` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Usd>,
}

/// The most of the `llm` service a grant may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmPolicy {
    /// Models that may be granted (`["*"]`, the default: any).
    #[serde(default = "any", deserialize_with = "de_names")]
    pub models: Vec<String>,
    /// The largest token budget.
    pub tokens: u64,
    /// The largest single request, and the value a manifest gets when it
    /// does not ask (default 256KiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// The highest request rate, and the default (60).
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    /// The largest dollar budget, and the one a manifest gets when it does
    /// not ask; `None`: the policy sets no dollar cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Usd>,
}

fn default_max_request_bytes() -> ByteSize {
    ByteSize(256 << 10)
}

fn default_requests_per_minute() -> u32 {
    60
}

/// The `llm` service: chat completions through the host (keys stay in the host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmGrant {
    /// Model names the variant may ask for, or `["*"]` for any the host maps.
    pub models: Vec<String>,
    /// Total tokens (prompt + completion) over the variant's life in this run.
    pub tokens: u64,
    /// The largest single request (all messages together).
    pub max_request_bytes: ByteSize,
    /// Requests per rolling minute.
    pub requests_per_minute: u32,
    /// Dollars (at the host's prices) over the variant's life in this run;
    /// `None`: no dollar cap of the grant's own. Left out when absent, so
    /// grants from before dollar budgets keep their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Usd>,
}

impl LlmGrant {
    /// Whether `model` may be requested.
    pub fn allows_model(&self, model: &str) -> bool {
        list_allows(&self.models, model)
    }
}

impl fmt::Display for LlmGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "models {}, tokens {}, max_request_bytes {}, requests_per_minute {}",
            show_list(&self.models),
            self.tokens,
            self.max_request_bytes,
            self.requests_per_minute
        )?;
        match self.usd {
            Some(u) => write!(f, ", usd {u}"),
            None => Ok(()),
        }
    }
}

impl ServiceCaps for LlmGrant {
    const NAME: &'static str = "llm";
    type Request = LlmRequest;
    type Policy = LlmPolicy;
    /// Absent from the built-in policy: it leaves the machine and costs money.
    type PolicyEntry = Option<LlmPolicy>;

    fn summary(r: &Self::Request) -> String {
        format!("models {}, tokens {}", show_list(&r.models), r.tokens)
    }

    fn grant(r: &Self::Request, p: &Self::Policy, b: &mut Builder) -> Option<Self> {
        let models = allowed_names::<Self>(r, "llm.models", &r.models, &p.models, "models", b)?;
        Some(LlmGrant {
            models,
            tokens: b.budget("llm.tokens", r.tokens, p.tokens),
            max_request_bytes: b.optional_budget("llm.max_request_bytes", r.max_request_bytes, p.max_request_bytes),
            requests_per_minute: b.optional_budget(
                "llm.requests_per_minute",
                r.requests_per_minute,
                p.requests_per_minute,
            ),
            // The policy's `usd` is a ceiling and, when the manifest names
            // none, what the variant gets: a dollar budget the operator set
            // is never dropped by leaving it out.
            usd: match (r.usd, p.usd) {
                (Some(r), Some(p)) => Some(b.budget("llm.usd", r, p)),
                (Some(r), None) => {
                    b.line("llm.usd", r, Source::Manifest, None);
                    Some(r)
                }
                (None, Some(p)) => {
                    b.line("llm.usd", p, Source::PolicyDefault, None);
                    Some(p)
                }
                (None, None) => None,
            },
        })
    }

    fn as_request(&self) -> Self::Request {
        LlmRequest {
            models: self.models.clone(),
            tokens: self.tokens,
            max_request_bytes: Some(self.max_request_bytes),
            requests_per_minute: Some(self.requests_per_minute),
            usd: self.usd,
        }
    }

    fn name_lists(&self) -> Vec<(&'static str, &[String])> {
        vec![("llm.models", &self.models)]
    }

    fn name_lists_mut(&mut self) -> Vec<&mut Vec<String>> {
        vec![&mut self.models]
    }

    fn budgets(&self) -> Vec<Budget> {
        vec![
            ("llm.tokens", self.tokens as u128, self.tokens.to_string()),
            ("llm.max_request_bytes", self.max_request_bytes.0 as u128, self.max_request_bytes.to_string()),
            ("llm.requests_per_minute", self.requests_per_minute as u128, self.requests_per_minute.to_string()),
            // No dollar cap is more than any.
            ("llm.usd", self.usd.map_or(u128::MAX, |u| u.0 as u128), self.usd.map_or("none".into(), |u| u.to_string())),
        ]
    }
}
