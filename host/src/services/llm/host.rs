//! The two versions of the `llm` interface over one service:
//! `vivarium:agent/llm@0.1.0` (text messages, no tools) and `@0.2.0`
//! (multi-turn, tools, tool calls), and the answers and errors of a `chat`
//! before they are put in either version's types.

use crate::bindings::v0_2::vivarium::agent::llm as wit2;
use crate::bindings::vivarium::agent::llm as wit;

use super::protocol::{ChatMessage, ChatRequest, ToolCall, ToolChoice, ToolSpec};
use super::state::LlmState;

/// What a `chat` answers, before it is put in either version's types.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) content: String,
    pub(super) tool_calls: Vec<ToolCall>,
    pub(super) model: String,
    pub(super) prompt_tokens: u32,
    pub(super) completion_tokens: u32,
    pub(super) finish_reason: String,
}

impl Reply {
    pub(super) fn into_v1(self) -> wit::Response {
        wit::Response {
            content: self.content,
            model: self.model,
            usage: wit::Usage { prompt_tokens: self.prompt_tokens, completion_tokens: self.completion_tokens },
            finish_reason: self.finish_reason,
        }
    }

    pub(super) fn into_v2(self) -> wit2::Response {
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
pub(super) enum Refusal {
    Denied(String),
    BudgetExhausted(String),
    RateLimited(String),
    Unavailable(String),
    InvalidRequest(String),
    BadResponse(String),
}

impl Refusal {
    /// 0.1.0 has no `bad-response`: it is `unavailable` there.
    pub(super) fn into_v1(self) -> wit::Error {
        match self {
            Refusal::Denied(m) => wit::Error::Denied(m),
            Refusal::BudgetExhausted(m) => wit::Error::BudgetExhausted(m),
            Refusal::RateLimited(m) => wit::Error::RateLimited(m),
            Refusal::Unavailable(m) | Refusal::BadResponse(m) => wit::Error::Unavailable(m),
            Refusal::InvalidRequest(m) => wit::Error::InvalidRequest(m),
        }
    }

    pub(super) fn into_v2(self) -> wit2::Error {
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
