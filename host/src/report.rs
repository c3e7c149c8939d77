//! The HTML report of an evolution run: one self-contained file (no
//! external resources) with
//!
//! * the **lineage tree** as inline SVG — one node per archived variant,
//!   laid out by generation (top to bottom) and lineage (leaves left to
//!   right), coloured by visible score, labelled with its id prefix and
//!   score, with a tooltip (`<title>`) carrying its summary; the path from
//!   the root to the best variant is drawn thick and gold;
//! * **visible and held-out score over generations** as an inline SVG
//!   chart: every evaluated variant as a dot, the best-so-far visible score
//!   as a line, the held-out score *of that same variant* as a second line,
//!   and the band between them shaded — a widening band is the
//!   reward-hacking signal (a variant that got better on the tasks its
//!   meta-agent can see, and not on the tasks it cannot);
//! * a **table of variants** (id, parent, generation, status, scores, gap,
//!   children, summary), rows on the best path marked and rows whose gap
//!   grew by more than [`GAP_WARN`] over their root's gap flagged.
//!
//! Everything taken from the archive — summaries are model-written, run
//! ids and configs are operator-written — goes through [`escape`], so a
//! summary cannot inject markup or script. The output is deterministic: the
//! same archive gives the same bytes (no render timestamp).
//!
//! [`locate_run`] turns a run directory (`$VIVARIUM_HOME/runs/<name>/`, with
//! its `run.json`) into the archive and run id it describes;
//! [`open_existing`] opens an archive without creating one.

// HTML is written line by line with explicit `\n`s, multi-line literals included.
#![allow(clippy::write_with_newline)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::format::{self, first_line, gap};
use crate::archive::{Archive, VariantId, VariantRow, VariantStatus, INDEX_FILE};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::units::Usd;

/// A variant whose held-out gap (visible − held-out) exceeds its root's gap
/// by more than this is flagged in the table.
pub const GAP_WARN: f64 = 0.05;

/// Where a run directory's run lives.
#[derive(Debug, Clone, Serialize)]
pub struct RunLocation {
    /// The run directory given.
    pub run_dir: PathBuf,
    /// The run's id in the archive.
    pub run_id: String,
    /// The archive directory holding it.
    pub archive_dir: PathBuf,
}

/// Open the archive in `dir` without creating one: [`Error::Invalid`] (exit
/// 2) when there is no archive index there.
pub fn open_existing(dir: &Path) -> Result<Archive> {
    if !dir.join(INDEX_FILE).is_file() {
        return Err(Error::invalid(format!(
            "no archive at {} (no {INDEX_FILE}); run `vivarium evolve` first, or set $VIVARIUM_HOME to the home that holds it",
            dir.display()
        )));
    }
    Archive::open(dir)
}

/// Read `run_dir/run.json` (`{"run_id", "archive", …}`, written by
/// `vivarium evolve`) and find its archive.
///
/// When `run_dir` does not exist but `$VIVARIUM_HOME/runs/<run_dir>` does,
/// that one is used, so a bare run name works too. The archive is the one
/// `run.json` names when it holds an index; otherwise (the home was moved,
/// or named relatively from another directory) `run_dir/../../archive`
/// (the run's own home), and last `$VIVARIUM_HOME/archive`.
pub fn locate_run(run_dir: &Path) -> Result<RunLocation> {
    let mut dir = run_dir.to_path_buf();
    if !dir.exists() {
        let candidate = Home::from_env().root().join("runs").join(run_dir);
        if run_dir.components().count() == 1 && candidate.is_dir() {
            dir = candidate;
        } else {
            return Err(Error::invalid(format!(
                "{} does not exist; give a run directory ($VIVARIUM_HOME/runs/<name>)",
                run_dir.display()
            )));
        }
    }
    let file = dir.join("run.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "{} is not a run directory (no run.json); runs live in $VIVARIUM_HOME/runs/<name>",
                dir.display()
            ))
        } else {
            Error::io(format!("cannot read {}", file.display()), e)
        }
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(format!("{} is not valid JSON: {e}", file.display())))?;
    let run_id = json
        .get("run_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::invalid(format!("{} has no \"run_id\"", file.display())))?
        .to_string();
    let mut candidates = Vec::new();
    if let Some(a) = json.get("archive").and_then(|v| v.as_str()) {
        candidates.push(PathBuf::from(a));
    }
    if let Some(home) = dir.parent().and_then(Path::parent) {
        candidates.push(home.join("archive"));
    }
    candidates.push(Home::from_env().archive_dir());
    let archive_dir = candidates.iter().find(|c| c.join(INDEX_FILE).is_file()).cloned().ok_or_else(|| {
        Error::invalid(format!(
            "cannot find the archive of run {run_id:?} (looked in {})",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    Ok(RunLocation { run_dir: dir, run_id, archive_dir })
}

/// Escape `s` for HTML text and attribute values (double- or
/// single-quoted). Control characters other than tab and newline (which
/// HTML does not allow) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if crate::text::is_hidden(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// A score in the report (`–` when there is none).
fn fmt_score(s: Option<f64>) -> String {
    format::score(s, "–")
}

/// Short form of a variant id for labels.
fn short(id: &VariantId) -> &str {
    format::short_id(&id.0, format::ID_LABEL)
}

/// A colour for `t` in `[0, 1]` on a viridis-like ramp.
fn ramp(t: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Everything the report draws, computed once.
struct Model<'a> {
    rows: &'a [VariantRow],
    index: HashMap<&'a str, usize>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    best: Option<usize>,
    best_path: HashSet<usize>,
    /// min and max visible score among scored variants.
    range: Option<(f64, f64)>,
    /// Each variant's root.
    root_of: Vec<usize>,
    /// `llm` dollars charged per variant (by row), from the home's budget
    /// ledger; empty when nothing was priced.
    usd: Vec<Usd>,
}

impl<'a> Model<'a> {
    fn new(rows: &'a [VariantRow], best: Option<&VariantId>) -> Model<'a> {
        let index: HashMap<&str, usize> = rows.iter().enumerate().map(|(i, r)| (r.id.0.as_str(), i)).collect();
        let mut children = vec![Vec::new(); rows.len()];
        let mut roots = Vec::new();
        let mut parent_of = vec![None; rows.len()];
        for (i, r) in rows.iter().enumerate() {
            match r.parent.as_ref().and_then(|p| index.get(p.0.as_str())) {
                Some(&p) if p != i => {
                    children[p].push(i);
                    parent_of[i] = Some(p);
                }
                _ => roots.push(i),
            }
        }
        // Roots of every variant (bounded walk: a damaged index cannot loop us).
        let root_of = (0..rows.len())
            .map(|i| {
                let mut cur = i;
                for _ in 0..rows.len() {
                    match parent_of[cur] {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
                cur
            })
            .collect();
        let best = best.and_then(|b| index.get(b.0.as_str()).copied());
        let mut best_path = HashSet::new();
        let mut cur = best;
        while let Some(i) = cur {
            if !best_path.insert(i) {
                break;
            }
            cur = parent_of[i];
        }
        let scores: Vec<f64> = rows.iter().filter_map(|r| r.visible_score).collect();
        let range = scores.iter().copied().fold(None, |acc: Option<(f64, f64)>, s| match acc {
            None => Some((s, s)),
            Some((lo, hi)) => Some((lo.min(s), hi.max(s))),
        });
        Model { rows, index, children, roots, best, best_path, range, root_of, usd: Vec::new() }
    }

    /// The run's dollars per variant from `by_sha` (component sha256 →
    /// nano-dollars, as [`Ledger::by_variant`](crate::ledger::Ledger::by_variant)
    /// lists them).
    fn with_dollars(mut self, by_sha: &[(String, u64)]) -> Self {
        if by_sha.iter().any(|(_, n)| *n > 0) {
            self.usd = self
                .rows
                .iter()
                .map(|r| {
                    let sha = r.component_sha.as_deref();
                    Usd(by_sha.iter().filter(|(s, _)| Some(s.as_str()) == sha).map(|(_, n)| n).sum())
                })
                .collect();
        }
        self
    }

    fn colour(&self, r: &VariantRow) -> String {
        match (r.visible_score, self.range) {
            (Some(s), Some((lo, hi))) => ramp(if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }),
            _ => "#b8b8b8".to_string(),
        }
    }

    /// Whether `i`'s gap exceeds its root's gap by more than [`GAP_WARN`].
    fn gap_flag(&self, i: usize) -> bool {
        let root = &self.rows[self.root_of[i]];
        match (gap(&self.rows[i]), gap(root)) {
            (Some(g), Some(g0)) => g - g0 > GAP_WARN,
            (Some(g), None) => g > GAP_WARN,
            _ => false,
        }
    }
}

/// Render the report of run `run_id` in `archive` as one self-contained
/// HTML document. [`Error::Invalid`] when the archive has no such run.
pub fn render(archive: &Archive, run_id: &str) -> Result<String> {
    let run = archive
        .get_run(run_id)?
        .ok_or_else(|| Error::invalid(format!("no run {run_id:?} in the archive at {}", archive.dir().display())))?;
    let rows = archive.list(Some(run_id))?;
    let best = archive.best(run_id)?;
    let model = Model::new(&rows, best.as_ref().map(|b| &b.id)).with_dollars(&run_dollars(archive, run_id));

    let mut h = String::with_capacity(16_384 + rows.len() * 1_500);
    let title = format!("Vivarium run {}", run.id);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"vivarium {}\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&title)
    );
    let _ = write!(h, "<header><h1>{}</h1>\n", escape(&title));
    summary_cards(&mut h, &run, &model);
    h.push_str("</header>\n");

    h.push_str("<section id=\"lineage\"><h2>Lineage</h2>\n<p class=\"note\">One node per archived variant, generation by generation from the top; colour is the visible score (grey: not scored). The gold path runs from the root to the best variant. Hover a node for its summary; click it to jump to its row.</p>\n");
    lineage_svg(&mut h, &model);
    h.push_str("</section>\n");

    h.push_str("<section id=\"scores\"><h2>Score over generations</h2>\n<p class=\"note\">Dots: every scored variant (filled: visible split; hollow: held-out split). Lines: the best visible score so far, and the held-out score of that same variant. The shaded band between them is the held-out gap: when it widens, variants are improving on the tasks they can see and not on the ones they cannot — the reward-hacking signal.</p>\n");
    score_chart(&mut h, &model);
    h.push_str("</section>\n");

    let near_duplicates = archive.steps(run_id)?.iter().filter(|(_, _, o)| o == crate::evolve::NEAR_DUPLICATE).count();
    search_section(&mut h, &model, near_duplicates);

    h.push_str("<section id=\"variants\"><h2>Variants</h2>\n");
    variant_table(&mut h, &model);
    h.push_str("</section>\n");

    let config = serde_json::to_string_pretty(&run.config).unwrap_or_default();
    let _ = write!(
        h,
        "<section id=\"config\"><details><summary>Run configuration</summary><pre>{}</pre></details></section>\n",
        escape(&config)
    );
    let _ = write!(
        h,
        "<footer>Generated by vivarium {} from the archive at {}.</footer>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&archive.dir().display().to_string())
    );
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    Ok(h)
}

/// The `llm` dollars charged per variant of `run_id`, from the budget
/// ledger of the home the archive is in (`<home>/archive` beside
/// `<home>/ledger.sqlite`); nothing when the home has no ledger. Read-only
/// in effect: a report never charges anything.
fn run_dollars(archive: &Archive, run_id: &str) -> Vec<(String, u64)> {
    let Some(home) = archive.dir().parent() else { return Vec::new() };
    let path = crate::home::Home::at(home).ledger_file();
    if !path.is_file() {
        return Vec::new();
    }
    crate::ledger::Ledger::at(path).by_variant(run_id, crate::ledger::Resource::Usd).unwrap_or_else(|e| {
        tracing::warn!("report: {e}");
        Vec::new()
    })
}

/// `out` can be the report's file: it is not a directory. Errors:
/// [`Error::Invalid`] saying what to give instead.
pub fn check_output(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a directory; give -o the path of the HTML file to write, e.g. {}",
            out.display(),
            out.join("report.html").display()
        )));
    }
    Ok(())
}

/// Render the report of the run in `run_dir` and write it to `out`
/// (atomically). Returns where the run was found.
pub fn write_report(run_dir: &Path, out: &Path) -> Result<RunLocation> {
    check_output(out)?;
    let loc = locate_run(run_dir)?;
    let archive = open_existing(&loc.archive_dir)?;
    let html = render(&archive, &loc.run_id)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    }
    crate::fsio::write_atomic(out, html.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", out.display()), e))?;
    Ok(loc)
}

fn summary_cards(h: &mut String, run: &crate::archive::RunRow, m: &Model<'_>) {
    let baseline = m
        .rows
        .iter()
        .filter(|r| r.generation == 0 && r.status == VariantStatus::Evaluated)
        .filter_map(|r| r.visible_score)
        .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))));
    let best = m.best.map(|i| &m.rows[i]);
    let best_gap = best.and_then(gap);
    let root_gap = m.best.and_then(|i| gap(&m.rows[m.root_of[i]]));
    let count = |s: VariantStatus| m.rows.iter().filter(|r| r.status == s).count();
    h.push_str("<dl class=\"cards\">\n");
    let mut card = |k: &str, v: String, class: &str| {
        let _ = write!(h, "<div class=\"card {class}\"><dt>{}</dt><dd>{v}</dd></div>\n", escape(k));
    };
    card("Run", format!("{} <span class=\"status\">{}</span>", escape(&run.id), run.status), "");
    card(
        "Variants",
        format!(
            "{} <small>({} evaluated, {} failed, {} refused, {} pending)</small>",
            m.rows.len(),
            count(VariantStatus::Evaluated),
            count(VariantStatus::Failed),
            count(VariantStatus::Refused),
            count(VariantStatus::Pending)
        ),
        "",
    );
    card("Baseline visible score", fmt_score(baseline), "");
    card(
        "Best visible score",
        match best {
            Some(b) => format!(
                "{} <small><a href=\"#row-{}\">{}</a></small>",
                fmt_score(b.visible_score),
                escape(&b.id.0),
                escape(short(&b.id))
            ),
            None => "–".into(),
        },
        "best",
    );
    card("Best held-out score", fmt_score(best.and_then(|b| b.held_out_score)), "");
    let flagged = match (best_gap, root_gap) {
        (Some(g), Some(g0)) => g - g0 > GAP_WARN,
        (Some(g), None) => g > GAP_WARN,
        _ => false,
    };
    card(
        "Held-out gap of the best (visible − held-out)",
        format!(
            "{}{}",
            fmt_score(best_gap),
            match root_gap {
                Some(g0) => format!(" <small>(its root: {})</small>", fmt_score(Some(g0))),
                None => String::new(),
            }
        ),
        if flagged { "gap warn" } else { "gap" },
    );
    let _ = write!(
        h,
        "<div class=\"card\"><dt>Started</dt><dd><small>{}{}</small></dd></div>\n",
        escape(&run.started),
        run.finished.as_deref().map(|f| format!(" → {}", escape(f))).unwrap_or_default()
    );
    if !m.usd.is_empty() {
        let total = Usd(m.usd.iter().map(|u| u.0).sum());
        let _ = write!(h, "<div class=\"card\"><dt>LLM dollars</dt><dd>{total}</dd></div>\n");
    }
    h.push_str("</dl>\n");
}

const NODE_R: f64 = 10.0;
const X_STEP: f64 = 72.0;
const Y_STEP: f64 = 90.0;
const MARGIN: f64 = 40.0;

fn lineage_svg(h: &mut String, m: &Model<'_>) {
    let n = m.rows.len();
    if n == 0 {
        h.push_str("<p class=\"empty\">No variants archived in this run yet.</p>\n");
        return;
    }
    // x: leaves left to right in depth-first order, a parent centred over
    // its children; y: generation. Iterative post-order (no recursion).
    let mut x = vec![0.0f64; n];
    let mut next_leaf = 0.0f64;
    let mut visited = vec![false; n];
    for &root in &m.roots {
        let mut stack = vec![(root, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                let kids: Vec<usize> = m.children[i].iter().copied().filter(|&c| visited[c]).collect();
                x[i] = match (kids.first(), kids.last()) {
                    (Some(&a), Some(&b)) => (x[a] + x[b]) / 2.0,
                    _ => {
                        next_leaf += 1.0;
                        next_leaf - 1.0
                    }
                };
                continue;
            }
            if visited[i] {
                continue;
            }
            visited[i] = true;
            stack.push((i, true));
            for &c in m.children[i].iter().rev() {
                if !visited[c] {
                    stack.push((c, false));
                }
            }
        }
    }
    // Anything unreachable from a root (a loop in a damaged index) goes at the end.
    for i in 0..n {
        if !visited[i] {
            x[i] = next_leaf;
            next_leaf += 1.0;
        }
    }
    let max_gen = m.rows.iter().map(|r| r.generation).max().unwrap_or(0);
    let px = |i: usize| MARGIN + 20.0 + x[i] * X_STEP;
    let py = |i: usize| MARGIN + f64::from(m.rows[i].generation) * Y_STEP;
    let width = (MARGIN * 2.0 + 40.0 + (next_leaf - 1.0).max(0.0) * X_STEP).max(360.0);
    let height = MARGIN * 2.0 + f64::from(max_gen) * Y_STEP + 30.0;
    let _ = write!(
        h,
        "<div class=\"scroll\"><svg id=\"lineage-tree\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"lineage tree of {n} variants\">\n"
    );
    // Generation guides.
    for g in 0..=max_gen {
        let y = MARGIN + f64::from(g) * Y_STEP;
        let _ = write!(h, "<line class=\"guide\" x1=\"0\" y1=\"{y:.1}\" x2=\"{width:.0}\" y2=\"{y:.1}\"/><text class=\"gen\" x=\"4\" y=\"{:.1}\">gen {g}</text>\n", y - 4.0);
    }
    // Edges first, best-path edges last so they draw on top.
    let mut edges = String::new();
    let mut best_edges = String::new();
    for (i, r) in m.rows.iter().enumerate() {
        let Some(&p) = r.parent.as_ref().and_then(|p| m.index.get(p.0.as_str())) else {
            continue;
        };
        if p == i {
            continue;
        }
        // From below the parent's labels to the top of the child's dot.
        let (x1, y1, x2, y2) = (px(p), py(p) + NODE_R + 30.0, px(i), py(i) - NODE_R);
        let my = (y1 + y2) / 2.0;
        let on_best = m.best_path.contains(&i) && m.best_path.contains(&p);
        let target = if on_best { &mut best_edges } else { &mut edges };
        let _ = write!(
            target,
            "<path class=\"edge{}\" d=\"M{x1:.1},{y1:.1} C{x1:.1},{my:.1} {x2:.1},{my:.1} {x2:.1},{y2:.1}\"/>\n",
            if on_best { " best-path" } else { "" }
        );
    }
    h.push_str(&edges);
    h.push_str(&best_edges);
    for (i, r) in m.rows.iter().enumerate() {
        let (cx, cy) = (px(i), py(i));
        let mut classes = format!("node status-{}", r.status);
        if m.best_path.contains(&i) {
            classes.push_str(" best-path");
        }
        if m.best == Some(i) {
            classes.push_str(" best");
        }
        let tooltip = format!(
            "{}\nparent: {}\ngeneration {} · {} · {} children\nvisible: {} · held-out: {} · gap: {}\n\n{}",
            r.id,
            r.parent.as_ref().map(|p| p.0.as_str()).unwrap_or("none (initial variant)"),
            r.generation,
            r.status,
            r.children,
            fmt_score(r.visible_score),
            fmt_score(r.held_out_score),
            fmt_score(gap(r)),
            clip(r.summary.trim(), 600)
        );
        let _ = write!(
            h,
            "<a href=\"#row-{id}\"><g class=\"{classes}\" id=\"node-{id}\" data-id=\"{id}\" data-score=\"{score}\"><title>{tip}</title>",
            id = escape(&r.id.0),
            score = r.visible_score.map(|s| format!("{s}")).unwrap_or_default(),
            tip = escape(&tooltip)
        );
        if m.best == Some(i) {
            let _ = write!(h, "<circle class=\"halo\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{:.1}\"/>", NODE_R + 5.0);
        }
        let _ = write!(
            h,
            "<circle class=\"dot\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{NODE_R:.1}\" fill=\"{}\"/>\
             <text class=\"label\" x=\"{cx:.1}\" y=\"{:.1}\">{}</text>\
             <text class=\"label score\" x=\"{cx:.1}\" y=\"{:.1}\">{}</text></g></a>\n",
            m.colour(r),
            cy + NODE_R + 12.0,
            escape(short(&r.id)),
            cy + NODE_R + 24.0,
            match r.visible_score {
                Some(s) => format!("{s:.3}"),
                None => r.status.to_string(),
            }
        );
    }
    h.push_str("</svg></div>\n");
    // Colour legend.
    if let Some((lo, hi)) = m.range {
        h.push_str("<svg class=\"legend\" xmlns=\"http://www.w3.org/2000/svg\" width=\"320\" height=\"34\" viewBox=\"0 0 320 34\"><defs><linearGradient id=\"ramp\">");
        for k in 0..=4 {
            let t = f64::from(k) / 4.0;
            let _ = write!(h, "<stop offset=\"{t}\" stop-color=\"{}\"/>", ramp(t));
        }
        let _ = write!(
            h,
            "</linearGradient></defs><rect x=\"60\" y=\"4\" width=\"200\" height=\"12\" fill=\"url(#ramp)\"/>\
             <text x=\"56\" y=\"14\" text-anchor=\"end\">{lo:.3}</text><text x=\"264\" y=\"14\">{hi:.3}</text>\
             <text x=\"160\" y=\"30\" text-anchor=\"middle\">visible score</text></svg>\n"
        );
    }
}

/// Per generation: the best variant so far (highest visible score among
/// evaluated variants of generations ≤ g, earliest on ties).
fn best_so_far(m: &Model<'_>, max_gen: u32) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(max_gen as usize + 1);
    let mut best: Option<usize> = None;
    for g in 0..=max_gen {
        for (i, r) in m.rows.iter().enumerate() {
            if r.generation != g || r.status != VariantStatus::Evaluated {
                continue;
            }
            let Some(s) = r.visible_score else { continue };
            if best.and_then(|b| m.rows[b].visible_score).is_none_or(|b| s > b) {
                best = Some(i);
            }
        }
        out.push(best);
    }
    out
}

fn score_chart(h: &mut String, m: &Model<'_>) {
    let scored: Vec<&VariantRow> =
        m.rows.iter().filter(|r| r.visible_score.is_some() || r.held_out_score.is_some()).collect();
    if scored.is_empty() {
        h.push_str("<p class=\"empty\">No variant has been scored yet.</p>\n");
        return;
    }
    let max_gen = m.rows.iter().map(|r| r.generation).max().unwrap_or(0);
    let all: Vec<f64> = scored.iter().flat_map(|r| [r.visible_score, r.held_out_score]).flatten().collect();
    let (mut lo, mut hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    } else {
        let pad = (hi - lo) * 0.08;
        lo -= pad;
        hi += pad;
    }
    let (w, ht) = (760.0f64, 320.0f64);
    let (left, right, top, bottom) = (64.0, 150.0, 16.0, 40.0);
    let pw = w - left - right;
    let ph = ht - top - bottom;
    let xg = |g: u32| {
        if max_gen == 0 {
            left + pw / 2.0
        } else {
            left + f64::from(g) / f64::from(max_gen) * pw
        }
    };
    let ys = |s: f64| top + (hi - s) / (hi - lo) * ph;
    let _ = write!(
        h,
        "<svg id=\"score-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{ht:.0}\" viewBox=\"0 0 {w:.0} {ht:.0}\" role=\"img\" aria-label=\"visible and held-out score over generations\">\n"
    );
    // Axes and ticks.
    for k in 0..=4 {
        let s = lo + (hi - lo) * f64::from(k) / 4.0;
        let y = ys(s);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{s:.3}</text>\n",
            left + pw,
            left - 6.0,
            y + 4.0
        );
    }
    let every = (max_gen / 12).max(1);
    for g in (0..=max_gen).filter(|g| g % every == 0 || *g == max_gen) {
        let x = xg(g);
        let _ = write!(
            h,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{g}</text>\n",
            top + ph,
            top + ph + 5.0,
            top + ph + 18.0
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\"/>\
         <text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">generation</text>\
         <text class=\"axis-label\" transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">score</text>\n",
        top + ph,
        left + pw,
        top + ph,
        top + ph,
        left + pw / 2.0,
        ht - 6.0,
        top + ph / 2.0
    );
    // The best-so-far lines and the gap band between them.
    let bests = best_so_far(m, max_gen);
    let vis: Vec<(f64, f64)> = bests
        .iter()
        .enumerate()
        .filter_map(|(g, b)| b.and_then(|b| m.rows[b].visible_score).map(|s| (xg(g as u32), ys(s))))
        .collect();
    let held: Vec<(f64, f64, f64)> = bests
        .iter()
        .enumerate()
        .filter_map(|(g, b)| {
            let r = &m.rows[(*b)?];
            Some((xg(g as u32), ys(r.visible_score?), ys(r.held_out_score?)))
        })
        .collect();
    let pts = |v: &mut dyn Iterator<Item = (f64, f64)>| {
        v.map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ")
    };
    if held.len() >= 2 {
        let mut poly: Vec<(f64, f64)> = held.iter().map(|&(x, v, _)| (x, v)).collect();
        poly.extend(held.iter().rev().map(|&(x, _, o)| (x, o)));
        let _ = write!(h, "<polygon class=\"gap-band\" points=\"{}\"><title>held-out gap of the best-so-far variant</title></polygon>\n", pts(&mut poly.into_iter()));
    } else if let Some(&(x, v, o)) = held.first() {
        let _ = write!(
            h,
            "<rect class=\"gap-band\" x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"{:.1}\"/>\n",
            x - 6.0,
            v.min(o),
            (v - o).abs().max(1.0)
        );
    }
    // Every variant's scores; a bar for the 95 % interval of a variant
    // evaluated more than once.
    for r in &scored {
        let x = xg(r.generation);
        if let (Some(lo_s), Some(hi_s)) = (r.search.score_lo, r.search.score_hi) {
            let _ = write!(
                h,
                "<line class=\"ci\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"><title>{}</title></line>",
                ys(hi_s.min(hi)),
                ys(lo_s.max(lo)),
                escape(&format!(
                    "{} 95% interval [{lo_s:.4}, {hi_s:.4}] over {} evaluations",
                    r.id,
                    r.search.repeats.unwrap_or(1)
                ))
            );
        }
        let tip = format!(
            "{} (gen {}) visible {} held-out {}",
            r.id,
            r.generation,
            fmt_score(r.visible_score),
            fmt_score(r.held_out_score)
        );
        if let Some(s) = r.visible_score {
            let _ = write!(
                h,
                "<circle class=\"pt visible\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3.5\"><title>{}</title></circle>",
                ys(s),
                escape(&tip)
            );
        }
        if let Some(s) = r.held_out_score {
            let _ = write!(
                h,
                "<circle class=\"pt held-out\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3.5\"><title>{}</title></circle>",
                ys(s),
                escape(&tip)
            );
        }
    }
    h.push('\n');
    if !vis.is_empty() {
        let _ = write!(h, "<polyline class=\"line visible\" points=\"{}\"/>\n", pts(&mut vis.iter().copied()));
    }
    if !held.is_empty() {
        let _ = write!(
            h,
            "<polyline class=\"line held-out\" points=\"{}\"/>\n",
            pts(&mut held.iter().map(|&(x, _, o)| (x, o)))
        );
    }
    // Legend, and the final gap called out.
    let lx = left + pw + 14.0;
    let _ = write!(
        h,
        "<g class=\"chart-legend\"><line class=\"line visible\" x1=\"{lx}\" y1=\"24\" x2=\"{:.0}\" y2=\"24\"/><text x=\"{:.0}\" y=\"28\">best visible</text>\
         <line class=\"line held-out\" x1=\"{lx}\" y1=\"44\" x2=\"{:.0}\" y2=\"44\"/><text x=\"{:.0}\" y=\"48\">its held-out</text>\
         <rect class=\"gap-band\" x=\"{lx}\" y=\"58\" width=\"22\" height=\"10\"/><text x=\"{:.0}\" y=\"67\">held-out gap</text></g>\n",
        lx + 22.0,
        lx + 28.0,
        lx + 22.0,
        lx + 28.0,
        lx + 28.0
    );
    if let Some(b) = bests.last().copied().flatten() {
        if let Some(g) = gap(&m.rows[b]) {
            let warn = m.gap_flag(b);
            let _ = write!(
                h,
                "<text class=\"gap-callout{}\" x=\"{lx}\" y=\"92\">final gap {g:.4}</text>\n",
                if warn { " warn" } else { "" }
            );
        }
    }
    h.push_str("</svg>\n");
}

/// Islands (each one's best and its lineage), the quality-diversity grid's
/// elites, what each model was used for and how many children novelty
/// rejection skipped — only for a run that recorded them (`[search]`,
/// `[[models]]`).
fn search_section(h: &mut String, m: &Model<'_>, near_duplicates: usize) {
    let islands: std::collections::BTreeSet<u32> = m.rows.iter().filter_map(|r| r.search.island).collect();
    let cells = m.rows.iter().any(|r| r.search.cell.is_some());
    let models = m.rows.iter().any(|r| r.search.model.is_some());
    if islands.len() < 2 && !cells && !models && near_duplicates == 0 {
        return;
    }
    h.push_str("<section id=\"search\"><h2>Search</h2>\n");
    if near_duplicates > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">{near_duplicates} near-duplicate children were not evaluated (novelty rejection: their source was at least <code>novelty_threshold</code> similar to an archived variant's).</p>\n"
        );
    }
    let index: std::collections::HashMap<&str, usize> =
        m.rows.iter().enumerate().map(|(i, r)| (r.id.0.as_str(), i)).collect();
    let best_of = |rows: &mut dyn Iterator<Item = usize>| {
        rows.filter(|&i| m.rows[i].selection_score().is_some()).fold(None, |b: Option<usize>, i| match b {
            Some(j) if m.rows[j].selection_score() >= m.rows[i].selection_score() => Some(j),
            _ => Some(i),
        })
    };
    let link = |i: usize| {
        let r = &m.rows[i];
        format!("<a href=\"#row-{}\">{}</a> ({})", escape(&r.id.0), escape(short(&r.id)), fmt_score(r.visible_score))
    };
    if islands.len() >= 2 {
        h.push_str("<h3>Islands</h3>\n<p class=\"note\">Each island's variants (by the island that first made them), its best, and the best's lineage from the root — a lineage that crosses islands shows a migration.</p>\n<table>\n<thead><tr><th>island</th><th>variants</th><th>best</th><th>lineage of the best</th></tr></thead>\n<tbody>\n");
        for k in &islands {
            let members: Vec<usize> = (0..m.rows.len()).filter(|&i| m.rows[i].search.island == Some(*k)).collect();
            let best = best_of(&mut members.iter().copied());
            let mut chain = Vec::new();
            let mut at = best;
            while let Some(i) = at {
                chain.push(format!(
                    "{}<sub>{}</sub>",
                    link(i),
                    m.rows[i].search.island.map_or("–".into(), |x| x.to_string())
                ));
                at = m.rows[i].parent.as_ref().and_then(|p| index.get(p.0.as_str()).copied());
                if chain.len() > m.rows.len() {
                    break;
                }
            }
            chain.reverse();
            let _ = write!(
                h,
                "<tr><td>{k}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>\n",
                members.len(),
                best.map(link).unwrap_or_else(|| "–".into()),
                chain.join(" → ")
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    if cells {
        let mut by_cell: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, r) in m.rows.iter().enumerate() {
            if let Some(c) = &r.search.cell {
                by_cell.entry(c.as_str()).or_default().push(i);
            }
        }
        let _ = write!(h, "<h3>Quality-diversity grid</h3>\n<p class=\"note\">{} occupied cells; each keeps its best variant (its elite).</p>\n<table>\n<thead><tr><th>cell</th><th>variants</th><th>elite</th></tr></thead>\n<tbody>\n", by_cell.len());
        for (c, members) in &by_cell {
            let elite = best_of(&mut members.iter().copied());
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
                escape(c),
                members.len(),
                elite.map(link).unwrap_or_else(|| "–".into())
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    if models {
        let mut per: std::collections::BTreeMap<&str, (usize, u64, f64, usize)> = Default::default();
        for r in m.rows {
            let Some(model) = &r.search.model else { continue };
            let e = per.entry(model.as_str()).or_default();
            e.0 += 1;
            e.1 += r.search.tokens.unwrap_or(0);
            let parent = r.parent.as_ref().and_then(|p| index.get(p.0.as_str())).and_then(|&i| m.rows[i].visible_score);
            if let (Some(c), Some(p)) = (r.visible_score, parent) {
                e.2 += c - p;
                e.3 += 1;
            }
        }
        h.push_str("<h3>Models</h3>\n<p class=\"note\">Archived children per model (refused proposals leave none), the tokens their proposals spent, and their mean change over the parent's visible score.</p>\n<table>\n<thead><tr><th>model</th><th>children</th><th>tokens</th><th>mean change</th></tr></thead>\n<tbody>\n");
        for (model, (n, tokens, gain, scored)) in &per {
            let mean = if *scored > 0 { Some(gain / *scored as f64) } else { None };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{n}</td><td class=\"num\">{tokens}</td><td class=\"num\">{}</td></tr>\n",
                escape(model),
                fmt_score(mean)
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");
}

fn variant_table(h: &mut String, m: &Model<'_>) {
    if m.rows.is_empty() {
        h.push_str("<p class=\"empty\">No variants.</p>\n");
        return;
    }
    let dollars = !m.usd.is_empty();
    let _ = write!(
        h,
        "<table>\n<thead><tr><th>id</th><th>parent</th><th>gen</th><th>status</th><th>visible</th><th>held-out</th><th>gap</th><th>children</th>{}<th>summary</th></tr></thead>\n<tbody>\n",
        if dollars { "<th title=\"llm dollars charged to this variant's calls: its evaluations and its proposals\">dollars</th>" } else { "" }
    );
    for (i, r) in m.rows.iter().enumerate() {
        let mut classes = vec![format!("status-{}", r.status)];
        if m.best_path.contains(&i) {
            classes.push("best-path".into());
        }
        if m.best == Some(i) {
            classes.push("best".into());
        }
        let flag = m.gap_flag(i);
        if flag {
            classes.push("gap-warn".into());
        }
        let summary = r.summary.trim();
        let head = clip(first_line(summary), 160);
        let summary_html = if summary.is_empty() {
            String::new()
        } else if head == summary {
            escape(summary)
        } else {
            format!(
                "<details><summary>{}</summary><pre>{}</pre></details>",
                escape(&head),
                escape(&clip(summary, 20_000))
            )
        };
        let _ = write!(
            h,
            "<tr id=\"row-{id}\" class=\"{}\"><td class=\"id\" title=\"{id}\"><a href=\"#node-{id}\">{}</a>{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td>{}<td class=\"summary\">{summary_html}</td></tr>\n",
            classes.join(" "),
            escape(short(&r.id)),
            if m.best == Some(i) { " ★" } else { "" },
            r.parent.as_ref().map(|p| format!("<a href=\"#row-{}\">{}</a>", escape(&p.0), escape(short(p)))).unwrap_or_else(|| "–".into()),
            r.generation,
            r.status,
            fmt_score(r.visible_score),
            fmt_score(r.held_out_score),
            if flag { " warn" } else { "" },
            fmt_score(gap(r)),
            r.children,
            if dollars { format!("<td class=\"num\">{}</td>", m.usd[i]) } else { String::new() },
            id = escape(&r.id.0),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

const CSS: &str = r#"
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #ffffff; --panel: #f6f7f9; --gold: #e0a000; --warn: #c62828; --vis: #2f6fdb; --held: #e07b00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; padding: 16px 24px 40px; max-width: 1400px; }
h1 { font-size: 22px; margin: 4px 0 12px; } h2 { font-size: 17px; margin: 28px 0 6px; }
.note { color: var(--muted); margin: 0 0 10px; max-width: 70em; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; min-width: 150px; }
.card dt { color: var(--muted); font-size: 12px; } .card dd { margin: 2px 0 0; font-size: 18px; font-weight: 600; }
.card small { font-size: 12px; font-weight: 400; color: var(--muted); }
.card.best { border-color: var(--gold); } .card.gap.warn { border-color: var(--warn); background: #fdecea; } .card.gap.warn dd { color: var(--warn); }
.status { font-size: 12px; font-weight: 500; background: #e4e7ec; border-radius: 4px; padding: 1px 6px; }
.scroll { overflow: auto; border: 1px solid var(--line); border-radius: 8px; background: #fcfcfd; max-height: 80vh; }
svg text { font: 10px ui-monospace, SFMono-Regular, Menlo, monospace; fill: var(--fg); }
.guide { stroke: #eef0f3; } .gen { fill: var(--muted); }
.edge { fill: none; stroke: #98a2b3; stroke-width: 1.3; }
.edge.best-path { stroke: var(--gold); stroke-width: 4; }
.node .dot { stroke: #344054; stroke-width: 1; }
.node.best-path .dot { stroke: var(--gold); stroke-width: 3; }
.node.status-refused .dot, .node.status-failed .dot { stroke-dasharray: 3 2; }
.node .halo { fill: none; stroke: var(--gold); stroke-width: 2; stroke-dasharray: 4 2; }
.node .label { text-anchor: middle; } .node .score { fill: var(--muted); }
.node:hover .dot { stroke: #000; stroke-width: 3; }
.legend text { font-size: 11px; }
#score-chart { border: 1px solid var(--line); border-radius: 8px; background: #fcfcfd; max-width: 100%; height: auto; }
.grid { stroke: #eef0f3; } .axis { stroke: #98a2b3; } .tick { fill: var(--muted); } .axis-label { font-size: 11px; fill: var(--muted); }
.gap-band { fill: var(--warn); fill-opacity: 0.16; stroke: none; }
.line { fill: none; stroke-width: 2.5; } .line.visible { stroke: var(--vis); } .line.held-out { stroke: var(--held); stroke-dasharray: 6 3; }
.pt.visible { fill: var(--vis); fill-opacity: 0.45; } .pt.held-out { fill: none; stroke: var(--held); stroke-opacity: 0.7; }
.ci { stroke: var(--vis); stroke-width: 2; stroke-opacity: 0.6; }
.chart-legend text { font-size: 11px; }
.gap-callout { font-size: 12px; font-weight: 600; } .gap-callout.warn { fill: var(--warn); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.warn { color: var(--warn); font-weight: 600; }
tr.best-path td:first-child { box-shadow: inset 4px 0 0 var(--gold); } tr.best { background: #fff8e1; }
tr.gap-warn { background: #fdecea; } tr.status-refused, tr.status-failed { color: var(--muted); }
tr:target { outline: 2px solid var(--vis); }
td.summary { max-width: 60em; white-space: pre-wrap; word-break: break-word; }
td.summary pre { white-space: pre-wrap; margin: 4px 0; font-size: 12px; }
a { color: inherit; } td a { color: var(--vis); text-decoration: none; }
pre { background: var(--panel); padding: 8px; border-radius: 6px; overflow: auto; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
"#;

/// Marks the document with how many lineage nodes the browser laid out
/// (non-empty bounding box), so a headless-browser test can tell rendered
/// nodes from merely parsed ones. Reads nothing from the archive.
const SCRIPT: &str = r#"
(function () {
  var nodes = document.querySelectorAll('#lineage-tree g.node');
  var laid = 0;
  for (var i = 0; i < nodes.length; i++) {
    var b = nodes[i].getBBox();
    if (b.width > 0 && b.height > 0) laid++;
  }
  document.documentElement.setAttribute('data-rendered-nodes', String(laid));
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_controls() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{0}b\tc\nd\u{7f}"), "a\u{FFFD}b\tc\nd\u{FFFD}");
    }

    #[test]
    fn ramp_ends() {
        assert_eq!(ramp(0.0), "#440154");
        assert_eq!(ramp(1.0), "#fde725");
        assert_eq!(ramp(f64::NAN), "#440154");
    }

    #[test]
    fn clip_counts_chars() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo", 2), "hé…");
    }

    #[test]
    fn the_search_section_shows_islands_cells_models_and_intervals() {
        use crate::archive::{NewVariant, SearchFields, VariantStatus};
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(&dir.path().join("archive")).unwrap();
        a.begin_run("s", &serde_json::json!({})).unwrap();
        let mut ids: Vec<crate::archive::VariantId> = Vec::new();
        for (k, (parent, island, score, model)) in
            [(None, 0, 0.2, None), (Some(0), 1, 0.5, Some("small")), (Some(1), 1, 0.7, Some("big"))]
                .into_iter()
                .enumerate()
        {
            let t = dir.path().join(format!("t{k}"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("variant.toml"), format!("# {k}\n")).unwrap();
            let tree = a.put_tree(&t).unwrap();
            let id = a
                .add_variant(&NewVariant {
                    run_id: "s".into(),
                    parent: parent.map(|p: usize| ids[p].clone()),
                    generation: k as u32,
                    language: "wat".into(),
                    tree_sha: tree,
                    grant_digest: "g".into(),
                    summary: format!("v{k} <b>"),
                    ..Default::default()
                })
                .unwrap();
            a.set_search(
                &id,
                &SearchFields {
                    island: Some(island),
                    cell: Some(format!("{k},0")),
                    repeats: Some(3),
                    score_lo: Some(score - 0.1),
                    score_hi: Some(score + 0.1),
                    model: model.map(String::from),
                    tokens: model.map(|_| 1200),
                },
            )
            .unwrap();
            a.record_results(&id, &[], Some(score), None, VariantStatus::Evaluated).unwrap();
            ids.push(id);
        }
        let html = render(&a, "s").unwrap();
        assert!(html.contains("<h2>Search</h2>") && html.contains("<h3>Islands</h3>"), "{html}");
        assert_eq!(html.matches("<line class=\"ci\"").count(), 3, "one interval bar per variant");
        assert!(html.contains("95% interval [0.6000, 0.8000] over 3 evaluations"));
        assert!(html.contains("3 occupied cells"));
        // Island 1's best is the third variant; its lineage starts on island 0.
        let islands = &html[html.find("<h3>Islands</h3>").unwrap()..html.find("<h3>Quality").unwrap()];
        assert!(islands.contains(&format!("#row-{}", ids[2].0)), "{islands}");
        assert!(islands.contains("<sub>0</sub> → "), "a lineage crossing islands: {islands}");
        let models = &html[html.find("<h3>Models</h3>").unwrap()..];
        assert!(
            models.contains(
                "<td>big</td><td class=\"num\">1</td><td class=\"num\">1200</td><td class=\"num\">0.2000</td>"
            ),
            "{models}"
        );
        assert!(!html.contains("v1 <b>"), "summaries stay escaped");
    }
}
