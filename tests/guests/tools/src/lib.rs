//! A guest that sends chat requests through `vivarium:agent/llm@0.2.0`.
//!
//! `solve` runs a script: `task.input` holds one command per line and the
//! answer holds one result line per command.
//!
//! | command | result |
//! |---|---|
//! | `chat JSON` | `ok JSON` (the response) or `err KIND: …` |
//! | `tools-left` | tokens left |
//!
//! `JSON` in a command is a request: `{"model", "max_tokens", "messages":
//! [{"role", "content", "tool_calls": [{"id", "name", "arguments"}],
//! "tool_call_id"}], "tools": [{"name", "description", "parameters"}],
//! "tool_choice": "auto" | "none" | "required" | {"name": …},
//! "temperature"}`; the response is `{"content", "tool_calls", "model",
//! "prompt_tokens", "completion_tokens", "finish_reason"}`. Two special
//! commands build requests too large to write in a task: `chat-many-tools
//! N JSON` adds N tools to the request, `chat-big-argument N JSON` adds an
//! assistant call whose arguments are N bytes.

use serde_json::{json, Value};
use vivarium_guest::{Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

mod v2 {
    wit_bindgen::generate!({
        path: "../../../wit-0.2.0",
        world: "llm-tools",
    });
}
use v2::vivarium::agent::llm;

struct Tools;

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn call_of(v: &Value) -> llm::ToolCall {
    llm::ToolCall { id: text(v, "id"), name: text(v, "name"), arguments: text(v, "arguments") }
}

fn call_json(c: &llm::ToolCall) -> Value {
    json!({"id": c.id, "name": c.name, "arguments": c.arguments})
}

fn request(v: &Value) -> llm::Request {
    let messages = v["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| llm::Message {
                    role: match m["role"].as_str() {
                        Some("system") => llm::Role::System,
                        Some("assistant") => llm::Role::Assistant,
                        Some("tool") => llm::Role::Tool,
                        _ => llm::Role::User,
                    },
                    content: text(m, "content"),
                    tool_calls: m["tool_calls"].as_array().map(|c| c.iter().map(call_of).collect()).unwrap_or_default(),
                    tool_call_id: m["tool_call_id"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    let tools = v["tools"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| llm::Tool {
                    name: text(t, "name"),
                    description: text(t, "description"),
                    parameters: t["parameters"].to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let tool_choice = match &v["tool_choice"] {
        Value::String(s) if s == "none" => llm::ToolChoice::None,
        Value::String(s) if s == "required" => llm::ToolChoice::Required,
        Value::Object(o) => llm::ToolChoice::Named(o.get("name").and_then(Value::as_str).unwrap_or("").into()),
        _ => llm::ToolChoice::Auto,
    };
    llm::Request {
        model: text(v, "model"),
        messages,
        tools,
        tool_choice,
        max_tokens: v["max_tokens"].as_u64().unwrap_or(16) as u32,
        temperature: v["temperature"].as_f64().map(|t| t as f32),
    }
}

fn chat(req: &llm::Request) -> String {
    match llm::chat(req) {
        Ok(r) => format!(
            "ok {}",
            json!({
                "content": r.content,
                "tool_calls": r.tool_calls.iter().map(call_json).collect::<Vec<_>>(),
                "model": r.model,
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
                "finish_reason": r.finish_reason,
            })
        ),
        Err(e) => match e {
            llm::Error::Denied(m) => format!("err denied: {m}"),
            llm::Error::BudgetExhausted(m) => format!("err budget-exhausted: {m}"),
            llm::Error::RateLimited(m) => format!("err rate-limited: {m}"),
            llm::Error::Unavailable(m) => format!("err unavailable: {m}"),
            llm::Error::InvalidRequest(m) => format!("err invalid-request: {m}"),
            llm::Error::BadResponse(m) => format!("err bad-response: {m}"),
        },
    }
}

fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| format!("err script: {e}"))
}

fn run(line: &str) -> String {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "chat" => match parse(rest) {
            Ok(v) => chat(&request(&v)),
            Err(e) => e,
        },
        "chat-many-tools" | "chat-big-argument" => {
            let (n, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let n: usize = n.parse().unwrap_or(0);
            let mut req = match parse(json) {
                Ok(v) => request(&v),
                Err(e) => return e,
            };
            if cmd == "chat-many-tools" {
                req.tools.extend((0..n).map(|i| llm::Tool {
                    name: format!("tool_{i}"),
                    description: String::new(),
                    parameters: "{\"type\":\"object\"}".into(),
                }));
            } else {
                let mut arguments = String::with_capacity(n);
                arguments.push_str("{\"x\":\"");
                arguments.extend(std::iter::repeat_n('a', n.saturating_sub(8)));
                arguments.push_str("\"}");
                req.messages.push(llm::Message {
                    role: llm::Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![llm::ToolCall { id: "big".into(), name: "f".into(), arguments }],
                    tool_call_id: None,
                });
                req.messages.push(llm::Message {
                    role: llm::Role::Tool,
                    content: "done".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("big".into()),
                });
            }
            chat(&req)
        }
        "tokens-left" => llm::tokens_left().to_string(),
        other => format!("unknown command {other:?}"),
    }
}

impl TaskAgent for Tools {
    fn solve(task: Task) -> Result<Answer, String> {
        let out: Vec<String> = task.input.lines().map(run).collect();
        Ok(Answer::new(out.join("\n")))
    }
}

impl MetaAgent for Tools {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".into())
    }
}

vivarium_guest::export!(Tools);
