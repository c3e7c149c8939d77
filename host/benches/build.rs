//! Warm rebuild of a small Rust variant after a one-line edit, inside the
//! build sandbox and outside it — DESIGN.md: "warm rebuild of a small Rust
//! variant after a one-line edit: under 3 s", and issue 4: sandbox overhead
//! under 20%.
//!
//! The variant is a copy of `variants/echo`. The sandboxed side is what
//! `vivarium improve` and `evolve` run for a child ([`build_variant`]:
//! `cargo fetch --locked`, then `cargo build --offline --locked` under
//! Landlock, a new network namespace and rlimits); the plain side is
//! [`build_rust`] with no sandbox. Each keeps its own warm target directory
//! (sandboxed output never shares a directory with unsandboxed builds).
//! Every timed iteration first rewrites one line (`GENERATION`), so each
//! build really recompiles the variant's crate.
//!
//! Run with `cargo bench -p vivarium --bench build`. The first run compiles
//! the guest SDK's dependencies twice (a few minutes on two cores); the
//! ratio is printed at the end, from criterion's medians and from
//! interleaved pairs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vivarium::build::{build_rust, BuildOutput, RustTarget};
use vivarium::caps::Manifest;
use vivarium::variant::build_variant;

/// Interleaved sandboxed/plain pairs for the paired ratio.
const PAIRS: usize = 7;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A copy of `variants/echo` under `dir`, its path dependency made absolute.
fn echo_copy(dir: &Path) -> PathBuf {
    let src = workspace_root().join("variants/echo");
    let tree = dir.join("bench-echo");
    std::fs::create_dir_all(tree.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "variant.toml", "src/lib.rs"] {
        std::fs::copy(src.join(f), tree.join(f)).unwrap();
    }
    vivarium::improve::rebase_path_dependencies(&src, &tree).unwrap();
    tree
}

struct Side {
    tree: PathBuf,
    target: PathBuf,
    sandboxed: bool,
    generation: u32,
    original: String,
}

impl Side {
    fn new(tmp: &Path, name: &str, sandboxed: bool) -> Self {
        let tree = echo_copy(&tmp.join(name));
        let original = std::fs::read_to_string(tree.join("src/lib.rs")).unwrap();
        assert!(original.contains("const GENERATION: u32 = 0;"), "variants/echo changed shape; update this bench");
        // Persistent, so a second run of the bench starts warm.
        let target = workspace_root().join("target/bench-build").join(name);
        let mut side = Side { tree, target, sandboxed, generation: 0, original };
        side.rebuild(); // warm up: the dependencies
        side
    }

    /// One-line edit, then build; the build's own duration.
    fn rebuild(&mut self) -> Duration {
        self.generation += 1;
        let text = self
            .original
            .replace("const GENERATION: u32 = 0;", &format!("const GENERATION: u32 = {};", self.generation));
        std::fs::write(self.tree.join("src/lib.rs"), text).unwrap();
        let started = Instant::now();
        let out: BuildOutput = if self.sandboxed {
            let m = Manifest::load(self.tree.join("variant.toml")).unwrap();
            build_variant(&self.tree, &m, &self.target)
        } else {
            build_rust(&self.tree, &self.target, RustTarget::WasiP2, Duration::from_secs(900))
        }
        .unwrap_or_else(|e| panic!("build failed: {e}"));
        assert!(!out.component.is_empty());
        started.elapsed()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sandboxed = Side::new(tmp.path(), "sandboxed", true);
    let mut plain = Side::new(tmp.path(), "plain", false);

    let mut c = Criterion::default().configure_from_args().sample_size(10).measurement_time(Duration::from_secs(20));
    let mut group = c.benchmark_group("warm-rebuild-one-line-edit");
    group.bench_function("sandboxed", |b| b.iter_custom(|n| (0..n).map(|_| sandboxed.rebuild()).sum()));
    group.bench_function("plain", |b| b.iter_custom(|n| (0..n).map(|_| plain.rebuild()).sum()));
    group.finish();

    let (mut s, mut p, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let a = sandboxed.rebuild().as_secs_f64();
        let b = plain.rebuild().as_secs_f64();
        s.push(a);
        p.push(b);
        ratios.push(a / b);
    }
    let (ms, mp) = (median(s), median(p));
    println!();
    println!("warm rebuild after a one-line edit ({PAIRS} interleaved pairs)");
    println!("  sandboxed  median {ms:.2} s   (target under 3 s)");
    println!("  plain      median {mp:.2} s");
    println!(
        "  sandbox overhead: {:+.0}% of medians, {:+.0}% median of pairs (target under +20%)",
        (ms / mp - 1.0) * 100.0,
        (median(ratios) - 1.0) * 100.0
    );
}
