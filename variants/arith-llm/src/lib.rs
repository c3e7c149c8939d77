//! arith-llm: integer expressions, improved by an LLM when the host has one.
//!
//! `solve` evaluates `task.input` with a precedence-climbing parser over the
//! binary operators listed in `OPERATORS`; anything else is an error that
//! names the missing operator ("operator '/' is not supported").
//!
//! `improve` first asks the host's `llm` service (model `small`) for a
//! complete rewrite of this file, given the file and the visible failures.
//! The answer must hold one fenced Rust block that still exports the agent.
//! When the service is not configured, the budget is spent, or the answer
//! is unusable, it falls back to its offline strategy: add the operator the
//! feedback names most often to `OPERATORS` and bump `GENERATION`.

use vivarium_guest::{llm, log, source, Answer, Edit, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

/// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION: u32 = 0;

/// Binary operators `solve` knows, tightest last; `improve` adds to it.
const OPERATORS: &str = "+-*";

/// Operators the offline strategy may add, in the order it adds them.
const LEARNABLE: &str = "/%";

/// The file `improve` rewrites.
const SELF_PATH: &str = "src/lib.rs";

/// Most tokens asked of the LLM for one rewrite.
const MAX_TOKENS: u32 = 3000;

/// Deepest nesting accepted, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 200;

fn precedence(op: char) -> u8 {
    match op {
        '+' | '-' => 1,
        _ => 2,
    }
}

fn apply(op: char, a: i64, b: i64) -> Result<i64, String> {
    let r = match op {
        '+' => a.checked_add(b),
        '-' => a.checked_sub(b),
        '*' => a.checked_mul(b),
        '/' => a.checked_div(b),
        '%' => a.checked_rem(b),
        _ => None,
    };
    r.ok_or_else(|| format!("{a} {op} {b} overflows or divides by zero"))
}

/// A cursor over the expression's non-blank characters.
struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn atom(&mut self, depth: usize) -> Result<i64, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let v = self.climb(1, depth + 1)?;
                if self.peek() != Some(')') {
                    return Err("missing ')'".into());
                }
                self.at += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                let digits: String = self.chars[start..self.at].iter().collect();
                digits.parse().map_err(|_| format!("number {digits} is too large"))
            }
            Some(c) => Err(format!("unexpected '{c}'")),
            None => Err("the expression ends too early".into()),
        }
    }

    /// Precedence climbing: operators at `min` or tighter, left-associative.
    fn climb(&mut self, min: u8, depth: usize) -> Result<i64, String> {
        let mut lhs = self.atom(depth)?;
        while let Some(op) = self.peek().filter(|c| !c.is_ascii_digit() && !"()".contains(*c)) {
            if !OPERATORS.contains(op) {
                return Err(format!("operator '{op}' is not supported"));
            }
            if precedence(op) < min {
                break;
            }
            self.at += 1;
            let rhs = self.climb(precedence(op) + 1, depth + 1)?;
            lhs = apply(op, lhs, rhs)?;
        }
        Ok(lhs)
    }
}

/// The value of `input`.
fn evaluate(input: &str) -> Result<i64, String> {
    if input.len() > 64 * 1024 {
        return Err("the expression is longer than 64 KiB".into());
    }
    let mut c = Cursor { chars: input.chars().filter(|c| !c.is_whitespace()).collect(), at: 0 };
    let v = c.climb(1, 0)?;
    match c.peek() {
        None => Ok(v),
        Some(x) => Err(format!("unexpected '{x}'")),
    }
}

struct ArithLlm;

impl TaskAgent for ArithLlm {
    fn solve(task: Task) -> Result<Answer, String> {
        let v = evaluate(&task.input)?;
        Ok(Answer::new(v.to_string()).with_notes(format!("arith-llm generation {GENERATION}, operators {OPERATORS}")))
    }
}

/// The operator the offline strategy adds next: the learnable one the
/// feedback names most often, or else the first one still missing.
fn next_operator(feedback: &str) -> Option<char> {
    let missing = LEARNABLE.chars().filter(|c| !OPERATORS.contains(*c));
    let named = missing
        .clone()
        .map(|c| (feedback.matches(&format!("operator '{c}'")).count(), c))
        .filter(|(n, _)| *n > 0)
        .rev()
        .max_by_key(|(n, _)| *n)
        .map(|(_, c)| c);
    named.or_else(|| missing.clone().next())
}

/// The fenced code block of `answer` (```rust … ``` or ``` … ```): from
/// the first fence to the last, since the code may itself hold fences.
fn code_block(answer: &str) -> Option<&str> {
    let start = answer.find("```")?;
    let body = &answer[start + 3..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.rfind("```")?;
    Some(&body[..end])
}

/// Ask the LLM for a rewrite of this file.
fn llm_proposal(ctx: &ImproveContext) -> Result<Proposal, String> {
    let left = llm::tokens_left();
    if left < u64::from(MAX_TOKENS) {
        return Err(format!("only {left} LLM tokens left"));
    }
    let own = ctx.source_text(SELF_PATH)?;
    let prompt = format!(
        "You are improving a WebAssembly agent that evaluates integer expressions. \
         Here is its whole source, {SELF_PATH}:\n\n```rust\n{own}```\n\n\
         These visible tasks failed:\n{}\n\
         Reply with the complete new {SELF_PATH} in one ```rust block. Keep the \
         `vivarium_guest::export!` line, increment GENERATION, and use no new dependencies.",
        ctx.feedback
    );
    let req = llm::Request {
        model: "small".into(),
        messages: vec![
            llm::Message { role: llm::Role::System, content: "You write careful, compiling Rust.".into() },
            llm::Message { role: llm::Role::User, content: prompt },
        ],
        max_tokens: MAX_TOKENS,
        temperature: Some(0.0),
    };
    let resp = llm::chat(&req).map_err(|e| format!("{e:?}"))?;
    let code = code_block(&resp.content).ok_or("the answer has no fenced code block")?;
    if !code.contains("vivarium_guest::export!") {
        return Err("the rewrite no longer exports the agent".into());
    }
    if code == own {
        return Err("the rewrite changed nothing".into());
    }
    let tokens = resp.usage.prompt_tokens + resp.usage.completion_tokens;
    Ok(Proposal::new(format!("arith-llm: LLM rewrite by {} ({tokens} tokens)", resp.model))
        .with_edit(Edit::write_file(SELF_PATH, code.as_bytes().to_vec())))
}

/// The offline strategy: learn one operator.
fn offline_proposal(ctx: &ImproveContext) -> Result<Proposal, String> {
    let op = next_operator(&ctx.feedback).ok_or("every operator is known; nothing left to improve offline")?;
    let next = GENERATION + 1;
    let edit = ctx.edit_text(SELF_PATH, |text| {
        let text = source::set_const(text, "OPERATORS", &format!("{:?}", format!("{OPERATORS}{op}")))?;
        source::set_const(&text, "GENERATION", &next.to_string())
    })?;
    Ok(Proposal::new(format!("arith-llm: offline, learn '{op}' (generation {next})")).with_edit(edit))
}

impl MetaAgent for ArithLlm {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        match llm_proposal(&ctx) {
            Ok(p) => Ok(p),
            Err(why) => {
                log::info(&format!("no LLM rewrite ({why}); using the offline strategy"));
                offline_proposal(&ctx)
            }
        }
    }
}

vivarium_guest::export!(ArithLlm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_what_it_knows_and_names_what_it_does_not() {
        assert_eq!(evaluate("(3+4)*12 - 7"), Ok(77));
        assert_eq!(evaluate("10 - 2 - 3"), Ok(5));
        assert_eq!(evaluate("2*3+4*5"), Ok(26));
        assert_eq!(evaluate("84 / 4"), Err("operator '/' is not supported".into()));
        assert!(evaluate(&"(".repeat(1000)).unwrap_err().contains("deeper"));
        assert!(evaluate("9223372036854775807 + 1").unwrap_err().contains("overflows"));
    }

    #[test]
    fn offline_picks_the_operator_feedback_names() {
        assert_eq!(next_operator(""), Some('/'));
        assert_eq!(next_operator("x: operator '%' is not supported\n"), Some('%'));
    }

    #[test]
    fn code_block_takes_the_fenced_text() {
        assert_eq!(code_block("Here:\n```rust\nfn main() {}\n```\nDone."), Some("fn main() {}\n"));
        assert_eq!(code_block("no code"), None);
        assert_eq!(code_block("```rust\nlet f = \"```\";\n```\n"), Some("let f = \"```\";\n"));
    }
}
