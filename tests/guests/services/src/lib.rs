//! A guest that drives the host services for the host's tests.
//!
//! `solve` runs a script: `task.input` holds one command per line and the
//! answer holds one result line per command, in order. In keys, `\n` and
//! `\e` stand for a newline and an escape character.
//!
//! | command | result |
//! |---|---|
//! | `mem-set KEY VALUE…` | `ok`, or `err quota-exceeded: …` / `err invalid-key: …` / `err denied: …` |
//! | `mem-set-n KEY N` | as `mem-set`, with a value of N bytes |
//! | `mem-get KEY` | `some VALUE` or `none` |
//! | `mem-del KEY` | `true` or `false` |
//! | `mem-list PREFIX` | the keys, comma-separated |
//! | `mem-left` | bytes left |
//! | `ar-get ID` | `some ID parent=P gen=G lang=L score=S children=C` or `none` |
//! | `ar-list OFFSET LIMIT` | `ID:score` items, comma-separated |
//! | `ar-lineage ID` | ids, comma-separated, oldest first |
//! | `ar-sources ID` | `PATH:BYTES` items, comma-separated, or `err …` |
//! | `llm MODEL MAX_TOKENS PROMPT…` | `ok CONTENT|MODEL|PROMPT_TOKENS|COMPLETION_TOKENS|FINISH`, or `err KIND: …` |
//! | `llm-left` | tokens left |
//! | `env` | every environment variable and argument the guest can see |
//!
//! `improve` always answers `Err("not supported")`.

use vivarium_guest::{archive, llm, memory, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

struct Services;

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\e", "\u{1b}")
}

fn mem_error(e: memory::Error) -> String {
    match e {
        memory::Error::QuotaExceeded(m) => format!("err quota-exceeded: {m}"),
        memory::Error::InvalidKey(m) => format!("err invalid-key: {m}"),
        memory::Error::Denied(m) => format!("err denied: {m}"),
    }
}

fn llm_error(e: llm::Error) -> String {
    match e {
        llm::Error::Denied(m) => format!("err denied: {m}"),
        llm::Error::BudgetExhausted(m) => format!("err budget-exhausted: {m}"),
        llm::Error::RateLimited(m) => format!("err rate-limited: {m}"),
        llm::Error::Unavailable(m) => format!("err unavailable: {m}"),
        llm::Error::InvalidRequest(m) => format!("err invalid-request: {m}"),
    }
}

fn info(v: &archive::VariantInfo) -> String {
    format!(
        "some {} parent={} gen={} lang={} score={} children={}",
        v.id,
        v.parent.as_deref().unwrap_or("-"),
        v.generation,
        v.language,
        v.score.map_or("-".to_string(), |s| s.to_string()),
        v.children
    )
}

fn run(line: &str) -> String {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "mem-set" => {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match memory::set(&unescape(key), value.as_bytes()) {
                Ok(()) => "ok".into(),
                Err(e) => mem_error(e),
            }
        }
        "mem-set-n" => {
            let (key, n) = rest.split_once(' ').unwrap_or((rest, "0"));
            let value = vec![b'x'; n.trim().parse().unwrap_or(0)];
            match memory::set(&unescape(key), &value) {
                Ok(()) => "ok".into(),
                Err(e) => mem_error(e),
            }
        }
        "mem-get" => match memory::get(&unescape(rest)) {
            Some(v) => format!("some {}", String::from_utf8_lossy(&v)),
            None => "none".into(),
        },
        "mem-del" => memory::delete(&unescape(rest)).to_string(),
        "mem-list" => memory::list_keys(&unescape(rest)).join(","),
        "mem-left" => memory::bytes_left().to_string(),
        "ar-get" => archive::get(rest).map_or("none".into(), |v| info(&v)),
        "ar-list" => {
            let mut it = rest.split(' ').map(|n| n.parse().unwrap_or(0));
            let (offset, limit) = (it.next().unwrap_or(0), it.next().unwrap_or(100));
            archive::list(offset, limit)
                .iter()
                .map(|v| format!("{}:{}", v.id, v.score.map_or("-".to_string(), |s| s.to_string())))
                .collect::<Vec<_>>()
                .join(",")
        }
        "ar-lineage" => archive::lineage(rest).iter().map(|v| v.id.clone()).collect::<Vec<_>>().join(","),
        "ar-sources" => match archive::sources(rest) {
            Ok(files) => files.iter().map(|f| format!("{}:{}", f.path, f.contents.len())).collect::<Vec<_>>().join(","),
            Err(e) => format!("err {e}"),
        },
        "llm" => {
            let mut parts = rest.splitn(3, ' ');
            let model = parts.next().unwrap_or("").to_string();
            let max_tokens = parts.next().and_then(|n| n.parse().ok()).unwrap_or(16);
            let prompt = parts.next().unwrap_or("").replace("\\n", "\n");
            let req = llm::Request {
                model,
                messages: vec![
                    llm::Message { role: llm::Role::System, content: "You are terse.".into() },
                    llm::Message { role: llm::Role::User, content: prompt },
                ],
                max_tokens,
                temperature: Some(0.0),
            };
            match llm::chat(&req) {
                Ok(r) => format!(
                    "ok {}|{}|{}|{}|{}",
                    r.content, r.model, r.usage.prompt_tokens, r.usage.completion_tokens, r.finish_reason
                ),
                Err(e) => llm_error(e),
            }
        }
        "llm-left" => llm::tokens_left().to_string(),
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            let args: Vec<String> = std::env::args().collect();
            format!("vars=[{}] args=[{}]", vars.join(";"), args.join(";"))
        }
        other => format!("unknown command {other:?}"),
    }
}

impl TaskAgent for Services {
    fn solve(task: Task) -> Result<Answer, String> {
        let out: Vec<String> = task.input.lines().map(run).collect();
        Ok(Answer::new(out.join("\n")))
    }
}

impl MetaAgent for Services {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".into())
    }
}

vivarium_guest::export!(Services);
