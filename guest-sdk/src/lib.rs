//! Write Vivarium agent variants in Rust.
//!
//! A variant is a WebAssembly component that meets the `vivarium:agent`
//! contract (the WIT package in the repository's `wit/` folder): it exports a
//! *task agent* (`solve`) and a *meta agent* (`improve`, which proposes edits
//! to the variant's own source). With this crate a variant author writes two
//! plain trait impls and one macro call:
//!
//! ```no_run
//! use vivarium_guest::{
//!     log, Answer, Edit, ImproveContext, MetaAgent, Proposal, Task, TaskAgent,
//! };
//!
//! /// Bumped by `improve` in every child.
//! const GENERATION: u32 = 0;
//!
//! struct Echo;
//!
//! impl TaskAgent for Echo {
//!     fn solve(task: Task) -> Result<Answer, String> {
//!         log::info(&format!("generation {GENERATION} solving {}", task.id));
//!         Ok(Answer::new(task.input))
//!     }
//! }
//!
//! impl MetaAgent for Echo {
//!     fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
//!         // Rewrite `const GENERATION: u32 = N;` in our own source to N + 1.
//!         let edit: Edit = ctx.edit_text("src/lib.rs", |text| {
//!             let n: u32 = vivarium_guest::source::const_value(text, "GENERATION")
//!                 .ok_or("no GENERATION constant")?
//!                 .parse()
//!                 .map_err(|e| format!("GENERATION is not a number: {e}"))?;
//!             vivarium_guest::source::set_const(text, "GENERATION", &(n + 1).to_string())
//!         })?;
//!         Ok(Proposal::new("bump GENERATION").with_edit(edit))
//!     }
//! }
//!
//! vivarium_guest::export!(Echo);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (`cargo build --release --target
//! wasm32-wasip2`), or for `wasm32-unknown-unknown` and turn the core module
//! into a component with `wit-component` (what `vivarium build` does) — the
//! latter has no WASI imports at all.
//!
//! # Imports
//!
//! The world declares every host service (`log`, `llm`, `trainer`,
//! `simulator`, `memory`, `archive`), but a built component imports **only
//! the interfaces whose functions it actually calls**: the linker drops
//! unreferenced import functions and `wit-component` drops interfaces with no
//! function left. A variant that never calls [`llm`] does not import it, so the
//! host never has to grant it. Each service is budgeted by the variant's grant;
//! calling one that was not granted makes the host refuse the component before
//! it runs.
//!
//! # What is here
//!
//! * [`TaskAgent`] and [`MetaAgent`]: the two traits to implement, and
//!   [`export!`] to register the type that implements both.
//! * The contract's types: [`Task`], [`Answer`], [`SourceFile`], [`Edit`],
//!   [`Evaluation`], [`ImproveContext`], [`Proposal`], with small
//!   constructors and accessors.
//! * The host services: [`log`] (with [`log::info`] and friends), [`llm`],
//!   [`trainer`], [`simulator`], [`memory`], [`archive`].
//! * [`source`]: text helpers for self-modification (read and rewrite a
//!   `const` item).
//! * With the `reward-model` feature: the `reward-designer` world, whose
//!   variants also export a reward function ([`RewardModel`], graded by the
//!   host's `reward-design` suite).

// The bindings are generated at the crate root so that the exported
// `export!` macro (which refers to `vivarium_guest::exports::…`) resolves from
// a variant's crate.
#[cfg(not(feature = "reward-model"))]
wit_bindgen::generate!({
    world: "agent",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "vivarium_guest",
    generate_all,
    additional_derives: [PartialEq],
});

// With the `reward-model` feature the crate targets the `reward-designer`
// world (`agent` plus the `reward-model` export): `export!` then also needs
// an impl of [`RewardModel`].
#[cfg(feature = "reward-model")]
wit_bindgen::generate!({
    world: "reward-designer",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "vivarium_guest",
    generate_all,
    additional_derives: [PartialEq],
});

/// The reward model (feature `reward-model`): implement `rewards` for your
/// variant's type. While it trains a policy with it (the `reward-design`
/// suite) the host calls it with chunks of up to 256 transitions of one
/// environment, in order, and needs exactly one reward per transition back
/// (usually `transitions.iter().map(|t| my_reward(env, t)).collect()`).
#[cfg(feature = "reward-model")]
pub use exports::vivarium::agent::reward_model::Guest as RewardModel;

/// The reward model's argument types (feature `reward-model`): the
/// environment, a zero-padded six-number observation, and one transition
/// (`obs`, `action`, `next_obs`, `terminated`).
#[cfg(feature = "reward-model")]
pub use exports::vivarium::agent::reward_model::{Env, Observation, Transition};

/// The task agent: implement `solve` for your variant's type.
///
/// `solve` gets one [`Task`] and returns an [`Answer`], or `Err` for a graceful
/// failure (which scores zero). A panic traps the call and is reported by the
/// host as a guest failure.
pub use exports::vivarium::agent::task_agent::Guest as TaskAgent;

/// The meta agent: implement `improve` for your variant's type.
///
/// `improve` gets an [`ImproveContext`] (the variant's own source tree, the
/// visible evaluation history and feedback) and returns a [`Proposal`]: the
/// edits that turn this variant into its child. The host's guard checks every
/// edit before it is applied.
pub use exports::vivarium::agent::meta_agent::Guest as MetaAgent;

pub use vivarium::agent::types::{Answer, Edit, Evaluation, ImproveContext, Proposal, SourceFile, Task};

pub use vivarium::agent::{archive, llm, memory, simulator, trainer};

/// Structured logging into the host's log (`vivarium:agent/log`).
///
/// Every variant may log. The host caps the size of one message and the
/// messages and bytes per call; what is over the cap is dropped and counted,
/// never an error, so logging can never fail a call.
pub mod log {
    pub use crate::vivarium::agent::log::{log, Level};

    /// Log `message` at [`Level::Trace`].
    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }

    /// Log `message` at [`Level::Debug`].
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }

    /// Log `message` at [`Level::Info`].
    pub fn info(message: &str) {
        log(Level::Info, message)
    }

    /// Log `message` at [`Level::Warn`].
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }

    /// Log `message` at [`Level::Error`].
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

impl Task {
    /// A task with the given fields (handy in native unit tests of a variant).
    pub fn new(
        id: impl Into<String>,
        domain: impl Into<String>,
        instruction: impl Into<String>,
        input: impl Into<String>,
    ) -> Self {
        Task { id: id.into(), domain: domain.into(), instruction: instruction.into(), input: input.into() }
    }
}

impl Answer {
    /// An answer with this output and no notes.
    pub fn new(output: impl Into<String>) -> Self {
        Answer { output: output.into(), notes: None }
    }

    /// The same answer with free-text notes (shown in reports, never graded).
    pub fn with_notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = Some(notes.into());
        self
    }
}

impl SourceFile {
    /// A file at `path` (relative, `/`-separated) with these contents.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        SourceFile { path: path.into(), contents: contents.into() }
    }

    /// The contents as UTF-8 text, if they are valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.contents).ok()
    }
}

impl Edit {
    /// An edit that creates or replaces the file at `path`.
    pub fn write_file(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Edit::Write(SourceFile::new(path, contents))
    }

    /// An edit that removes the file at `path`.
    pub fn delete_file(path: impl Into<String>) -> Self {
        Edit::Delete(path.into())
    }

    /// The path this edit touches.
    pub fn path(&self) -> &str {
        match self {
            Edit::Write(file) => &file.path,
            Edit::Delete(path) => path,
        }
    }
}

impl Proposal {
    /// A proposal with this summary and no edits yet.
    pub fn new(summary: impl Into<String>) -> Self {
        Proposal { summary: summary.into(), edits: Vec::new() }
    }

    /// The same proposal with one more edit.
    pub fn with_edit(mut self, edit: Edit) -> Self {
        self.edits.push(edit);
        self
    }
}

impl ImproveContext {
    /// The file of the variant's own tree at `path` (relative, `/`-separated;
    /// a leading `./` is ignored).
    pub fn source(&self, path: &str) -> Option<&SourceFile> {
        find_source(&self.sources, path)
    }

    /// The text of the file at `path`, or an error that names the path and
    /// what the tree does hold.
    pub fn source_text(&self, path: &str) -> Result<&str, String> {
        let file = self.source(path).ok_or_else(|| {
            let held: Vec<&str> = self.sources.iter().map(|f| f.path.as_str()).collect();
            format!("no source file {path:?} (the tree holds {held:?})")
        })?;
        file.text().ok_or_else(|| format!("source file {path:?} is not UTF-8 text"))
    }

    /// Read the text at `path`, rewrite it with `rewrite`, and return the
    /// `write` edit that stores the result at the same path.
    ///
    /// Fails when the file is missing or not text, when `rewrite` fails, or
    /// when the rewrite changes nothing (an empty edit is never a useful child).
    pub fn edit_text<F>(&self, path: &str, rewrite: F) -> Result<Edit, String>
    where
        F: FnOnce(&str) -> Result<String, String>,
    {
        let old = self.source_text(path)?;
        let new = rewrite(old)?;
        if new == old {
            return Err(format!("the rewrite of {path:?} changed nothing"));
        }
        let path = self.source(path).map(|f| f.path.clone()).unwrap_or_else(|| path.to_string());
        Ok(Edit::write_file(path, new.into_bytes()))
    }

    /// The best visible score in the history, if there is one.
    pub fn best_score(&self) -> Option<f64> {
        self.history.iter().map(|e| e.score).filter(|s| !s.is_nan()).reduce(f64::max)
    }

    /// The visible score of this variant itself, if it has been evaluated.
    pub fn own_score(&self) -> Option<f64> {
        self.history.iter().rev().find(|e| e.id == self.self_id).map(|e| e.score)
    }
}

/// The file at `path` in `sources` (a leading `./` on either side is ignored).
pub fn find_source<'a>(sources: &'a [SourceFile], path: &str) -> Option<&'a SourceFile> {
    let want = normalize(path);
    sources.iter().find(|f| normalize(&f.path) == want)
}

fn normalize(path: &str) -> &str {
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p
}

/// Text helpers for a meta agent that edits its own Rust source.
///
/// They work on items of the shape `const NAME: Type = value;` (also
/// `pub const` and `static`), written on one line, which is the simplest
/// thing for a meta agent to find and change reliably.
pub mod source {
    /// The byte range of the value of the first `const NAME: … = value;` (or
    /// `static NAME: … = value;`) item, trimmed of surrounding spaces.
    pub fn const_value_range(text: &str, name: &str) -> Option<std::ops::Range<usize>> {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let trimmed = line.trim_start();
            let mut rest = trimmed;
            for prefix in ["pub(crate) ", "pub "] {
                if let Some(r) = rest.strip_prefix(prefix) {
                    rest = r;
                    break;
                }
            }
            let Some(rest) = rest.strip_prefix("const ").or_else(|| rest.strip_prefix("static ")) else {
                continue;
            };
            let rest = rest.trim_start();
            let Some(after_name) = rest.strip_prefix(name) else { continue };
            let after_name = after_name.trim_start();
            if !after_name.starts_with(':') {
                continue;
            }
            let Some(eq) = after_name.find('=') else { continue };
            let value_part = &after_name[eq + 1..];
            let Some(semi) = value_part.find(';') else { continue };
            let value = &value_part[..semi];
            let lead = value.len() - value.trim_start().len();
            let value_trimmed = value.trim();
            // Absolute offset of the value within `text`.
            let value_start_in_line = line.len() - after_name.len() + eq + 1 + lead;
            let abs = start + value_start_in_line;
            return Some(abs..abs + value_trimmed.len());
        }
        None
    }

    /// The value text of `const NAME: … = value;`, e.g. `"3"` or `"true"`.
    pub fn const_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        const_value_range(text, name).map(|r| &text[r])
    }

    /// `text` with the value of `const NAME: … = value;` replaced by
    /// `new_value` (Rust source text, e.g. `"4"` or `"true"`).
    pub fn set_const(text: &str, name: &str, new_value: &str) -> Result<String, String> {
        let range = const_value_range(text, name)
            .ok_or_else(|| format!("no one-line `const {name}: … = …;` item in the source"))?;
        let mut out = String::with_capacity(text.len() + new_value.len());
        out.push_str(&text[..range.start]);
        out.push_str(new_value);
        out.push_str(&text[range.end..]);
        Ok(out)
    }

    /// `text` with the first occurrence of `from` replaced by `to`; an error
    /// when `from` does not occur.
    pub fn replace_once(text: &str, from: &str, to: &str) -> Result<String, String> {
        let at = text.find(from).ok_or_else(|| format!("{from:?} does not occur in the source"))?;
        let mut out = String::with_capacity(text.len() + to.len());
        out.push_str(&text[..at]);
        out.push_str(to);
        out.push_str(&text[at + from.len()..]);
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_and_sets_consts() {
            let src = "// x\nconst GENERATION: u32 = 7;\npub const FLAG: bool = false; // note\n";
            assert_eq!(const_value(src, "GENERATION"), Some("7"));
            assert_eq!(const_value(src, "FLAG"), Some("false"));
            assert_eq!(const_value(src, "GEN"), None);
            let out = set_const(src, "GENERATION", "8").unwrap();
            assert_eq!(out, "// x\nconst GENERATION: u32 = 8;\npub const FLAG: bool = false; // note\n");
            let out = set_const(&out, "FLAG", "true").unwrap();
            assert!(out.contains("pub const FLAG: bool = true; // note\n"));
            assert!(set_const(src, "MISSING", "1").is_err());
        }

        #[test]
        fn replace_once_works() {
            assert_eq!(replace_once("a b a", "a", "c").unwrap(), "c b a");
            assert!(replace_once("a", "z", "c").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ImproveContext {
        ImproveContext {
            self_id: "v1".into(),
            sources: vec![SourceFile::new("src/lib.rs", "const GENERATION: u32 = 1;\n")],
            history: vec![],
            feedback: String::new(),
            iterations_left: 3,
        }
    }

    #[test]
    fn finds_sources_and_builds_edits() {
        let c = ctx();
        assert!(c.source("./src/lib.rs").is_some());
        assert!(c.source_text("src/main.rs").is_err());
        let edit = c.edit_text("src/lib.rs", |t| source::set_const(t, "GENERATION", "2")).unwrap();
        assert_eq!(edit, Edit::write_file("src/lib.rs", "const GENERATION: u32 = 2;\n"));
        assert!(c.edit_text("src/lib.rs", |t| Ok(t.to_string())).is_err());
    }
}
