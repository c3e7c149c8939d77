//! Proposal → runnable child for a Python and a JavaScript variant on their
//! shared interpreters (`vivarium::interp`), measured in one run next to the
//! Rust child's warm rebuild — DESIGN.md: "proposal → runnable child for a
//! Python or JavaScript variant: under 100 ms".
//!
//! * **python-child-ready**: `vivarium::improve::improve` of a copy of
//!   `variants/arith-python` (guard, child tree written, bundle built,
//!   loaded, linked, load-checked), then the child opened as `evolve` opens
//!   it and its first `solve` answered (`84 / 4`, which only the child can
//!   do) — minus the meta-agent's own call (`ImproveOutcome::meta_agent_ms`).
//! * **rust-child-rebuild**: a one-line edit of a copy of `variants/echo`
//!   and its sandboxed warm rebuild (`build_variant`), as `benches/build.rs`
//!   measures it.
//! * Instance start with the ~300-line `arith-python` loaded (one `solve`
//!   on a fresh instance), its memory per instance, and 100 concurrent
//!   Python calls: their wall time and the process's peak resident memory.
//!
//! The interpreter is built once (into `target/bench-interp`) and compiled
//! once (into its compile cache); the first run of this bench pays both
//! and prints what they cost.
//!
//! Run with `cargo bench -p vivarium --bench interp`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vivarium::audit::{AuditLog, Durability};
use vivarium::caps::{Manifest, Overrides};
use vivarium::home::Home;
use vivarium::improve::{improve, ImproveRequest};
use vivarium::runtime::bindings::Task;
use vivarium::runtime::{CallOptions, CallOutcome, Runtime, RuntimeConfig};
use vivarium::variant::{build_variant, Session, MANIFEST};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn task(input: &str) -> Task {
    Task { id: "b".into(), domain: "arith".into(), instruction: "Evaluate.".into(), input: input.into() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Which interpreter, and its arith example.
#[derive(Clone, Copy)]
enum Lang {
    Python,
    Javascript,
}

impl Lang {
    fn example(self) -> (&'static str, &'static str) {
        match self {
            Lang::Python => ("arith-python", "src/agent.py"),
            Lang::Javascript => ("arith-javascript", "src/agent.js"),
        }
    }

    fn interpreter(self, target: &Path) -> vivarium::build::interpreter::Interpreter {
        let t = Duration::from_secs(900);
        match self {
            Lang::Python => vivarium::build::interpreter::python_interpreter(target, t).unwrap(),
            Lang::Javascript => vivarium::build::interpreter::javascript_interpreter(target, t).unwrap(),
        }
    }
}

/// A variant on an interpreter: `improve` of its arith example, instance
/// starts, concurrent calls.
struct Interp {
    rt: tokio::runtime::Runtime,
    session: Arc<Session>,
    parent: PathBuf,
    tmp: PathBuf,
    n: u64,
    meta: Vec<f64>,
}

impl Interp {
    fn new(tmp: &Path, durability: Durability, lang: Lang) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let target = workspace_root().join("target/bench-interp");
        let mut session = Session::open(Home::at(tmp.join("home"))).unwrap();
        session.audit = AuditLog::open_with(&session.home.audit_dir(), durability).unwrap();
        session.guest_target_dir = target.clone();
        session.runtime =
            Runtime::new(RuntimeConfig { cache_dir: Some(target.join("compile-cache")), ..Default::default() })
                .unwrap()
                .with_services(vivarium::services::HostServices::for_home(&session.home).unwrap());
        let (example, agent) = lang.example();
        let parent = tmp.join(example);
        let _ = std::fs::create_dir_all(tmp);
        std::fs::create_dir_all(parent.join("src")).unwrap();
        let src = workspace_root().join("variants").join(example);
        for f in [MANIFEST, agent] {
            std::fs::copy(src.join(f), parent.join(f)).unwrap();
        }
        // Cold: the interpreter's build and compile (once per machine).
        let started = Instant::now();
        let it = lang.interpreter(&target);
        let built = started.elapsed();
        let started = Instant::now();
        rt.block_on(session.runtime.load(&std::fs::read(&it.path).unwrap())).unwrap();
        let compiled = started.elapsed();
        println!(
            "{:?} interpreter {}: {} bytes; found or built in {:.2} s, compiled or loaded from the cache in {:.2} s",
            it.language,
            &it.sha256[..12],
            it.bytes,
            built.as_secs_f64(),
            compiled.as_secs_f64()
        );
        Interp { rt, session: Arc::new(session), parent, tmp: tmp.to_path_buf(), n: 0, meta: Vec::new() }
    }

    /// improve → child → first solve, without the meta-agent's call.
    fn child_ready(&mut self) -> Duration {
        self.n += 1;
        let out = self.tmp.join(format!("child-{}", self.n));
        let s = self.session.clone();
        let parent = self.parent.clone();
        let (total, meta) = self.rt.block_on(async move {
            let req = ImproveRequest {
                parent,
                out: out.clone(),
                feedback: "t1: operator '/' is not supported: needs DIVISION".into(),
                iterations_left: 1,
                ..Default::default()
            };
            let started = Instant::now();
            let outcome = improve(&s, &req).await.expect("improve");
            let manifest = Manifest::load(out.join(MANIFEST)).unwrap();
            let opened = s.open_built(&outcome.component, &manifest, None).await.unwrap();
            let p = s.prepare(&opened).unwrap();
            let r = s.solve(&p, &task("84 / 4"), &CallOptions::default()).await.unwrap();
            let total = started.elapsed();
            assert!(matches!(&r.outcome, CallOutcome::Ok(a) if a.output == "21"), "{:?}", r.outcome);
            let _ = std::fs::remove_dir_all(&out);
            (total, outcome.meta_agent_ms)
        });
        self.meta.push(meta);
        total.saturating_sub(Duration::from_secs_f64(meta / 1000.0))
    }

    /// One `solve` on a fresh instance of the parent: instance start with
    /// the variant loaded, plus the call. Its wall time and memory peak.
    fn instance_start(&self) -> (Duration, u64) {
        let s = self.session.clone();
        let parent = self.parent.clone();
        self.rt.block_on(async move {
            let opened = s.open_target(&parent, None, &Overrides::default()).await.unwrap();
            let p = s.prepare(&opened).unwrap();
            let started = Instant::now();
            let r = s.runtime.solve(&p, &task("1+2"), &CallOptions::default()).await.unwrap();
            let t = started.elapsed();
            assert!(matches!(&r.outcome, CallOutcome::Ok(a) if a.output == "3"), "{:?}", r.outcome);
            (t, r.usage.memory_peak)
        })
    }

    /// `n` calls at once; their wall time.
    fn concurrent(&self, n: usize) -> Duration {
        let s = self.session.clone();
        let parent = self.parent.clone();
        self.rt.block_on(async move {
            let opened = s.open_target(&parent, None, &Overrides::default()).await.unwrap();
            let p = s.prepare(&opened).unwrap();
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let (s, p) = (s.clone(), p.clone());
                set.spawn(async move { s.runtime.solve(&p, &task(&format!("{i}*2")), &CallOptions::default()).await });
            }
            while let Some(r) = set.join_next().await {
                let r = r.unwrap().unwrap();
                assert!(matches!(r.outcome, CallOutcome::Ok(_)), "{:?}", r.outcome);
            }
            started.elapsed()
        })
    }
}

/// A copy of `variants/echo`, rebuilt after a one-line edit.
struct Rust {
    tree: PathBuf,
    target: PathBuf,
    original: String,
    generation: u32,
}

impl Rust {
    fn new(tmp: &Path) -> Self {
        let src = workspace_root().join("variants/echo");
        let tree = tmp.join("bench-echo");
        std::fs::create_dir_all(tree.join("src")).unwrap();
        for f in ["Cargo.toml", "Cargo.lock", "variant.toml", "src/lib.rs"] {
            std::fs::copy(src.join(f), tree.join(f)).unwrap();
        }
        vivarium::improve::rebase_path_dependencies(&src, &tree).unwrap();
        let original = std::fs::read_to_string(tree.join("src/lib.rs")).unwrap();
        assert!(original.contains("const GENERATION: u32 = 0;"), "variants/echo changed shape; update this bench");
        // Shared with benches/build.rs, so either one warms the other.
        let target = workspace_root().join("target/bench-build/sandboxed");
        let mut r = Rust { tree, target, original, generation: 0 };
        r.rebuild();
        r
    }

    fn rebuild(&mut self) -> Duration {
        self.generation += 1;
        let text = self
            .original
            .replace("const GENERATION: u32 = 0;", &format!("const GENERATION: u32 = {};", self.generation));
        std::fs::write(self.tree.join("src/lib.rs"), text).unwrap();
        let started = Instant::now();
        let m = Manifest::load(self.tree.join("variant.toml")).unwrap();
        build_variant(&self.tree, &m, &self.target).expect("the Rust child builds");
        started.elapsed()
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let mut python = Interp::new(&tmp.path().join("fsync"), Durability::Fsync, Lang::Python);
    python.child_ready(); // warm: the parent's first open, the caches
    let mut flush = Interp::new(&tmp.path().join("flush"), Durability::Flush, Lang::Python);
    flush.child_ready();
    let mut js = Interp::new(&tmp.path().join("js"), Durability::Fsync, Lang::Javascript);
    js.child_ready();
    let mut rust = Rust::new(tmp.path());

    let mut c = Criterion::default().configure_from_args().sample_size(10).measurement_time(Duration::from_secs(10));
    let mut group = c.benchmark_group("proposal-to-runnable-child");
    group.bench_function("python-child-ready", |b| b.iter_custom(|n| (0..n).map(|_| python.child_ready()).sum()));
    group.bench_function("javascript-child-ready", |b| b.iter_custom(|n| (0..n).map(|_| js.child_ready()).sum()));
    group.bench_function("rust-child-rebuild", |b| b.iter_custom(|n| (0..n).map(|_| rust.rebuild()).sum()));
    group.finish();

    // The same, interleaved, for the summary.
    let (mut py, mut pf, mut rs, mut jsr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        py.push(python.child_ready().as_secs_f64() * 1000.0);
        pf.push(flush.child_ready().as_secs_f64() * 1000.0);
        jsr.push(js.child_ready().as_secs_f64() * 1000.0);
        rs.push(rust.rebuild().as_secs_f64() * 1000.0);
    }
    let mut starts = Vec::new();
    let mut peak = 0;
    for _ in 0..21 {
        let (t, m) = python.instance_start();
        starts.push(t.as_secs_f64() * 1000.0);
        peak = peak.max(m);
    }
    let mut js_starts = Vec::new();
    let mut js_peak = 0;
    for _ in 0..21 {
        let (t, m) = js.instance_start();
        js_starts.push(t.as_secs_f64() * 1000.0);
        js_peak = js_peak.max(m);
    }
    let rss_before = peak_rss();
    let hundred = python.concurrent(100);
    let rss_after = peak_rss();

    println!();
    println!("proposal -> runnable child (7 interleaved pairs, medians)");
    println!(
        "  python (arith-python): improve -> child -> first solve answered, meta-agent excluded: {:.1} ms \
         (target under 100 ms); the meta-agent's own call: {:.1} ms",
        median(py),
        median(python.meta.clone())
    );
    println!("  python, the same with the audit log not fsynced (Durability::Flush): {:.1} ms", median(pf));
    println!(
        "  javascript (arith-javascript): improve -> child -> first solve answered, meta-agent excluded: {:.1} ms \
         (target under 100 ms); the meta-agent's own call: {:.1} ms",
        median(jsr),
        median(js.meta.clone())
    );
    println!("  rust (echo): warm sandboxed rebuild after a one-line edit: {:.0} ms", median(rs));
    println!(
        "instance start + one solve (Runtime::solve, no audit), arith-python (~300 lines) loaded: median {:.1} ms; \
         linear memory per instance {:.1} MiB",
        median(starts),
        peak as f64 / (1 << 20) as f64
    );
    println!(
        "instance start + one solve, arith-javascript (~280 lines) loaded: median {:.1} ms; linear memory per \
         instance {:.1} MiB",
        median(js_starts),
        js_peak as f64 / (1 << 20) as f64
    );
    println!(
        "100 concurrent Python calls: {:.0} ms wall; process peak RSS {:.0} MiB before, {:.0} MiB after",
        hundred.as_secs_f64() * 1000.0,
        rss_before as f64 / (1 << 20) as f64,
        rss_after as f64 / (1 << 20) as f64
    );
}
