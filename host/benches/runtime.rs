//! The runtime benchmark: the numbers of DESIGN.md ("Numbers we hold
//! ourselves to") that concern one call, measured in one run on one machine,
//! with the ratios printed at the end.
//!
//! 1. Warm instantiate + one `solve` on `variants/echo`, built for
//!    `wasm32-wasip2` and for `wasm32-unknown-unknown` (no WASI at all).
//!    Loading, compiling and linking happen once, outside the timed loop; the
//!    timed body is `Runtime::solve` — a fresh store with its limits, a fresh
//!    instance, the call, the result checks — exactly what every call pays.
//! 2. Spawning a trivial process that does the same (`/bin/echo <input>`,
//!    its output captured). Target: the call at least 1000× faster.
//! 3. A CPU-heavy kernel (`tests/guests/kernel/src/kernel.rs`: a sieve of
//!    Eratosthenes plus a xorshift-driven hash) run as a guest under the
//!    runtime's fuel and epoch limits (always on), next to the same source
//!    compiled natively into this benchmark. Target: at most 1.5× native.
//!    Kernel times are the process's CPU time, not wall time: on a small
//!    shared machine wall time mostly measures the other tenants.
//!
//! The table at the end gives each ratio twice: from criterion's medians,
//! and from interleaved runs (the median of per-pair ratios), which holds up
//! better when other work shares the machine. A diagnostic runs the kernel
//! round-robin natively, in the runtime (both builds) and on plain wasmtime
//! engines with fuel and epoch interruption switched on one at a time, to
//! show where the guest's overhead comes from.
//!
//! Run with `cargo bench -p vivarium --bench runtime` (about a minute once
//! built; the first build compiles wasmtime in release mode and the guests
//! into `target/guests`). Criterion's reports go to `target/criterion`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode};
use vivarium::build::{build_rust, RustTarget};
use vivarium::caps::{Grant, Limits};
use vivarium::runtime::bindings::{AgentPre, Task};
use vivarium::runtime::{CallOptions, CallOutcome, Prepared, Runtime, RuntimeConfig, Usage};
use vivarium::units::HumanDuration;

#[path = "../../tests/guests/kernel/src/kernel.rs"]
mod kernel;

/// `n` of the kernel: one guest call takes roughly 50–200 ms.
const KERNEL_N: u32 = 5_000_000;

/// Interleaved pairs for the paired ratios (see [`paired_ratio`]); on the
/// echo side one run is a batch of `ECHO_BATCH` warm calls against one
/// process.
const ECHO_PAIRS: usize = 101;
const ECHO_BATCH: u32 = 20;
/// Rounds of the kernel round-robin (see [`round_robin`]).
const KERNEL_ROUNDS: usize = 11;

/// The echo task's input (and the process's argument).
const ECHO_INPUT: &str = "hello, vivarium";

/// The benchmarks, as (criterion group, function).
const ECHO_WASIP2: (&str, &str) = ("instantiate_solve", "echo_wasip2");
const ECHO_UNKNOWN: (&str, &str) = ("instantiate_solve", "echo_unknown");
const PROCESS: (&str, &str) = ("process", "bin_echo");
const KERNEL_GUEST: (&str, &str) = ("kernel", "guest_wasip2");
const KERNEL_NATIVE: (&str, &str) = ("kernel", "native");
/// Diagnostics: the kernel (wasm32-unknown-unknown build, no imports) on
/// plain wasmtime engines outside the runtime, with fuel and epoch
/// interruption switched on one at a time, to show where the overhead is.
const BREAKDOWN: [(&str, bool, bool); 4] = [
    ("plain engine, fuel off, epoch off", false, false),
    ("plain engine, fuel off, epoch on", false, true),
    ("plain engine, fuel on,  epoch off", true, false),
    ("plain engine, fuel on,  epoch on", true, true),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn build(root: &Path, rel: &str, target: RustTarget) -> Vec<u8> {
    let out =
        build_rust(&root.join(rel), &vivarium::build::default_guest_target_dir(root), target, Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("building {rel} for {target}: {e}"));
    out.component
}

fn task(input: &str) -> Task {
    Task { id: "bench".into(), domain: "bench".into(), instruction: "bench".into(), input: input.into() }
}

fn prepare(tokio: &tokio::runtime::Runtime, rt: &Runtime, bytes: &[u8], limits: Limits) -> Prepared {
    let loaded = tokio.block_on(rt.load(bytes)).expect("load");
    rt.prepare(&loaded, Grant::minimal(limits)).expect("prepare")
}

/// One call; panics unless the guest answered.
fn solve_once(tokio: &tokio::runtime::Runtime, rt: &Runtime, p: &Prepared, t: &Task) -> (String, Usage) {
    let report = tokio.block_on(rt.solve(p, t, &CallOptions::default())).expect("host error");
    match report.outcome {
        CallOutcome::Ok(answer) => (answer.output, report.usage),
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// The trivial process: `/bin/echo <input>` with its output captured.
fn spawn_echo(input: &str) -> Vec<u8> {
    let out = Command::new("/bin/echo")
        .arg(input)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("spawning /bin/echo");
    assert!(out.status.success());
    out.stdout
}

/// The median of a benchmark, in nanoseconds, from criterion's
/// `estimates.json` — only when written by this run (`since`).
fn median_ns(dir: &Path, (group, function): (&str, &str), since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(function).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        None => "—".into(),
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{ns:.0} ns"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        None => "not measured",
        Some(true) => "met",
        Some(false) => "MISSED",
    }
}

/// CPU time consumed by this process, all threads, in nanoseconds
/// (`CLOCK_PROCESS_CPUTIME_ID`): unlike wall time, it does not grow while
/// other work on a shared machine holds the cores. Process-wide because the
/// runtime moves a call that computes past one epoch tick to its long-lane
/// threads; the only other thread busy meanwhile is the epoch ticker, which
/// wakes every few milliseconds.
#[cfg(target_os = "linux")]
fn cpu_ns() -> f64 {
    use std::ffi::{c_int, c_long};
    #[repr(C)]
    struct Timespec {
        sec: c_long,
        nsec: c_long,
    }
    extern "C" {
        fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    }
    const CLOCK_PROCESS_CPUTIME_ID: c_int = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is Linux's.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.sec as f64 * 1e9 + ts.nsec as f64
}

/// Elsewhere: wall time (the labels still say CPU time; Linux is the target).
#[cfg(not(target_os = "linux"))]
fn cpu_ns() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as f64
}

/// Criterion measurement: the process's CPU time ([`cpu_ns`]).
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = f64;
    type Value = Duration;

    fn start(&self) -> f64 {
        cpu_ns()
    }
    fn end(&self, start: f64) -> Duration {
        Duration::from_nanos((cpu_ns() - start).max(0.0) as u64)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// The kernel on a plain wasmtime engine (default settings, on-demand
/// allocation) with `fuel` and `epoch` interruption as asked: a fresh store
/// and instance per call, like the runtime, without any of its limits.
struct PlainKernel {
    engine: wasmtime::Engine,
    pre: AgentPre<()>,
    fuel: bool,
    epoch: bool,
}

impl PlainKernel {
    fn new(bytes: &[u8], fuel: bool, epoch: bool) -> Self {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true).consume_fuel(fuel).epoch_interruption(epoch);
        let engine = wasmtime::Engine::new(&cfg).expect("engine");
        let component = wasmtime::component::Component::new(&engine, bytes).expect("compile the kernel");
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let pre = linker.instantiate_pre(&component).expect("the unknown-unknown kernel imports nothing");
        let pre = AgentPre::new(pre).expect("an agent component");
        Self { engine, pre, fuel, epoch }
    }

    async fn solve(&self, task: &Task) -> String {
        let mut store = wasmtime::Store::new(&self.engine, ());
        if self.fuel {
            store.set_fuel(u64::MAX).expect("fuel");
        }
        if self.epoch {
            // Nothing increments this engine's epoch: the checks run, never fire.
            store.set_epoch_deadline(u64::MAX);
        }
        let agent = self.pre.instantiate_async(&mut store).await.expect("instantiate");
        let answer = agent.vivarium_agent_task_agent().call_solve(&mut store, task).await.expect("call");
        answer.expect("an answer").output
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Time `a` and `b` (wall time) alternately `pairs` times, which goes first
/// alternating too, where one run of `b` does `b_reps` repetitions, and
/// return the median of the ratios time(a) / (time(b) / `b_reps`): a ratio
/// that holds up when the load of a shared machine drifts during the run.
fn paired_ratio(pairs: usize, mut a: impl FnMut(), b_reps: u32, mut b: impl FnMut()) -> f64 {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let ratios = (0..pairs)
        .map(|i| {
            let r = if i % 2 == 0 {
                let ta = time(&mut a);
                ta / time(&mut b)
            } else {
                let tb = time(&mut b);
                time(&mut a) / tb
            };
            r * f64::from(b_reps)
        })
        .collect();
    median(ratios)
}

/// One run's figures in [`round_robin`], in nanoseconds.
struct RobinResult {
    /// Median wall time.
    wall: f64,
    /// Median process CPU time.
    cpu: f64,
    /// Median over rounds of its CPU time / the first run's, same round.
    cpu_ratio: f64,
}

/// Run each of `runs` once per round, `rounds` times (each round starting
/// one further along), measuring wall and process CPU time.
fn round_robin(rounds: usize, runs: &mut [&mut dyn FnMut()]) -> Vec<RobinResult> {
    let k = runs.len();
    let mut wall = vec![Vec::with_capacity(rounds); k];
    let mut cpu = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (j + r) % k;
            let (start, cpu_start) = (Instant::now(), cpu_ns());
            (runs[i])();
            cpu[i].push(cpu_ns() - cpu_start);
            wall[i].push(start.elapsed().as_secs_f64() * 1e9);
        }
    }
    (0..k)
        .map(|i| RobinResult {
            wall: median(wall[i].clone()),
            cpu: median(cpu[i].clone()),
            cpu_ratio: median((0..rounds).map(|r| cpu[i][r] / cpu[0][r]).collect()),
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // criterion then runs every routine once without measuring.
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");

    let root = workspace_root();
    let echo_p2 = build(&root, "variants/echo", RustTarget::WasiP2);
    let echo_unknown = build(&root, "variants/echo", RustTarget::Unknown);
    let kernel_p2 = build(&root, "tests/guests/kernel", RustTarget::WasiP2);
    let kernel_unknown = build(&root, "tests/guests/kernel", RustTarget::Unknown);

    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");

    // Echo under the default limits.
    let echo_task = task(ECHO_INPUT);
    let p_echo_p2 = prepare(&tokio, &rt, &echo_p2, Limits::default());
    let p_echo_unknown = prepare(&tokio, &rt, &echo_unknown, Limits::default());
    let echo_usage = [&p_echo_p2, &p_echo_unknown].map(|p| {
        let (output, usage) = solve_once(&tokio, &rt, p, &echo_task);
        assert_eq!(output, ECHO_INPUT);
        usage
    });
    assert_eq!(spawn_echo(ECHO_INPUT), format!("{ECHO_INPUT}\n").as_bytes());

    // The kernel under fuel and epoch limits high enough to finish.
    let kernel_limits =
        Limits { fuel: 1_000_000_000_000, wall: HumanDuration(Duration::from_secs(120)), ..Limits::default() };
    let kernel_task = task(&KERNEL_N.to_string());
    let p_kernel = prepare(&tokio, &rt, &kernel_p2, kernel_limits.clone());
    let p_kernel_unknown = prepare(&tokio, &rt, &kernel_unknown, kernel_limits);
    let native_result = kernel::kernel(black_box(KERNEL_N));
    let (guest_result, kernel_usage) = solve_once(&tokio, &rt, &p_kernel, &kernel_task);
    assert_eq!(guest_result, native_result.to_string(), "the guest and the native kernel disagree");
    assert_eq!(solve_once(&tokio, &rt, &p_kernel_unknown, &kernel_task).0, native_result.to_string());
    let plain: Vec<PlainKernel> =
        BREAKDOWN.iter().map(|&(_, fuel, epoch)| PlainKernel::new(&kernel_unknown, fuel, epoch)).collect();
    for k in &plain {
        assert_eq!(tokio.block_on(k.solve(&kernel_task)), native_result.to_string());
    }

    let out_dir = root.join("target").join("criterion");
    let started = SystemTime::now();
    let mut c = Criterion::default().output_directory(&out_dir).configure_from_args();

    {
        let mut g = c.benchmark_group(ECHO_WASIP2.0);
        g.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for (id, p) in [(ECHO_WASIP2.1, &p_echo_p2), (ECHO_UNKNOWN.1, &p_echo_unknown)] {
            g.bench_function(id, |b| {
                b.iter(|| {
                    let report = tokio.block_on(rt.solve(p, &echo_task, &CallOptions::default())).expect("host error");
                    assert!(matches!(report.outcome, CallOutcome::Ok(_)));
                    black_box(report)
                })
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group(PROCESS.0);
        g.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        g.bench_function(PROCESS.1, |b| b.iter(|| black_box(spawn_echo(black_box(ECHO_INPUT)))));
        g.finish();
    }
    c.final_summary();
    // The kernel in CPU time: what the code costs, not how long this process
    // waited for a core on a shared machine.
    let mut c = Criterion::default().with_measurement(CpuTime).output_directory(&out_dir).configure_from_args();
    {
        let mut g = c.benchmark_group(KERNEL_GUEST.0);
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function(KERNEL_GUEST.1, |b| {
            b.iter(|| {
                let report =
                    tokio.block_on(rt.solve(&p_kernel, &kernel_task, &CallOptions::default())).expect("host error");
                assert!(matches!(report.outcome, CallOutcome::Ok(_)));
                black_box(report)
            })
        });
        g.bench_function(KERNEL_NATIVE.1, |b| b.iter(|| black_box(kernel::kernel(black_box(KERNEL_N)))));
        g.finish();
    }
    c.final_summary();

    if !measuring {
        return;
    }
    // The same ratios from interleaved single calls, after criterion.
    let call_p2 = || {
        for _ in 0..ECHO_BATCH {
            black_box(solve_once(&tokio, &rt, &p_echo_p2, &echo_task));
        }
    };
    let call_unknown = || {
        for _ in 0..ECHO_BATCH {
            black_box(solve_once(&tokio, &rt, &p_echo_unknown, &echo_task));
        }
    };
    let process_once = || {
        black_box(spawn_echo(ECHO_INPUT));
    };
    let paired_p2 = paired_ratio(ECHO_PAIRS, process_once, ECHO_BATCH, call_p2);
    let paired_unknown = paired_ratio(ECHO_PAIRS, process_once, ECHO_BATCH, call_unknown);
    let mut native_run = || {
        black_box(kernel::kernel(black_box(KERNEL_N)));
    };
    let mut guest_run = || {
        black_box(solve_once(&tokio, &rt, &p_kernel, &kernel_task));
    };
    let mut guest_unknown_run = || {
        black_box(solve_once(&tokio, &rt, &p_kernel_unknown, &kernel_task));
    };
    let mut plain_runs: Vec<_> = plain
        .iter()
        .map(|k| {
            let (tokio, kernel_task) = (&tokio, &kernel_task);
            move || {
                black_box(tokio.block_on(k.solve(kernel_task)));
            }
        })
        .collect();
    let mut runs: Vec<&mut dyn FnMut()> = vec![&mut native_run, &mut guest_run, &mut guest_unknown_run];
    runs.extend(plain_runs.iter_mut().map(|r| r as &mut dyn FnMut()));
    let robin = round_robin(KERNEL_ROUNDS, &mut runs);
    let paired_kernel = robin[1].cpu_ratio;

    let m = |id| median_ns(&out_dir, id, started);
    let (p2, unknown, process) = (m(ECHO_WASIP2), m(ECHO_UNKNOWN), m(PROCESS));
    let (guest, native) = (m(KERNEL_GUEST), m(KERNEL_NATIVE));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!("Vivarium runtime benchmark — medians, one run, {cores} cores, load average now {load}");
    println!("{:-<78}", "");
    println!("{:<52} {:>12}", "measurement (echo, process: wall; kernel: CPU)", "median");
    println!("{:<52} {:>12}", "instantiate + solve, echo (wasm32-wasip2)", fmt_ns(p2));
    println!("{:<52} {:>12}", "instantiate + solve, echo (wasm32-unknown-unknown)", fmt_ns(unknown));
    println!("{:<52} {:>12}", "spawn /bin/echo, output captured", fmt_ns(process));
    println!("{:<52} {:>12}", format!("kernel({KERNEL_N}) as a guest, fuel + epoch on, CPU"), fmt_ns(guest));
    println!("{:<52} {:>12}", format!("kernel({KERNEL_N}) native, CPU"), fmt_ns(native));
    println!("{:-<78}", "");
    println!("{:<34} {:>10} {:>10} {:>9}  {}", "ratio", "medians", "paired", "target", "");
    let r_p2 = ratio(process, p2);
    let r_unknown = ratio(process, unknown);
    let r_kernel = ratio(guest, native);
    let row = |name: &str, medians: String, paired: String, target: &str, ok: Option<bool>| {
        println!("{name:<34} {medians:>10} {paired:>10} {target:>9}  {}", verdict(ok));
    };
    let all = |ok: Option<bool>, paired: bool| ok.map(|ok| ok && paired);
    row(
        "process / call (wasip2)",
        fmt_ratio(r_p2),
        fmt_ratio(Some(paired_p2)),
        "≥ 1000×",
        all(r_p2.map(|r| r >= 1000.0), paired_p2 >= 1000.0),
    );
    row(
        "process / call (unknown)",
        fmt_ratio(r_unknown),
        fmt_ratio(Some(paired_unknown)),
        "≥ 1000×",
        all(r_unknown.map(|r| r >= 1000.0), paired_unknown >= 1000.0),
    );
    row("call median (wasip2)", fmt_ns(p2), String::new(), "< 50 µs", p2.map(|ns| ns < 50_000.0));
    row("call median (unknown)", fmt_ns(unknown), String::new(), "< 50 µs", unknown.map(|ns| ns < 50_000.0));
    row(
        "kernel guest / native",
        fmt_ratio(r_kernel),
        fmt_ratio(Some(paired_kernel)),
        "≤ 1.5×",
        all(r_kernel.map(|r| r <= 1.5), paired_kernel <= 1.5),
    );
    println!("medians: ratio of criterion's medians (process / call: wall time; kernel: process CPU time)");
    println!("paired: median ratio of interleaved runs: {ECHO_PAIRS} × (1 process vs {ECHO_BATCH} calls), wall;");
    println!("        {KERNEL_ROUNDS} rounds of the kernel round-robin below, process CPU time");
    println!("{:-<78}", "");
    println!("kernel round-robin, {KERNEL_ROUNDS} rounds: medians of wall and CPU time, median per-round CPU ratio");
    let labels =
        ["native (this benchmark's build)", "runtime, wasm32-wasip2 build", "runtime, wasm32-unknown-unknown build"]
            .into_iter()
            .chain(BREAKDOWN.iter().map(|&(label, _, _)| label));
    println!("  {:<40} {:>10} {:>10} {:>8}", "", "wall", "CPU", "ratio");
    for (label, r) in labels.zip(&robin) {
        println!(
            "  {label:<40} {:>10} {:>10} {:>8}",
            fmt_ns(Some(r.wall)),
            fmt_ns(Some(r.cpu)),
            fmt_ratio(Some(r.cpu_ratio))
        );
    }
    println!("  (plain engine: wasm32-unknown-unknown build, default wasmtime settings, on-demand allocation)");
    println!("{:-<78}", "");
    println!(
        "kernel result {native_result} (guest and native agree); per guest call: fuel {}, memory peak {} KiB",
        kernel_usage.fuel,
        kernel_usage.memory_peak >> 10
    );
    println!(
        "echo per call: fuel {} / {}, memory peak {} / {} KiB (wasip2 / unknown)",
        echo_usage[0].fuel,
        echo_usage[1].fuel,
        echo_usage[0].memory_peak >> 10,
        echo_usage[1].memory_peak >> 10
    );
}
