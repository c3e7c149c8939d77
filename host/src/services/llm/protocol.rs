//! The OpenAI chat-completions shapes: a request in the host's terms
//! (messages, tools, tool choice) and its checks, the answer's parse
//! (content, `tool_calls`, usage), and the prompt-token estimate.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::MAX_TOOL_CALLS;

/// A completion as answered (and as cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Completion {
    pub(super) content: String,
    /// Absent from cache files written before tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<ToolCall>,
    pub(super) model: String,
    pub(super) finish_reason: String,
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
}

pub(super) fn parse_completion(bytes: &[u8]) -> std::result::Result<Completion, String> {
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

/// An estimate of the prompt tokens of `messages`: a quarter token per
/// byte, rounded up, plus 4 per message and 3 for the reply's priming.
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    3 + messages.into_iter().map(|m| (m.len() as u64).div_ceil(4) + 4).sum::<u64>()
}

/// One chat request in the host's terms, from either version of the
/// interface (0.1.0 has no tools and no `tool` role).
#[derive(Debug, Clone)]
pub(super) struct ChatRequest {
    pub(super) model: String,
    pub(super) messages: Vec<ChatMessage>,
    pub(super) tools: Vec<ToolSpec>,
    pub(super) tool_choice: ToolChoice,
    pub(super) max_tokens: u32,
    pub(super) temperature: Option<f32>,
}

#[derive(Debug, Clone)]
pub(super) struct ChatMessage {
    pub(super) role: &'static str,
    pub(super) content: String,
    pub(super) tool_calls: Vec<ToolCall>,
    pub(super) tool_call_id: Option<String>,
}

/// A tool call as the provider answered it (and as the cache keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ToolCall {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) arguments: String,
}

#[derive(Debug, Clone)]
pub(super) struct ToolSpec {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) parameters: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl ChatMessage {
    /// The OpenAI shape: `tool_calls` and `tool_call_id` only when present,
    /// so a message without them is exactly what 0.1.0 sent.
    pub(super) fn to_json(&self) -> Value {
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
    pub(super) fn size(&self) -> u64 {
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
    pub(super) fn prompt_texts(&self) -> impl Iterator<Item = &str> {
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
pub(super) fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The request's `tools` and `tool_choice` in the OpenAI shape; `None`
/// when no tool is offered and the choice is the default.
pub(super) fn tools_json(
    tools: &[ToolSpec],
    choice: &ToolChoice,
) -> std::result::Result<Option<(Value, Value)>, String> {
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
pub(super) fn check_messages(messages: &[ChatMessage]) -> Option<String> {
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
pub(super) const BAD_TOOL_CALLS: &str = "malformed `tool_calls`: ";

/// `message.tool_calls` of an answer: absent or null is none; otherwise
/// an array of `{"id", "type": "function", "function": {"name",
/// "arguments"}}` (arguments as a string, or an object some servers send).
pub(super) fn parse_tool_calls(v: Option<&Value>) -> std::result::Result<Vec<ToolCall>, String> {
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
