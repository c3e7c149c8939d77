//! The hostile-variant corpus, table-driven.
//!
//! `tests/hostile/` holds one attack per file, in core-module text (an agent
//! written by hand against the canonical ABI) or in component text. Each file
//! opens with a `;; attack:` / `;; expect:` header. [`corpus`] holds one row
//! per attack:
//!
//! - the source: a corpus file, or an instruction for the hostile Rust guest
//!   (`tests/guests/hostile`) or the hostile Python guest
//!   (`tests/guests/hostile-python`);
//! - the grant and its limits, and the export called;
//! - the exact expected outcome: a typed failure kind and a substring of its
//!   detail, a refusal naming the imports, invalid input at load, or an exact
//!   answer or guest error.
//!
//! After every row, a well-behaved agent runs on the same host ([`host`],
//! one runtime for the whole binary) and must answer.
//!
//! The attacks already proven elsewhere are not repeated here: see
//! `limits_wat.rs`, `limits_rust.rs`, `caps.rs`, `improve.rs` and
//! `services.rs`. SECURITY.md maps every attack, those and these, to its
//! test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vivarium::caps::{Access, FileGrant, Grant, Limits};
use vivarium::home::Home;
use vivarium::runtime::bindings::{Answer, ImproveContext, SourceFile};
use vivarium::runtime::{CallOptions, CallOutcome, CallReport, Loaded, Prepared, Runtime, RuntimeConfig};
use vivarium::services::llm::LlmGrant;
use vivarium::services::log::{LogLine, LogUsage};
use vivarium::services::memory::MemoryGrant;
use vivarium::services::{llm, memory, HostServices, ServiceUsage};
use vivarium::units::{ByteSize, HumanDuration};
use vivarium::variant::{Opened, Session};
use vivarium::{Error, GuestFailure, GuestFailureKind as K};
use vivarium_tests::*;

const HOSTILE: &str = "tests/guests/hostile";
const HOSTILE_PYTHON: &str = "tests/guests/hostile-python";

// ---------------------------------------------------------------------------
// The table.

/// Where an attack comes from.
enum Source {
    /// A file under `tests/hostile/`: core-module or component text.
    File(&'static str),
    /// The hostile Rust guest: `(instruction, input)`.
    Rust(&'static str, &'static str),
    /// The hostile Python guest (`tests/guests/hostile-python`):
    /// `(instruction, input)`.
    Python(&'static str, &'static str),
}

/// Which export the attack is called through.
enum Call {
    Solve,
    /// `improve`, with one source file in the context (so the host lowers a
    /// `list<source-file>`, which needs 4-byte alignment).
    Improve,
}

/// The exact outcome an attack must end in.
enum Expect {
    /// A typed guest failure: its kind and a substring of its detail.
    Failed(K, &'static str),
    /// Refused when linking, before instantiation: exactly these imports are
    /// named, and the detail holds the substring.
    Refused(&'static [&'static str], &'static str),
    /// Refused at load as invalid input (exit 2): the detail holds the
    /// substring. Nothing was compiled into a runnable component.
    Invalid(&'static str),
    /// The guest answered exactly this.
    Answer(&'static str),
    /// The guest returned `err` with exactly this (sanitized) message.
    GuestError(&'static str),
    /// The guest returned `err`; the check looks at it.
    AnyGuestError,
    /// The guest answered; the check looks at the answer.
    AnyAnswer,
}

type Check = Box<dyn Fn(&Seen) + Send + Sync>;

struct Case {
    /// The row's name: the file stem, or `rust:<instruction>`; a second row
    /// on the same source adds `@<variant>`.
    name: String,
    source: Source,
    call: Call,
    limits: Limits,
    /// The grant: `Grant::minimal(limits)` unless the row grants a service.
    grant: Grant,
    expect: Expect,
    /// Further assertions on what was seen (usage, logs, exact texts).
    check: Option<Check>,
}

fn case(name: &str, source: Source, limits: Limits, expect: Expect) -> Case {
    let grant = Grant::minimal(limits.clone());
    Case { name: name.to_string(), source, call: Call::Solve, limits, grant, expect, check: None }
}

fn file(stem: &'static str, limits: Limits, expect: Expect) -> Case {
    case(stem, Source::File(stem), limits, expect)
}

fn rust(instruction: &'static str, input: &'static str, limits: Limits, expect: Expect) -> Case {
    case(&format!("rust:{instruction}"), Source::Rust(instruction, input), limits, expect)
}

impl Case {
    fn with(mut self, check: impl Fn(&Seen) + Send + Sync + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
    fn named(mut self, suffix: &str) -> Self {
        self.name = format!("{}@{suffix}", self.name);
        self
    }
    fn improve(mut self) -> Self {
        self.call = Call::Improve;
        self
    }
    fn granting(mut self, f: impl FnOnce(&mut Grant)) -> Self {
        f(&mut self.grant);
        self
    }
}

fn python(instruction: &'static str, input: &'static str, limits: Limits, expect: Expect) -> Case {
    case(&format!("py:{instruction}"), Source::Python(instruction, input), limits, expect)
}

/// The Python guest's manifest limits: CPython spends ~100× the fuel of
/// Rust per step.
fn py() -> Limits {
    Limits {
        fuel: 2_000_000_000,
        memory: ByteSize(128 << 20),
        wall: HumanDuration(Duration::from_secs(10)),
        ..small_limits()
    }
}

fn small() -> Limits {
    small_limits()
}

fn with_fuel(fuel: u64) -> Limits {
    Limits { fuel, ..small_limits() }
}

/// Fuel to spare: only the wall clock can end the call.
fn with_wall(ms: u64) -> Limits {
    Limits { fuel: u64::MAX / 4, wall: HumanDuration(Duration::from_millis(ms)), ..small_limits() }
}

/// What survives of the escapes in `20-log-terminal-escapes.wat` and
/// `21-error-terminal-escapes.wat`: every control character (ESC, BEL, CSI
/// U+009B, CR, BS, NUL), the right-to-left override U+202E and the
/// zero-width space U+200B is U+FFFD.
const ESCAPES_SANITIZED: &str = "\u{FFFD}[2J\u{FFFD}[31mred\u{FFFD}]52;c;cHduZWQ=\u{FFFD}\u{FFFD}31mcsi\u{FFFD}\u{FFFD}\u{FFFD}nul\u{FFFD}gnp.exe\u{FFFD}";

fn refused_detail(import: &str, reason: &str) -> String {
    format!("import refused before instantiation: {import} ({reason})")
}

/// Every attack of the corpus.
fn corpus() -> Vec<Case> {
    use Expect::*;
    let memory_service_reason = "capability `memory` is not granted to this variant";
    vec![
        // --- CPU ----------------------------------------------------------
        file(
            "01-start-loop-deadline",
            with_wall(300),
            Failed(K::Deadline, "the wall-clock limit of 300 ms was reached"),
        )
        .with(|s| assert!(s.usage.wall_ms >= 300 && s.usage.wall_ms < 300 + 2000, "{:?}", s.usage)),
        file("02-start-recursion", small(), Failed(K::StackOverflow, "the wasm stack limit was exceeded")),
        file("03-start-trap", small(), Failed(K::Trap, "unreachable")),
        file("04-log-forever", with_fuel(2_000_000), Failed(K::OutOfFuel, "the fuel budget of 2000000 was used up"))
            .with(|s| {
                assert_eq!(s.usage.fuel, s.limits.fuel, "all of it");
                assert_log_capped(s, "info");
            }),
        file("04-log-forever", with_wall(300), Failed(K::Deadline, "the wall-clock limit of 300 ms was reached"))
            .named("deadline")
            .with(|s| {
                assert!(s.usage.wall_ms < 300 + 2000, "{:?}", s.usage);
                assert_log_capped(s, "info");
            }),
        file("05-bulk-memory-fill", small(), Failed(K::OutOfFuel, "the fuel budget of 200000000 was used up"))
            // Fuel counts the bytes filled: a few fills, not seconds of them.
            .with(|s| assert!(s.usage.wall_ms < 2000, "{:?}", s.usage)),
        file("12-realloc-loop", with_fuel(10_000_000), Failed(K::OutOfFuel, "the fuel budget of 10000000 was used up")),
        // Rust's shadow stack lives in linear memory below the data: run
        // past its bottom and the next frame is out of bounds.
        rust("recurse-shadow", "", small(), Failed(K::Trap, "out of bounds memory access")),
        rust("thread-spawn", "", small(), Answer("error: Not supported (os error 58)")),
        // --- Memory -------------------------------------------------------
        file("06-table-grow", small(), Failed(K::MemoryLimit, "the limit is 100000 elements")),
        file(
            "07-table-huge-initial",
            small(),
            Invalid("table index 0 has a minimum element size of 10000000 which exceeds the limit of 100000"),
        ),
        file("08-memory-huge-initial", small(), Failed(K::MemoryLimit, "the limit is 67108864 bytes"))
            .with(|s| assert!(s.usage.memory_peak <= 64 << 20, "{:?}", s.usage)),
        file("09-memory-grow-4gib", small(), Answer("refused"))
            .with(|s| assert_eq!(s.usage.memory_peak, 65536, "{:?}", s.usage)),
        file("43-memory-refused-then-spin", small(), Failed(K::OutOfFuel, "the fuel budget of 200000000 was used up"))
            .with(|s| assert_eq!(s.usage.memory_peak, 65536, "{:?}", s.usage)),
        file(
            "37-many-core-instances",
            small(),
            Invalid("contains 101 core module instances, which exceeds the configured maximum of 64"),
        ),
        file(
            "38-memory-split-across-instances",
            small(),
            Failed(K::MemoryLimit, "linear memory would grow to 69206016 bytes; the limit is 67108864 bytes"),
        )
        .with(|s| assert!(s.usage.memory_peak <= 64 << 20, "{:?}", s.usage)),
        file(
            "39-many-memories",
            small(),
            Invalid("contains 21 Wasm linear memories, which exceeds the configured maximum of 16"),
        ),
        file(
            "40-instances-over-the-call-limit",
            Limits { instances: 8, ..small() },
            Failed(K::MemoryLimit, "resource limit exceeded: instance count too high at 9"),
        ),
        file("10-realloc-out-of-bounds", small(), Failed(K::Trap, "realloc return: beyond end of memory")),
        file("11-realloc-misaligned", small(), Failed(K::Trap, "realloc return: result not aligned")).improve(),
        file(
            "17-huge-notes",
            small(),
            Failed(K::MemoryLimit, "the guest returned 1100002 bytes; the output cap is 1048576 bytes"),
        ),
        file("18-huge-error", small(), AnyGuestError).with(|s| {
            let Outcome::GuestError(m) = &s.outcome else { unreachable!() };
            assert_eq!(m.len(), 1 << 20, "cut to the output cap");
            assert!(m.bytes().all(|b| b == b'E'));
        }),
        file("25-memory-out-of-bounds-store", small(), Failed(K::Trap, "out of bounds memory access")),
        file("26-indirect-call-type-confusion", small(), Failed(K::Trap, "indirect call type mismatch")),
        rust("huge-alloc", "100000000", small(), Failed(K::MemoryLimit, "the limit is 67108864 bytes")),
        rust("random-huge", "67108864", small(), Failed(K::Trap, "requested len 67108864 exceeds limit 1048576"))
            .with(|s| assert!(s.usage.memory_peak < 8 << 20, "nothing was handed back: {:?}", s.usage)),
        rust("random-huge", "1048576", small(), Answer("got 1048576 random bytes")).named("at-the-cap"),
        // Host work is charged to fuel: the loop ends out of fuel long
        // before the wall clock (wasmtime draws a 32-bit word per random
        // byte, so a MiB costs ~4M fuel: ~5 MiB here).
        rust("random-loop", "", with_fuel(20_000_000), Failed(K::OutOfFuel, "the fuel budget of 20000000 was used up"))
            .with(|s| assert_eq!(s.usage.fuel, 20_000_000, "{:?}", s.usage)),
        // --- Output -------------------------------------------------------
        file("13-return-invalid-utf8", small(), Failed(K::Trap, "invalid utf-8")),
        file("14-return-bad-discriminant", small(), Failed(K::Trap, "invalid expected discriminant")),
        file("15-return-pointer-misaligned", small(), Failed(K::Trap, "return pointer not aligned")),
        file("16-return-pointer-out-of-bounds", small(), Failed(K::Trap, "pointer out of bounds of memory")),
        file("19-log-invalid-utf8", small(), Failed(K::Trap, "invalid utf-8"))
            .with(|s| assert!(s.logs.is_empty(), "{:?}", s.logs)),
        file("20-log-terminal-escapes", small(), Answer("attack")).with(|s| {
            assert_eq!(s.logs, [LogLine { level: "warn".into(), message: ESCAPES_SANITIZED.into() }]);
            assert!(!s.logs[0].message.chars().any(|c| c.is_control() || ('\u{200B}'..='\u{202E}').contains(&c)));
        }),
        file("21-error-terminal-escapes", small(), GuestError(ESCAPES_SANITIZED)),
        file("22-log-bad-level", small(), Failed(K::Trap, "discriminant"))
            .with(|s| assert!(s.logs.is_empty(), "{:?}", s.logs)),
        file("23-log-out-of-bounds", small(), Failed(K::Trap, "string pointer/length out of bounds of memory")),
        file(
            "24-log-huge-message",
            small(),
            Failed(K::MemoryLimit, "the guest tried to hand the host more than 1114112 bytes at once"),
        )
        .with(|s| assert!(s.logs.is_empty(), "{:?}", s.logs)),
        rust("trap", "", small(), Failed(K::Trap, "unreachable")),
        rust("abort", "", small(), Failed(K::Trap, "unreachable")),
        rust("exit", "0", small(), Failed(K::Trap, "exit")).named("zero"),
        rust("stderr-flood", "20000", with_fuel(20_000_000_000), Answer("printed 20000 lines")).with(|s| {
            let kept: usize = s.logs.iter().map(|l| l.message.len()).sum();
            assert!(kept <= 64 << 10, "{kept}");
            assert!(s.logs.iter().all(|l| l.level == "stderr"));
            assert!(s.log_usage.dropped > 19000, "{:?}", s.log_usage);
        }),
        rust("stdin-read", "", small(), Answer("stdin: 0 bytes")),
        // --- Python -------------------------------------------------------
        python("loop", "", py(), Failed(K::OutOfFuel, "the fuel budget of 2000000000 was used up")),
        python("grow-memory", "", py(), Failed(K::MemoryLimit, "the limit is 134217728 bytes"))
            .with(|s| assert!(s.usage.memory_peak <= 128 << 20, "{:?}", s.usage)),
        python("recurse", "", py(), Failed(K::StackOverflow, "the wasm stack limit was exceeded")),
        python("huge-return", "", py(), Failed(K::MemoryLimit, "the limit is 134217728 bytes")),
        // WASI from the grant, as for a Rust guest: no preopened directory
        // (the open fails, and the uncaught error traps), no environment
        // variable; the clock reads like any wasip2 guest's.
        python("read-file", "/etc/passwd", py(), Failed(K::Trap, "unreachable")),
        python("env", "", py(), Answer("[]")),
        python("clock", "", py(), AnyAnswer).with(|s| match &s.outcome {
            Outcome::Answer(t) => assert!(t.parse::<f64>().is_ok_and(|t| t > 1.6e9), "{t}"),
            other => panic!("{other:?}"),
        }),
        python("print-flood", "", py(), Answer("printed 20000 lines")).with(|s| {
            let kept: usize = s.logs.iter().map(|l| l.message.len()).sum();
            assert!(kept <= 64 << 10, "{kept}");
            assert_eq!(s.log_usage.calls, 20_000, "{:?}", s.log_usage);
            assert!(s.log_usage.dropped >= 19_000, "{:?}", s.log_usage);
        }),
        python("raise", "", py(), GuestError("\u{FFFD}[2J\u{FFFD}]52;c;cHduZWQ=\u{FFFD}\u{FFFD}gnp.exe")),
        python("throw", "", py(), Failed(K::Trap, "unreachable")),
        // --- Imports ------------------------------------------------------
        file(
            "27-wasi-newer-patch",
            small(),
            Refused(
                &["wasi:cli/environment@0.2.99"],
                "WASI 0.2.99 is newer than or incompatible with this host's WASI 0.2.",
            ),
        ),
        file(
            "28-wasi-0-3",
            small(),
            Refused(
                &["wasi:cli/environment@0.3.0"],
                "WASI 0.3.0 is newer than or incompatible with this host's WASI 0.2.",
            ),
        ),
        file("29-wasi-unversioned", small(), Refused(&["wasi:cli/environment"], "unversioned WASI import")),
        file(
            "30-agent-made-up-interface",
            small(),
            Refused(&["vivarium:agent/telepathy@0.1.0"], "`telepathy` is not an interface of vivarium:agent@0.1.0"),
        ),
        file(
            "31-agent-newer-version",
            small(),
            Refused(&["vivarium:agent/log@0.2.0"], "this host implements vivarium:agent@0.1.0, not 0.2.0"),
        ),
        file("32-bare-function-import", small(), Refused(&["backdoor"], "not an interface import")),
        file("33-service-not-granted", small(), Refused(&["vivarium:agent/memory@0.1.0"], "")).with(move |s| {
            assert_eq!(
                s.refusal.as_deref(),
                Some(refused_detail("vivarium:agent/memory@0.1.0", memory_service_reason).as_str())
            );
        }),
        file("34-import-wrong-signature", small(), Refused(&[], "the component cannot be linked")),
        // --- Host services past their budgets --------------------------------
        file("41-llm-past-budget", with_fuel(300_000), Failed(K::OutOfFuel, "the fuel budget of 300000 was used up"))
            .granting(|g| {
                g.llm = Some(LlmGrant {
                    models: vec!["m".into()],
                    tokens: 1000,
                    max_request_bytes: ByteSize(1 << 20),
                    requests_per_minute: 1_000_000,
                    usd: None,
                })
            })
            .with(|s| {
                let u = s.services.llm.as_ref().expect("llm usage is reported");
                assert!(u.requests > 100, "{u:?}");
                assert_eq!(u.refused, u.requests, "every request refused: {u:?}");
                assert_eq!(u.tokens(), 0, "{u:?}");
                let service = host().services().llm.clone().unwrap();
                let key = llm::budget_key(None, s.sha256.as_deref().unwrap());
                assert_eq!(service.spent(&key).unwrap(), 0, "no token spent");
            }),
        file(
            "42-memory-past-quota",
            small(),
            Answer("storing 4104 bytes (key and value) would use 65664 of the 65536-byte quota (3976 bytes left)"),
        )
        .granting(|g| g.memory = Some(MemoryGrant { bytes: ByteSize(64 << 10) }))
        .with(|s| {
            let u = s.services.memory.as_ref().expect("memory usage is reported");
            assert_eq!((u.sets, u.quota_exceeded, u.bytes_written), (16, 1, 15 * 4104), "{u:?}");
            let store = host().services().memory.clone().unwrap();
            assert_eq!(store.used(s.sha256.as_deref().unwrap()).unwrap(), 15 * 4104, "nothing past the quota");
        }),
        // --- Network ------------------------------------------------------
        file(
            "35-wasi-http",
            small(),
            Refused(&["wasi:http/outgoing-handler@0.2.6"], "package `wasi:http` is not provided by this host"),
        ),
        file(
            "36-dns-lookup",
            small(),
            Refused(&["wasi:sockets/ip-name-lookup@0.2.6"], "capability `sockets` is not granted to this variant"),
        ),
    ]
}

/// A log flood kept its caps: 1000 messages kept, every call counted.
fn assert_log_capped(s: &Seen, level: &str) {
    assert_eq!(s.logs.len(), 1000, "the per-call message cap");
    assert!(s.logs.iter().all(|l| l.level == level && l.message == "x"));
    assert!(s.log_usage.calls > 1000, "{:?}", s.log_usage);
    assert_eq!(s.log_usage.dropped, s.log_usage.calls - 1000, "{:?}", s.log_usage);
}

// ---------------------------------------------------------------------------
// Running one row.

/// The host every row runs on, and the well-behaved agent after it: one
/// [`Runtime`] for the whole binary, with the services' host side (a memory
/// store in a temporary directory, and an LLM client whose provider is a
/// closed port — nothing a row does may reach it).
fn host() -> &'static Runtime {
    static HOST: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let services = HostServices {
            memory: Some(Arc::new(memory::MemoryStore::open(dir.join(memory::STORE_FILE)).unwrap())),
            archive: None,
            llm: Some(Arc::new(
                llm::LlmService::new(llm::LlmConfig::new("http://127.0.0.1:9/v1"), None, None).unwrap(),
            )),
            trainer: None,
            ledger: Default::default(),
        };
        // Compiled code is cached by content hash (the host only ever reads
        // back its own output): the Python guest takes seconds to compile.
        let config = RuntimeConfig {
            cache_dir: Some(workspace_root().join("target/guests/compile-cache")),
            ..Default::default()
        };
        Runtime::new(config).unwrap().with_services(services)
    })
}

/// A call's outcome with its output reduced to text.
#[derive(Debug)]
enum Outcome {
    Answer(String),
    GuestError(String),
    Failed(GuestFailure),
    /// `prepare` refused: the imports named and the detail.
    Refused(Vec<String>, String),
    /// `load` refused the bytes as invalid input.
    Invalid(String),
}

/// What one attack did.
#[derive(Debug)]
struct Seen {
    outcome: Outcome,
    usage: vivarium::runtime::Usage,
    limits: Limits,
    logs: Vec<LogLine>,
    log_usage: LogUsage,
    /// The refusal's detail, when refused.
    refusal: Option<String>,
    /// Usage of the granted services other than `log`.
    services: ServiceUsage,
    /// The component's sha256, once loaded.
    sha256: Option<String>,
}

impl Seen {
    /// Refused before any call.
    fn not_called(c: &Case, outcome: Outcome) -> Self {
        Seen {
            outcome,
            usage: Default::default(),
            limits: c.limits.clone(),
            logs: vec![],
            log_usage: Default::default(),
            refusal: None,
            services: Default::default(),
            sha256: None,
        }
    }
}

impl<T> From<CallReport<T>> for Seen
where
    T: std::fmt::Debug,
    T: Into<TextOf>,
{
    fn from(r: CallReport<T>) -> Self {
        let outcome = match r.outcome {
            CallOutcome::Ok(v) => Outcome::Answer(v.into().0),
            CallOutcome::GuestError(m) => Outcome::GuestError(m),
            CallOutcome::Failed(f) => Outcome::Failed(f),
        };
        Seen {
            outcome,
            usage: r.usage,
            limits: r.limits,
            logs: r.logs,
            log_usage: r.log_usage,
            refusal: None,
            services: r.services,
            sha256: None,
        }
    }
}

/// The text of a result: an answer's output, a proposal's summary.
struct TextOf(String);

impl From<vivarium::runtime::bindings::Answer> for TextOf {
    fn from(a: vivarium::runtime::bindings::Answer) -> Self {
        TextOf(a.output)
    }
}

impl From<vivarium::runtime::bindings::v0_2::Proposal> for TextOf {
    fn from(p: vivarium::runtime::bindings::v0_2::Proposal) -> Self {
        TextOf(p.summary)
    }
}

fn corpus_dir() -> PathBuf {
    workspace_root().join("tests/hostile")
}

/// The bytes of a corpus file as the host would take them: core-module text
/// is wrapped into an agent component (what `vivarium run x.wat` does),
/// component text is passed as is.
fn file_bytes(stem: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(corpus_dir().join(format!("{stem}.wat"))).unwrap();
    if vivarium::runtime::wat_text_start(&text).starts_with("(module") {
        wat_component(&text)
    } else {
        text.into_bytes()
    }
}

/// The hostile guest, compiled once per test binary.
async fn hostile_loaded() -> Loaded {
    static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);
    if let Some(l) = LOADED.lock().unwrap().clone() {
        return l;
    }
    let l = host().load(&rust_guest(HOSTILE)).await.expect("the hostile guest loads");
    *LOADED.lock().unwrap() = Some(l.clone());
    l
}

/// The hostile Python guest as data for the shared Python interpreter (the
/// default Python path: vivarium::interp), whose interpreter is built once
/// per machine (in the conformance suite's target directory) and compiled
/// once per compile cache.
async fn python_loaded() -> Loaded {
    static LOADED: tokio::sync::Mutex<Option<Loaded>> = tokio::sync::Mutex::const_new(None);
    let mut slot = LOADED.lock().await;
    if let Some(l) = slot.clone() {
        return l;
    }
    let root = workspace_root();
    let dir = root.join(HOSTILE_PYTHON);
    let target = root.join("target").join("guests-sandboxed");
    let built = tokio::task::spawn_blocking(move || {
        vivarium::build::interpreter::build_python_interpreted(&dir, &target, Duration::from_secs(600))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("building {HOSTILE_PYTHON}: {e}"));
    let l = host().load(&built.component).await.expect("the hostile Python guest loads");
    *slot = Some(l.clone());
    l
}

fn improve_context() -> ImproveContext {
    ImproveContext {
        self_id: "hostile".into(),
        sources: vec![SourceFile { path: "src/lib.rs".into(), contents: b"fn main() {}".to_vec() }],
        history: vec![],
        feedback: String::new(),
        iterations_left: 1,
    }
}

async fn attack(c: &Case) -> (Seen, Option<Prepared>) {
    let rt = host();
    let loaded = match c.source {
        Source::File(stem) => match rt.load(&file_bytes(stem)).await {
            Ok(l) => l,
            Err(Error::Invalid(detail)) => return (Seen::not_called(c, Outcome::Invalid(detail)), None),
            Err(e) => panic!("{}: load failed with {e}", c.name),
        },
        Source::Rust(..) => hostile_loaded().await,
        Source::Python(..) => python_loaded().await,
    };
    let p = match rt.prepare(&loaded, c.grant.clone()) {
        Ok(p) => p,
        Err(Error::Refused { what, detail }) => {
            let mut seen = Seen::not_called(c, Outcome::Refused(what, detail.clone()));
            seen.refusal = Some(detail);
            return (seen, None);
        }
        Err(e) => panic!("{}: prepare failed with {e}", c.name),
    };
    let t = match c.source {
        Source::Rust(instruction, input) | Source::Python(instruction, input) => task(instruction, input),
        Source::File(_) => task("attack", "attack"),
    };
    let mut seen: Seen = match c.call {
        Call::Solve => rt.solve(&p, &t, &CallOptions::default()).await.expect("no host error").into(),
        Call::Improve => {
            rt.improve(&p, &improve_context(), &CallOptions::default()).await.expect("no host error").into()
        }
    };
    seen.sha256 = Some(p.sha256.clone());
    (seen, Some(p))
}

/// Run the row `name`: the attack, its exact outcome, then a well-behaved
/// call on the same host.
async fn run(name: &str) {
    let cases = corpus();
    let c = cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no row {name}"));
    let (seen, prepared) = attack(c).await;
    match (&c.expect, &seen.outcome) {
        (Expect::Failed(kind, needle), Outcome::Failed(f)) => {
            assert_eq!(f.kind, *kind, "{name}: {f}");
            assert!(f.detail.contains(needle), "{name}: `{needle}` not in: {f}");
        }
        (Expect::Refused(imports, needle), Outcome::Refused(what, detail)) => {
            assert_eq!(what, imports, "{name}: {detail}");
            assert!(detail.contains(needle), "{name}: `{needle}` not in: {detail}");
            for import in *imports {
                assert!(detail.contains(import), "{name}: the detail names {import}: {detail}");
            }
        }
        (Expect::Invalid(needle), Outcome::Invalid(detail)) => {
            assert!(detail.contains(needle), "{name}: `{needle}` not in: {detail}");
        }
        (Expect::Answer(want), Outcome::Answer(got)) => assert_eq!(got, want, "{name}"),
        (Expect::GuestError(want), Outcome::GuestError(got)) => assert_eq!(got, want, "{name}"),
        (Expect::AnyGuestError, Outcome::GuestError(_)) | (Expect::AnyAnswer, Outcome::Answer(_)) => {}
        (_, other) => panic!("{name}: unexpected outcome {other:?}"),
    }
    if let Some(check) = &c.check {
        check(&seen);
    }
    // The host carries on.
    if let (Source::Rust(..) | Source::Python(..), Some(p)) = (&c.source, &prepared) {
        let ok = solve(host(), p, &task("ok", "")).await;
        assert_eq!(ok_output(&ok).output, "fine", "{name}: the same component answers afterwards");
    }
    assert_host_still_serves().await;
}

const ECHO: &str = "(call $answer (local.get 6) (local.get 7))";

async fn assert_host_still_serves() {
    let rt = host();
    let echo = prepare(rt, &wat_component(&agent_wat(false, "", ECHO)), Grant::minimal(small_limits())).await.unwrap();
    let r = solve(rt, &echo, &task("echo", "still here")).await;
    assert_eq!(ok_output(&r).output, "still here");
}

// ---------------------------------------------------------------------------
// The corpus as a whole.

/// The `;; attack:` / `;; expect:` header of a corpus file.
fn header(text: &str) -> (String, String) {
    let mut attack = String::new();
    let mut expect = String::new();
    let mut cur: Option<&mut String> = None;
    for line in text.lines().take_while(|l| l.starts_with(";;")) {
        let l = line.trim_start_matches(";;").trim();
        if let Some(rest) = l.strip_prefix("attack:") {
            attack = rest.trim().to_string();
            cur = Some(&mut attack);
        } else if let Some(rest) = l.strip_prefix("expect:") {
            expect = rest.trim().to_string();
            cur = Some(&mut expect);
        } else if let Some(c) = cur.as_mut() {
            c.push(' ');
            c.push_str(l);
        }
    }
    (attack, expect)
}

#[test]
fn every_corpus_file_has_a_header_and_a_row() {
    let files: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wat"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let rows: BTreeSet<String> = corpus()
        .iter()
        .filter_map(|c| match c.source {
            Source::File(stem) => Some(stem.to_string()),
            Source::Rust(..) | Source::Python(..) => None,
        })
        .collect();
    assert_eq!(files, rows, "every file has a row and every row a file");
    for stem in &files {
        let text = std::fs::read_to_string(corpus_dir().join(format!("{stem}.wat"))).unwrap();
        let (attack, expect) = header(&text);
        assert!(!attack.is_empty() && !expect.is_empty(), "{stem}: no `;; attack:` / `;; expect:` header");
    }
    // Row names are unique (each has its own test below).
    let names: Vec<String> = corpus().into_iter().map(|c| c.name).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

/// Every row has a `#[tokio::test]` below (so a failure names its attack).
#[test]
fn every_row_has_a_test() {
    // This file's own text, wherever it lives.
    let src = include_str!("hostile.rs");
    for c in corpus() {
        assert!(src.contains(&format!("row!({}, \"{}\");", test_name(&c.name), c.name)), "no test for {}", c.name);
    }
}

fn test_name(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("f{s}");
    }
    s
}

macro_rules! row {
    ($test:ident, $name:literal) => {
        #[tokio::test]
        async fn $test() {
            run($name).await;
        }
    };
}

row!(f01_start_loop_deadline, "01-start-loop-deadline");
row!(f02_start_recursion, "02-start-recursion");
row!(f03_start_trap, "03-start-trap");
row!(f04_log_forever, "04-log-forever");
row!(f04_log_forever_deadline, "04-log-forever@deadline");
row!(f05_bulk_memory_fill, "05-bulk-memory-fill");
row!(f06_table_grow, "06-table-grow");
row!(f07_table_huge_initial, "07-table-huge-initial");
row!(f08_memory_huge_initial, "08-memory-huge-initial");
row!(f09_memory_grow_4gib, "09-memory-grow-4gib");
row!(f10_realloc_out_of_bounds, "10-realloc-out-of-bounds");
row!(f11_realloc_misaligned, "11-realloc-misaligned");
row!(f12_realloc_loop, "12-realloc-loop");
row!(f13_return_invalid_utf8, "13-return-invalid-utf8");
row!(f14_return_bad_discriminant, "14-return-bad-discriminant");
row!(f15_return_pointer_misaligned, "15-return-pointer-misaligned");
row!(f16_return_pointer_out_of_bounds, "16-return-pointer-out-of-bounds");
row!(f17_huge_notes, "17-huge-notes");
row!(f18_huge_error, "18-huge-error");
row!(f19_log_invalid_utf8, "19-log-invalid-utf8");
row!(f20_log_terminal_escapes, "20-log-terminal-escapes");
row!(f21_error_terminal_escapes, "21-error-terminal-escapes");
row!(f22_log_bad_level, "22-log-bad-level");
row!(f23_log_out_of_bounds, "23-log-out-of-bounds");
row!(f24_log_huge_message, "24-log-huge-message");
row!(f25_memory_out_of_bounds_store, "25-memory-out-of-bounds-store");
row!(f26_indirect_call_type_confusion, "26-indirect-call-type-confusion");
row!(f27_wasi_newer_patch, "27-wasi-newer-patch");
row!(f28_wasi_0_3, "28-wasi-0-3");
row!(f29_wasi_unversioned, "29-wasi-unversioned");
row!(f30_agent_made_up_interface, "30-agent-made-up-interface");
row!(f31_agent_newer_version, "31-agent-newer-version");
row!(f32_bare_function_import, "32-bare-function-import");
row!(f33_service_not_granted, "33-service-not-granted");
row!(f34_import_wrong_signature, "34-import-wrong-signature");
row!(f35_wasi_http, "35-wasi-http");
row!(f36_dns_lookup, "36-dns-lookup");
row!(f37_many_core_instances, "37-many-core-instances");
row!(f38_memory_split_across_instances, "38-memory-split-across-instances");
row!(f39_many_memories, "39-many-memories");
row!(f40_instances_over_the_call_limit, "40-instances-over-the-call-limit");
row!(f41_llm_past_budget, "41-llm-past-budget");
row!(f42_memory_past_quota, "42-memory-past-quota");
row!(f43_memory_refused_then_spin, "43-memory-refused-then-spin");
row!(rust_recurse_shadow, "rust:recurse-shadow");
row!(rust_thread_spawn, "rust:thread-spawn");
row!(rust_huge_alloc, "rust:huge-alloc");
row!(rust_random_huge, "rust:random-huge");
row!(rust_random_huge_at_the_cap, "rust:random-huge@at-the-cap");
row!(rust_random_loop, "rust:random-loop");
row!(rust_trap, "rust:trap");
row!(rust_abort, "rust:abort");
row!(rust_exit_zero, "rust:exit@zero");
row!(rust_stderr_flood, "rust:stderr-flood");
row!(rust_stdin_read, "rust:stdin-read");
row!(py_loop, "py:loop");
row!(py_grow_memory, "py:grow-memory");
row!(py_recurse, "py:recurse");
row!(py_huge_return, "py:huge-return");
row!(py_read_file, "py:read-file");
row!(py_env, "py:env");
row!(py_clock, "py:clock");
row!(py_print_flood, "py:print-flood");
row!(py_raise, "py:raise");
row!(py_throw, "py:throw");

// ---------------------------------------------------------------------------
// Measurement: no path from a variant reaches the graders, the held-out
// tasks, the archive or the audit log.

/// What the host keeps that a variant must never read, by its host path.
fn measurement_targets(home: &Path) -> Vec<PathBuf> {
    vec![
        home.join("audit/audit.jsonl"),
        workspace_root().join("host/src/tasks/arith.rs"),
        workspace_root().join("host/src/tasks/mod.rs"),
    ]
}

/// A session on a fresh home whose audit log has records, and the hostile
/// guest opened under `grant`.
async fn measurement_session(files: Vec<FileGrant>) -> (tempfile::TempDir, Session, Prepared) {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::open(Home::at(tmp.path().join("home"))).unwrap();
    let loaded = session.runtime.load(&rust_guest(HOSTILE)).await.unwrap();
    let mut resolution = vivarium::caps::resolve_bare(&vivarium::caps::Policy::default(), &Default::default());
    resolution.grant.limits = small_limits();
    resolution.grant.files = files;
    let opened = Opened { loaded, resolution, manifest: None };
    let p = session.prepare(&opened).unwrap();
    // Something in the audit log worth stealing.
    let r = session.solve(&p, &task("ok", ""), &CallOptions::default()).await.unwrap();
    assert_eq!(ok_output(&r).output, "fine");
    let audit = tmp.path().join("home/audit/audit.jsonl");
    assert!(std::fs::metadata(&audit).unwrap().len() > 0, "the audit log has records");
    (tmp, session, p)
}

async fn guest_reads(session: &Session, p: &Prepared, instruction: &str, path: &str) -> String {
    let r = session.solve(p, &task(instruction, path), &CallOptions::default()).await.unwrap();
    ok_output(&r).output.clone()
}

const NOT_PERMITTED: &str = "error: Operation not permitted (os error 63)";
const NO_ENTRY: &str = "error: No such file or directory (os error 44)";

#[tokio::test]
async fn measurement_graders_tasks_and_audit_log_are_unreachable_without_files() {
    let (tmp, session, p) = measurement_session(vec![]).await;
    let home = tmp.path().join("home");
    for target in measurement_targets(&home) {
        let abs = target.display().to_string();
        assert_eq!(guest_reads(&session, &p, "read-file", &abs).await, NO_ENTRY, "{abs}");
    }
    for rel in ["audit/audit.jsonl", "host/src/tasks/arith.rs", "../host/src/tasks/arith.rs", "./audit/audit.jsonl"] {
        assert_eq!(guest_reads(&session, &p, "read-file", rel).await, NO_ENTRY, "{rel}");
    }
    for dir in ["/", ".", "..", &home.display().to_string()] {
        assert_eq!(guest_reads(&session, &p, "list-dir", dir).await, NO_ENTRY, "{dir}");
    }
    assert_eq!(guest_reads(&session, &p, "ok", "").await, "fine");
}

#[tokio::test]
async fn measurement_graders_tasks_and_audit_log_are_unreachable_from_the_scratch_area() {
    let grant = vec![FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: None }];
    let (tmp, session, p) = measurement_session(grant).await;
    let home = tmp.path().join("home");
    // The scratch area is `$VIVARIUM_HOME/scratch/<id>/scratch`: three `..`
    // lead to the home, more to the workspace.
    let depth_to_root = workspace_root().components().count() + 8;
    let up = |n: usize| vec![".."; n].join("/");
    let mut relative = vec![
        format!("scratch/{}/audit/audit.jsonl", up(3)),
        format!("scratch/{}/audit/audit.jsonl", up(4)),
        format!("scratch/{}/{}", up(depth_to_root), workspace_root().join("host/src/tasks/arith.rs").display()),
        format!("scratch/{}/archive/index.sqlite", up(3)),
    ];
    relative.push(format!("/scratch/{}/audit/audit.jsonl", up(3)));
    for path in &relative {
        assert_eq!(guest_reads(&session, &p, "read-file", path).await, NOT_PERMITTED, "{path}");
        assert_eq!(guest_reads(&session, &p, "write-file", path).await, NOT_PERMITTED, "{path}");
    }
    for target in measurement_targets(&home) {
        let abs = target.display().to_string();
        assert_eq!(guest_reads(&session, &p, "read-file", &abs).await, NO_ENTRY, "{abs}");
        assert_eq!(guest_reads(&session, &p, "append", &abs).await, NO_ENTRY, "{abs}");
    }
    for dir in ["scratch/..", "scratch/../..", "scratch/../../.."] {
        assert_eq!(guest_reads(&session, &p, "list-dir", dir).await, NOT_PERMITTED, "{dir}");
    }
    // A symbolic link planted in the call's scratch area is a host-side act,
    // not a guest's; a link the guest makes itself pointing at the audit log
    // is never followed out.
    let audit = home.join("audit/audit.jsonl").display().to_string();
    assert_eq!(
        guest_reads(&session, &p, "symlink", &format!("{audit}|scratch/a")).await,
        "error: symlink: not-permitted"
    );
    assert_eq!(
        guest_reads(&session, &p, "symlink", "../../../audit/audit.jsonl|scratch/b").await,
        "error: read: Operation not permitted (os error 63)"
    );
    // The audit log is intact and still verifies.
    let report = session.audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(guest_reads(&session, &p, "write-read", "scratch/ok.txt").await, "read back: written by the guest\n");
}

// ---------------------------------------------------------------------------
// Filling the disk past a file grant's quota (`vivarium::runtime::quota`).

/// The most a call may overshoot its quota in these tests: what the guest
/// writes between two measurements (5 ms apart) and its interruption.
const QUOTA_OVERSHOOT_BOUND: u64 = 64 << 20;

/// The hostile guest with `scratch` granted read-write under `quota`, on the
/// shared host, with fuel and wall time to write far past it.
async fn quota_guest(quota: u64) -> Prepared {
    let loaded = host().load(&rust_guest(HOSTILE)).await.unwrap();
    let mut grant =
        Grant::minimal(Limits { fuel: 20_000_000_000, wall: HumanDuration(Duration::from_secs(30)), ..small_limits() });
    grant.files = vec![FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: Some(ByteSize(quota)) }];
    host().prepare(&loaded, grant).unwrap()
}

async fn solve_in(p: &Prepared, scratch: &Path, instruction: &str, input: &str) -> CallReport<Answer> {
    let opts = CallOptions { scratch: Some(scratch.to_path_buf()), ..CallOptions::default() };
    host().solve(p, &task(instruction, input), &opts).await.unwrap()
}

#[tokio::test]
async fn files_past_the_quota() {
    const QUOTA: u64 = 1 << 20;
    let p = quota_guest(QUOTA).await;
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("scratch");

    // Under the quota: written and answered.
    let r = solve_in(&p, scratch.path(), "fill-disk", "scratch/small|0").await;
    assert_eq!(ok_output(&r).output, "wrote 0 MiB");
    let r = solve_in(&p, scratch.path(), "write-read", "scratch/ok.txt").await;
    assert_eq!(ok_output(&r).output, "read back: written by the guest\n");
    std::fs::remove_dir_all(&tree).unwrap();

    // 256 MiB against a 1 MiB quota: stopped, with the typed failure.
    let r = solve_in(&p, scratch.path(), "fill-disk", "scratch/big|256").await;
    let f = failure(&r);
    assert_eq!(f.kind, K::DiskQuota, "{f}");
    assert_eq!(f.kind.as_str(), "disk-quota");
    assert!(f.detail.starts_with("the read-write file grant `scratch` holds at least "), "{f}");
    assert!(f.detail.contains("over its quota of 1MiB (1048576 bytes)"), "{f}");
    let used = vivarium::runtime::quota::tree_usage(&tree, u64::MAX);
    println!("quota 1 MiB: the guest left {used} bytes (overshoot {} bytes)", used.saturating_sub(QUOTA));
    assert!(used > QUOTA, "the guest did write past the quota: {used}");
    assert!(used <= QUOTA + QUOTA_OVERSHOOT_BOUND, "overshoot {used} bytes is past the stated bound");

    // The tree is still over: the next call with this grant is refused
    // before the guest runs.
    let r = solve_in(&p, scratch.path(), "ok", "").await;
    assert_eq!(failure(&r).kind, K::DiskQuota);
    assert_eq!(r.usage.fuel, 0, "nothing ran");

    // A flood of empty files fills the quota too (each counts 4 KiB).
    std::fs::remove_dir_all(&tree).unwrap();
    std::fs::create_dir(&tree).unwrap();
    let r = solve_in(&p, scratch.path(), "fill-files", "scratch|100000").await;
    let f = failure(&r);
    assert_eq!(f.kind, K::DiskQuota, "{f}");
    let files = std::fs::read_dir(&tree).unwrap().count() as u64;
    println!("quota 1 MiB: the guest made {files} empty files before it was stopped");
    assert!(files > QUOTA / 4096 && files < 100_000, "{files} files");

    // The host carries on: the same component in a fresh scratch area, and
    // a well-behaved agent.
    let fresh = tempfile::tempdir().unwrap();
    let r = solve_in(&p, fresh.path(), "write-read", "scratch/ok.txt").await;
    assert_eq!(ok_output(&r).output, "read back: written by the guest\n");
    assert_host_still_serves().await;
}
