//! The `arith` suite: integer expressions graded by an exact reference
//! evaluator. The baseline `variants/arith` handles `+ - *` and
//! parentheses; division, remainder, unary minus and powers must be earned
//! by self-modification, and the held-out split uses combinations the
//! visible split never shows.

use super::{GradedTask, Suite};
use crate::runtime::bindings::Task;

const VISIBLE: &[&str] = &[
    "1+2",
    "(3+4)*12 - 7",
    "2*3*4 - 5",
    "100 - 3*(4+5)",
    "84 / 4",
    "7 / 2 + 10",
    "17 % 5",
    "(20 + 9) % 4",
    "-5 + 3",
    "3 * -(2 + 1)",
    "2 ^ 10",
    "3 ^ 2 ^ 2",
];

const HELD_OUT: &[&str] =
    &["(1+2)*(3+4)", "50 - 2*2*2", "(100 / 7) % 3", "-(2 ^ 3) + 100 / 9", "9 % 4 * -3", "2 ^ 3 * 5 - 60 / 6"];

/// The suite, with expected answers from the reference evaluator.
pub fn suite() -> Suite {
    let make = |split: &str, exprs: &[&str]| {
        exprs
            .iter()
            .enumerate()
            .map(|(i, e)| GradedTask {
                task: Task {
                    id: format!("arith-{split}-{i}"),
                    domain: "arith".into(),
                    instruction: "Evaluate the integer expression; answer with the number only.".into(),
                    input: (*e).into(),
                },
                expected: eval(e).expect("suite expressions are valid").to_string(),
            })
            .collect()
    };
    Suite { name: "arith", visible: make("v", VISIBLE), held_out: make("h", HELD_OUT), grading: super::Grading::Exact }
}

/// Reference evaluator: `+ - * / %` (truncating), unary minus, `^`
/// (right-associative, tighter than `*`), parentheses; checked i64.
pub fn eval(src: &str) -> Result<i64, String> {
    let toks: Vec<char> = src.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = Parser { t: &toks, i: 0 };
    let v = p.sum()?;
    if p.i != toks.len() {
        return Err(format!("unexpected `{}`", toks[p.i]));
    }
    Ok(v)
}

struct Parser<'a> {
    t: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }
    fn sum(&mut self) -> Result<i64, String> {
        let mut v = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.product()?;
            v = if op == '+' { v.checked_add(r) } else { v.checked_sub(r) }.ok_or("overflow")?;
        }
        Ok(v)
    }
    fn product(&mut self) -> Result<i64, String> {
        let mut v = self.unary()?;
        while let Some(op @ ('*' | '/' | '%')) = self.peek() {
            self.i += 1;
            let r = self.unary()?;
            v = match op {
                '*' => v.checked_mul(r),
                '/' => v.checked_div(r),
                _ => v.checked_rem(r),
            }
            .ok_or("overflow or division by zero")?;
        }
        Ok(v)
    }
    fn unary(&mut self) -> Result<i64, String> {
        if self.peek() == Some('-') {
            self.i += 1;
            return self.unary()?.checked_neg().ok_or_else(|| "overflow".into());
        }
        self.power()
    }
    fn power(&mut self) -> Result<i64, String> {
        let base = self.atom()?;
        if self.peek() == Some('^') {
            self.i += 1;
            let exp = self.unary()?;
            let exp = u32::try_from(exp).map_err(|_| "negative or huge exponent")?;
            return base.checked_pow(exp).ok_or_else(|| "overflow".into());
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<i64, String> {
        match self.peek() {
            Some('(') => {
                self.i += 1;
                let v = self.sum()?;
                if self.peek() != Some(')') {
                    return Err("missing `)`".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() => {
                let mut v: i64 = 0;
                while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
                    v = v.checked_mul(10).and_then(|v| v.checked_add(d.into())).ok_or("overflow")?;
                    self.i += 1;
                }
                Ok(v)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn reference_values() {
        assert_eq!(eval("(3+4)*12 - 7"), Ok(77));
        assert_eq!(eval("3 ^ 2 ^ 2"), Ok(81));
        assert_eq!(eval("3 * -(2 + 1)"), Ok(-9));
        assert_eq!(eval("-(2 ^ 3) + 100 / 9"), Ok(3));
        assert_eq!(eval("9 % 4 * -3"), Ok(-3));
        assert!(eval("1/0").is_err());
    }
}
