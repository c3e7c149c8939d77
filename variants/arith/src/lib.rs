//! The arith variant: evaluates integer arithmetic expressions.
//!
//! `solve` reads an expression such as `(3+4)*12 - 7` from `task.input` and
//! answers with its value (`77`), computed with checked 64-bit integers.
//!
//! The strategy is deliberately improvable. The baseline knows `+`, `-`, `*`
//! and parentheses; the switches below turn on one more piece of the grammar
//! each. When `solve` meets something it cannot handle, its error names the
//! switch it needs ("needs DIVISION"), which the host passes back to `improve`
//! as feedback. `improve` edits this very file: it turns on the switch the
//! feedback asks for most (or else the next one that is off) and bumps
//! `GENERATION`.
//!
//! The input `spin` makes `solve` loop forever: the conformance suite's probe
//! that the host's fuel and deadline limits stop a runaway guest.

use vivarium_guest::{
    log, source, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent,
};

/// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION: u32 = 0;

// The grammar switches `improve` flips, one per generation.
/// `/`: integer division (truncating; division by zero is an error).
const DIVISION: bool = false;
/// `%`: remainder.
const REMAINDER: bool = false;
/// Unary minus: `-5`, `-(2+3)`, `3*-2`.
const UNARY_MINUS: bool = false;
/// `^`: exponentiation, right-associative, binds tighter than `*`.
const POWER: bool = false;

/// The switches in the order `improve` turns them on when feedback is silent.
const SWITCHES: [(&str, bool); 4] = [
    ("DIVISION", DIVISION),
    ("REMAINDER", REMAINDER),
    ("UNARY_MINUS", UNARY_MINUS),
    ("POWER", POWER),
];

/// The file `improve` edits (relative to the variant's tree).
const SELF_PATH: &str = "src/lib.rs";

/// Deepest parenthesis/unary nesting accepted, so hostile input cannot
/// overflow the stack.
const MAX_DEPTH: usize = 200;

/// Longest input accepted, in bytes.
const MAX_INPUT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Num(i64),
    Op(char),
    Open,
    Close,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '0'..='9' => {
                let mut value: i64 = c.to_digit(10).unwrap_or(0).into();
                while let Some(&(_, d)) = chars.peek() {
                    let Some(digit) = d.to_digit(10) else { break };
                    value = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(digit.into()))
                        .ok_or_else(|| format!("number at byte {at} is too large"))?;
                    chars.next();
                }
                tokens.push(Token::Num(value));
            }
            '+' | '-' | '*' | '/' | '%' | '^' => tokens.push(Token::Op(c)),
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            other => return Err(format!("unexpected character {other:?} at byte {at}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self, depth: usize) -> Result<i64, String> {
        let mut value = self.term(depth)?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek() {
            self.next();
            let rhs = self.term(depth)?;
            value = if op == '+' { value.checked_add(rhs) } else { value.checked_sub(rhs) }
                .ok_or("overflow")?;
        }
        Ok(value)
    }

    /// term := unary (('*' | '/' | '%') unary)*
    fn term(&mut self, depth: usize) -> Result<i64, String> {
        let mut value = self.unary(depth)?;
        while let Some(Token::Op(op @ ('*' | '/' | '%'))) = self.peek() {
            match op {
                '/' if !DIVISION => return Err("operator '/' is not supported: needs DIVISION".into()),
                '%' if !REMAINDER => {
                    return Err("operator '%' is not supported: needs REMAINDER".into())
                }
                _ => {}
            }
            self.next();
            let rhs = self.unary(depth)?;
            value = match op {
                '*' => value.checked_mul(rhs).ok_or("overflow")?,
                _ if rhs == 0 => return Err("division by zero".into()),
                '/' => value.checked_div(rhs).ok_or("overflow")?,
                _ => value.checked_rem(rhs).ok_or("overflow")?,
            };
        }
        Ok(value)
    }

    /// unary := '-' unary | power
    fn unary(&mut self, depth: usize) -> Result<i64, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        if let Some(Token::Op('-')) = self.peek() {
            if !UNARY_MINUS {
                return Err("unary '-' is not supported: needs UNARY_MINUS".into());
            }
            self.next();
            let value = self.unary(depth + 1)?;
            return value.checked_neg().ok_or_else(|| "overflow".to_string());
        }
        self.power(depth)
    }

    /// power := atom ('^' unary)?
    fn power(&mut self, depth: usize) -> Result<i64, String> {
        let base = self.atom(depth)?;
        if let Some(Token::Op('^')) = self.peek() {
            if !POWER {
                return Err("operator '^' is not supported: needs POWER".into());
            }
            self.next();
            let exponent = self.unary(depth + 1)?;
            let exponent = u32::try_from(exponent)
                .map_err(|_| format!("exponent {exponent} is negative or too large"))?;
            return base.checked_pow(exponent).ok_or_else(|| "overflow".to_string());
        }
        Ok(base)
    }

    /// atom := number | '(' expr ')'
    fn atom(&mut self, depth: usize) -> Result<i64, String> {
        match self.next() {
            Some(Token::Num(n)) => Ok(n),
            Some(Token::Open) => {
                let value = self.expr(depth + 1)?;
                match self.next() {
                    Some(Token::Close) => Ok(value),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(Token::Op(op)) => Err(format!("unexpected operator '{op}'")),
            Some(Token::Close) => Err("unexpected ')'".into()),
            None => Err("unexpected end of expression".into()),
        }
    }
}

/// Evaluate one expression with this generation's grammar.
fn evaluate(input: &str) -> Result<i64, String> {
    if input.len() > MAX_INPUT {
        return Err(format!("expression longer than {MAX_INPUT} bytes"));
    }
    let mut parser = Parser { tokens: tokenize(input)?, pos: 0 };
    let value = parser.expr(0)?;
    match parser.peek() {
        None => Ok(value),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

fn enabled_switches() -> Vec<&'static str> {
    SWITCHES.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect()
}

struct Arith;

impl TaskAgent for Arith {
    fn solve(task: Task) -> Result<Answer, String> {
        if task.input == "spin" {
            // The conformance suite's limit probe (tests/conformance.rs): the
            // host's fuel and deadline limits must stop a runaway guest.
            let mut spins = 0u64;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        match evaluate(&task.input) {
            Ok(value) => Ok(Answer::new(value.to_string()).with_notes(format!(
                "arith generation {GENERATION}, switches on: {:?}",
                enabled_switches()
            ))),
            Err(e) => {
                log::warn(&format!("task {}: {e}", task.id));
                Err(e)
            }
        }
    }
}

/// The switch to turn on next: the one the feedback names most often among
/// those still off, or else the first one still off.
fn next_switch(feedback: &str) -> Option<&'static str> {
    let off = SWITCHES.iter().filter(|(_, on)| !*on).map(|(name, _)| *name);
    let wanted = off
        .clone()
        .map(|name| (feedback.matches(&format!("needs {name}")).count(), name))
        .filter(|(count, _)| *count > 0)
        // max_by_key keeps the last maximum; reverse so ties go to SWITCHES order.
        .rev()
        .max_by_key(|(count, _)| *count)
        .map(|(_, name)| name);
    wanted.or_else(|| off.clone().next())
}

impl MetaAgent for Arith {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        let switch = next_switch(&ctx.feedback)
            .ok_or("every grammar switch is already on; nothing left to improve")?;
        let next_generation = GENERATION + 1;
        let edit = ctx.edit_text(SELF_PATH, |text| {
            let text = source::set_const(text, switch, "true")?;
            source::set_const(&text, "GENERATION", &next_generation.to_string())
        })?;
        log::info(&format!(
            "arith generation {GENERATION}: turning on {switch} (score so far: {:?})",
            ctx.own_score()
        ));
        Ok(Proposal::new(format!("arith: turn on {switch} (generation {next_generation})"))
            .with_edit(edit))
    }
}

vivarium_guest::export!(Arith);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_grammar() {
        assert_eq!(evaluate("(3+4)*12 - 7"), Ok(77));
        assert_eq!(evaluate("1 + 2 * 3"), Ok(7));
        assert_eq!(evaluate(" 42 "), Ok(42));
        assert!(evaluate("7 / 2").unwrap_err().contains("needs DIVISION"));
        assert!(evaluate("-3").unwrap_err().contains("needs UNARY_MINUS"));
        assert!(evaluate("(1+2").is_err());
        assert!(evaluate("1 2").is_err());
        assert!(evaluate("9223372036854775807 + 1").is_err());
        assert!(evaluate(&"(".repeat(10_000)).unwrap_err().contains("deeper"));
    }

    #[test]
    fn picks_the_switch_feedback_asks_for() {
        assert_eq!(next_switch(""), Some("DIVISION"));
        assert_eq!(
            next_switch("t1: needs POWER\nt2: needs UNARY_MINUS\nt3: needs POWER"),
            Some("POWER")
        );
        assert_eq!(next_switch("t1: needs REMAINDER\nt2: needs POWER"), Some("REMAINDER"));
    }

    #[test]
    fn improve_edits_its_own_source() {
        let ctx = ImproveContext {
            self_id: "a".into(),
            sources: vec![vivarium_guest::SourceFile::new(SELF_PATH, include_str!("lib.rs"))],
            history: vec![],
            feedback: "t9: operator '%' is not supported: needs REMAINDER".into(),
            iterations_left: 1,
        };
        let edit = ctx
            .edit_text(SELF_PATH, |text| source::set_const(text, "REMAINDER", "true"))
            .unwrap();
        let vivarium_guest::Edit::Write(file) = edit else { panic!("not a write") };
        let text = file.text().unwrap();
        assert!(text.contains("const REMAINDER: bool = true;"));
        assert!(text.contains("const DIVISION: bool = false;"));
    }
}
