//! The CLI contract: `--json` shapes, exit codes (0 ok, 1 internal, 2 invalid
//! input, 3 refused, 4 guest failed) and `$VIVARIUM_HOME`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const ECHO_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 3)))
    (local.get $p))
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (local.get 6))
    (i32.store (i32.const 8) (local.get 7))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable))"#;

fn vivarium(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vivarium")).args(args).env("VIVARIUM_HOME", home).output().expect("vivarium runs")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("echo.wat"), ECHO_WAT).unwrap();
        std::fs::write(
            dir.path().join("loop.wat"),
            ECHO_WAT.replace("(i32.store8 (i32.const 0) (i32.const 0))", "(loop $l (br $l))"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("evil.wat"),
            r#"(component (import "evil:corp/backdoor" (instance (export "open" (func)))))"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("task.json"),
            r#"{"id":"t1","domain":"echo","instruction":"echo","input":"hi there"}"#,
        )
        .unwrap();
        Self { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }
    fn run(&self, args: &[&str]) -> Output {
        vivarium(&self.home(), args)
    }
}

#[test]
fn run_ok_prints_the_contract_json() {
    let f = Fixture::new();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["output"], "hi there");
    assert!(v["usage"]["fuel"].as_u64().unwrap() > 0);
    assert!(v["usage"]["memory_peak"].as_u64().unwrap() >= 65536);
    assert!(v["usage"]["wall_ms"].is_u64());
}

#[test]
fn a_limit_hit_exits_4_naming_the_reason() {
    let f = Fixture::new();
    let o = f.run(&["run", &f.p("loop.wat"), "--task", &f.p("task.json"), "--json", "--fuel", "100000"]);
    assert_eq!(o.status.code(), Some(4));
    let v = json(&o);
    assert_eq!(v["status"], "trapped");
    assert_eq!(v["reason"], "out-of-fuel");
    assert_eq!(v["usage"]["fuel"], 100000);

    let o = f.run(&[
        "run",
        &f.p("loop.wat"),
        "--task",
        &f.p("task.json"),
        "--json",
        "--wall",
        "200ms",
        "--fuel",
        "999999999999999",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(json(&o)["reason"], "deadline");
}

#[test]
fn an_import_not_provided_exits_3_naming_it() {
    let f = Fixture::new();
    let o = f.run(&["run", &f.p("evil.wat"), "--task", &f.p("task.json"), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["status"], "refused");
    assert_eq!(v["reason"], "evil:corp/backdoor");
    // The refusal is in the audit log.
    let o = f.run(&["audit", "log", "--event", "refused-import", "--json"]);
    assert_eq!(json(&o).as_array().unwrap().len(), 1);
}

/// The host as a user installs it: `cargo install` puts `vivarium` in
/// `~/.cargo/bin`, beside rustup and cargo's configuration (registry tokens,
/// `[env]` secrets); a system install puts it in `/usr/local/bin`. The
/// held-out tasks and graders live in that binary. A Rust child that
/// `include_bytes!`s any of them, built by the installed copy itself, is
/// refused by the build sandbox, and nothing of them reaches the output.
#[test]
fn a_child_including_the_installed_host_its_cargo_config_or_rustup_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let real_cargo_home =
        std::env::var_os("CARGO_HOME").map(std::path::PathBuf::from).unwrap_or_else(|| home.join(".cargo"));

    // A cargo home standing for ~/.cargo: the installed host, a
    // configuration with secrets, credentials, and the real registry.
    let cargo_home = tmp.path().join("cargo-home");
    std::fs::create_dir_all(cargo_home.join("bin")).unwrap();
    let installed = cargo_home.join("bin/vivarium");
    std::fs::copy(env!("CARGO_BIN_EXE_vivarium"), &installed).unwrap();
    let held_out = vivarium::tasks::arith::suite().held_out[0].task.input.clone();
    let host_bytes = std::fs::read(&installed).unwrap();
    assert!(host_bytes.windows(held_out.len()).any(|w| w == held_out.as_bytes()), "the host holds {held_out:?}");
    std::fs::write(
        cargo_home.join("config.toml"),
        "[registries.mine]\nindex = \"https://mine.example/index\"\n[env]\nAPI_KEY = \"secret-in-config\"\n",
    )
    .unwrap();
    std::fs::write(cargo_home.join("credentials.toml"), "[registries.mine]\ntoken = \"secret-token\"\n").unwrap();
    std::os::unix::fs::symlink(real_cargo_home.join("registry"), cargo_home.join("registry")).unwrap();
    // And a system-wide copy, where this user may write there (root).
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let system = std::path::Path::new("/usr/local/bin").join(format!("vivarium-cli-probe-{}", std::process::id()));
    let _system = std::fs::copy(&installed, &system).ok().map(|_| Remove(system.clone()));

    let mut leaks = vec![installed.clone(), cargo_home.join("config.toml"), cargo_home.join("credentials.toml")];
    leaks.extend(
        [real_cargo_home.join("bin/rustup"), home.join(".rustup/settings.toml")].into_iter().filter(|p| p.is_file()),
    );
    if _system.is_some() {
        leaks.push(system.clone());
    }

    // The child: variants/echo, including each of them.
    let child = tmp.path().join("child");
    std::fs::create_dir_all(child.join("src")).unwrap();
    let echo = root.join("variants/echo");
    // Its own crate name: the guest target directory is shared.
    let rename = |text: String| text.replace("name = \"echo\"", "name = \"cli-include-probe\"");
    let manifest = rename(std::fs::read_to_string(echo.join("Cargo.toml")).unwrap())
        .replace("path = \"../../guest-sdk\"", &format!("path = {:?}", root.join("guest-sdk").display().to_string()));
    std::fs::write(child.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(child.join("Cargo.lock"), rename(std::fs::read_to_string(echo.join("Cargo.lock")).unwrap()))
        .unwrap();
    for f in ["variant.toml", "src/lib.rs"] {
        std::fs::copy(echo.join(f), child.join(f)).unwrap();
    }
    let includes: String = leaks.iter().map(|p| format!("include_bytes!({:?}), ", p.display().to_string())).collect();
    let mut lib = std::fs::read_to_string(child.join("src/lib.rs")).unwrap();
    lib.push_str(&format!("\npub static LEAKED: &[&[u8]] = &[{includes}];\n"));
    std::fs::write(child.join("src/lib.rs"), lib).unwrap();

    // Built by the installed copy, as its user runs it.
    let o = std::process::Command::new(&installed)
        .args(["build", &child.display().to_string(), "--json"])
        .env("CARGO_HOME", &cargo_home)
        .env("VIVARIUM_HOME", tmp.path().join("home"))
        .env("VIVARIUM_GUEST_TARGET_DIR", root.join("target/guests"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["status"], "refused");
    assert_eq!(v["reason"], "build-sandbox");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("outside the build sandbox"), "{detail}");
    for leak in &leaks {
        let line = format!("couldn't read `{}`: Permission denied", leak.display());
        assert!(detail.contains(&line), "no refusal of {}: {detail}", leak.display());
    }
    for secret in [held_out.as_str(), "secret-in-config", "secret-token"] {
        assert!(!out.contains(secret), "{secret:?} leaked: {out}");
    }
}

#[test]
fn invalid_input_exits_2_with_a_clear_message() {
    let f = Fixture::new();
    std::fs::write(f.p("junk.wasm"), b"MZ\x90\0 definitely not wasm").unwrap();
    let o = f.run(&["run", &f.p("junk.wasm"), "--task", &f.p("task.json")]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.wasm") && err.contains("not a WebAssembly component"), "{err}");

    std::fs::write(f.p("bad-task.json"), r#"{"id": 1}"#).unwrap();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("bad-task.json")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad-task.json:1:"), "{}", String::from_utf8_lossy(&o.stderr));

    let vdir = f.dir.path().join("badvariant");
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::write(vdir.join("variant.toml"), "[variant]\nname = \"x\"\nlanguage = \"wat\"\n\n[limits]\ngpu = 3\n")
        .unwrap();
    let o = f.run(&["run", &vdir.display().to_string(), "--task", &f.p("task.json")]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("variant.toml:6:1") && err.contains("gpu"), "{err}");

    let o = f.run(&["run"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn grade_names_a_malformed_samples_line_and_a_missing_problem_file_with_exit_2() {
    let f = Fixture::new();
    std::fs::write(
        f.p("samples.jsonl"),
        "{\"task_id\": \"HumanEval/0\", \"completion\": \"    return 1\\n\"}\n{\"task_id\": \"HumanEval/1\"}\n",
    )
    .unwrap();
    let o = f.run(&["grade", "humaneval", &f.p("samples.jsonl"), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v = json(&o);
    assert!(v["detail"].as_str().unwrap().contains("samples.jsonl:2: no \"completion\""), "{v}");
    assert!(!Path::new(&format!("{}_results.jsonl", f.p("samples.jsonl"))).exists(), "nothing graded");

    let o = f.run(&["grade", "mbpp", &f.p("samples.jsonl")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("knows `humaneval`"));

    std::fs::write(f.p("samples.jsonl"), "{\"task_id\": \"HumanEval/0\", \"completion\": \"\"}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["grade", "humaneval", &f.p("samples.jsonl")])
        .env("VIVARIUM_HOME", f.dir.path().join("home"))
        .env("VIVARIUM_HUMANEVAL", f.p("missing.jsonl.gz"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("VIVARIUM_HUMANEVAL") && err.contains("missing.jsonl.gz"), "{err}");
}

#[test]
fn inspect_shows_imports_exports_and_refusals() {
    let f = Fixture::new();
    let o = f.run(&["inspect", &f.p("echo.wat"), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    // Type definitions only; no function import, no WASI.
    assert_eq!(v["imports"], serde_json::json!(["vivarium:agent/types@0.1.0"]));
    assert_eq!(v["is_agent"], true);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    let o = f.run(&["inspect", &f.p("evil.wat"), "--json"]);
    let v = json(&o);
    assert_eq!(v["refused"][0]["import"], "evil:corp/backdoor");
}

#[test]
fn audit_verify_detects_a_changed_byte() {
    let f = Fixture::new();
    for _ in 0..3 {
        let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json")]);
        assert_eq!(o.status.code(), Some(0));
    }
    let o = f.run(&["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["ok"], true);
    assert_eq!(json(&o)["records"], 6, "a grant and a use record per run");

    let log = f.home().join("audit").join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let tampered = text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"OK\"", 1);
    assert_ne!(text, tampered);
    std::fs::write(&log, tampered).unwrap();
    let o = f.run(&["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad_seq"], 1);
}

#[test]
fn audit_grants_and_diff_explain_a_grant() {
    let f = Fixture::new();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json"), "--json", "--fuel", "1000000"]);
    assert_eq!(o.status.code(), Some(0));
    let sha = json(&f.run(&["inspect", &f.p("echo.wat"), "--json"]))["sha256"].as_str().unwrap().to_string();
    let o = f.run(&["audit", "grants", &sha[..12], "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    let fuel = v["provenance"].as_array().unwrap().iter().find(|p| p["field"] == "limits.fuel").unwrap().clone();
    assert_eq!(fuel["source"], "policy-default", "inspect ran last, with no flags");
    assert_eq!(v["grant"]["limits"]["fuel"], 5_000_000_000u64);

    let o = f.run(&["run", &f.p("loop.wat"), "--task", &f.p("task.json"), "--fuel", "1000"]);
    assert_eq!(o.status.code(), Some(4));
    let loop_sha = json(&f.run(&["inspect", &f.p("loop.wat"), "--json", "--policy", &f.p("none.toml")]));
    assert_eq!(loop_sha["status"], "error", "a missing policy file is invalid input");
    let o = f.run(&["audit", "log", "--event", "limit-hit", "--json"]);
    let loop_sha = json(&o)[0]["variant"].as_str().unwrap().to_string();
    let o = f.run(&["audit", "diff", &sha[..12], &loop_sha[..12], "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let diff: Vec<String> = serde_json::from_value(json(&o)["differences"].clone()).unwrap();
    assert_eq!(diff, ["~ limits.fuel: 5000000000 -> 1000"]);
}

#[test]
fn eight_concurrent_runs_write_one_valid_chain() {
    let f = Fixture::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_vivarium"))
                .args(["run", &f.p("echo.wat"), "--task", &f.p("task.json")])
                .env("VIVARIUM_HOME", f.home())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let o = f.run(&["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["records"], 16, "8 grants and 8 uses, none lost");
}

/// No raw terminal escape (nor an invisible or bidirectional character)
/// that came from a guest reaches the operator's terminal in text mode,
/// whichever way it comes out: a call's output, a parse error quoting the
/// offending line, an import's name. JSON output stays exact.
#[test]
fn guest_text_never_reaches_the_terminal_raw() {
    let f = Fixture::new();
    let hostile = "\u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7}all 12 tasks passed\u{202e}\u{e0041}\u{2060}";
    let task = serde_json::json!({"id": "t1", "domain": "echo", "instruction": "echo", "input": hostile});
    std::fs::write(f.dir.path().join("hostile.json"), task.to_string()).unwrap();
    std::fs::write(f.dir.path().join("broken.wat"), "(module\n  (func \u{1b}[2Jfake verdict\u{202e})\n").unwrap();
    std::fs::write(
        f.dir.path().join("named.wat"),
        "(component (import \"evil:corp/back\u{1b}[2Jdoor\u{202e}\" (instance (export \"open\" (func)))))",
    )
    .unwrap();
    let is_raw = |s: &str| s.chars().any(|c| c != '\n' && c != '\t' && vivarium::text::is_hidden(c));
    let cases: [&[&str]; 3] = [
        &["run", &f.p("echo.wat"), "--task", &f.p("hostile.json")],
        &["run", &f.p("broken.wat"), "--task", &f.p("task.json")],
        &["inspect", &f.p("named.wat")],
    ];
    for args in cases {
        let o = f.run(args);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!is_raw(&out) && !is_raw(&err), "{args:?} printed raw guest text:\n{out}\n{err}");
    }
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("hostile.json")]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\\u{1b}[2J"), "escaped visibly");
    let o = f.run(&["--json", "run", &f.p("echo.wat"), "--task", &f.p("hostile.json")]);
    assert_eq!(json(&o)["output"], hostile, "JSON is exact");
}

/// The repository root (for the example variants).
fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Copy the tree `from` to `to` (made if missing); other subjects use it too.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A run file for the in-process-built `arith-wat` variant; `extra` lines
/// go at the end of `[run]`.
fn run_toml(name: &str, initial: &str, generations: u32, extra: &str) -> String {
    format!(
        "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 5\ngenerations = {generations}\nchildren_per_generation = 2\ninitial = [\"{initial}\"]\n{extra}"
    )
}

/// Every user mistake exits 2, with a message that names the file (or key)
/// and says what to do, as text on stderr and as JSON on stdout.
#[test]
fn user_mistakes_exit_2_naming_the_file_and_the_fix() {
    let f = Fixture::new();
    let d = f.dir.path();
    std::fs::create_dir_all(d.join("empty-dir")).unwrap();
    std::fs::create_dir_all(d.join("out-dir")).unwrap();
    std::fs::write(d.join("a-file"), "x").unwrap();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(d.join("no-initial.toml"), run_toml("r1", "missing-variant", 1, "")).unwrap();
    std::fs::write(d.join("no-policy.toml"), run_toml("r2", &arith, 1, "policy = \"nope.toml\"\n")).unwrap();
    std::fs::write(d.join("bad-value.toml"), run_toml("r3", &arith, 1, "workers = -1\n")).unwrap();
    let cases: Vec<(&str, Vec<String>, i32, Vec<String>)> = vec![
        (
            "build of a missing directory",
            vec!["build".into(), f.p("nowhere")],
            2,
            vec![f.p("nowhere"), "does not exist".into(), "vivarium init".into()],
        ),
        (
            "build of a directory without variant.toml",
            vec!["build".into(), f.p("empty-dir")],
            2,
            vec![f.p("empty-dir"), "no variant.toml".into(), "vivarium init".into()],
        ),
        (
            "build -o a directory",
            vec!["build".into(), arith.clone(), "-o".into(), f.p("out-dir")],
            2,
            vec![f.p("out-dir"), "is a directory".into(), "agent.wasm".into()],
        ),
        (
            "a missing --policy file",
            vec!["run".into(), f.p("echo.wat"), "--task".into(), f.p("task.json"), "--policy".into(), f.p("none.toml")],
            2,
            vec![f.p("none.toml"), "built-in policy".into()],
        ),
        (
            "a missing initial in run.toml",
            vec!["evolve".into(), f.p("no-initial.toml")],
            2,
            vec![
                "no-initial.toml:7:".into(),
                "run.initial[0]".into(),
                "missing-variant".into(),
                "does not exist".into(),
            ],
        ),
        (
            "a missing policy in run.toml",
            vec!["evolve".into(), f.p("no-policy.toml")],
            2,
            vec!["no-policy.toml:8:".into(), "run.policy".into(), "nope.toml".into(), "remove the key".into()],
        ),
        (
            "a bad value in run.toml",
            vec!["evolve".into(), f.p("bad-value.toml")],
            2,
            vec!["bad-value.toml:8:".into(), "run.workers".into(), "docs/evolve.md".into()],
        ),
        (
            "init onto an existing file",
            vec!["init".into(), f.p("a-file"), "--lang".into(), "wat".into()],
            2,
            vec![f.p("a-file"), "is a file".into(), "another path".into()],
        ),
        (
            "report -o a directory",
            vec!["report".into(), "some-run".into(), "-o".into(), f.p("out-dir")],
            2,
            vec![f.p("out-dir"), "is a directory".into(), "report.html".into()],
        ),
        (
            "a flag that is not a number",
            vec!["run".into(), f.p("echo.wat"), "--task".into(), f.p("task.json"), "--fuel".into(), "abc".into()],
            2,
            vec!["--fuel".into(), "abc".into()],
        ),
        ("an unknown subcommand", vec!["frobnicate".into()], 2, vec!["frobnicate".into()]),
        (
            "an unknown language",
            vec!["init".into(), f.p("new-variant"), "--lang".into(), "cobol".into()],
            2,
            vec!["cobol".into(), "--lang".into()],
        ),
    ];
    for (what, args, code, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = f.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(*code), "{what}: {err}");
        for n in needles {
            assert!(err.contains(n.as_str()), "{what}: stderr does not name {n:?}: {err}");
        }
        let mut json_args = args.clone();
        json_args.push("--json");
        let o = f.run(&json_args);
        assert_eq!(o.status.code(), Some(*code), "{what} --json");
        let v = json(&o);
        assert_eq!(v["status"], "error", "{what}: {v}");
        assert_eq!(v["exit_code"], *code, "{what}: {v}");
        let detail = v["detail"].as_str().unwrap();
        for n in needles {
            assert!(detail.contains(n.as_str()), "{what}: the JSON detail does not name {n:?}: {detail}");
        }
    }
    assert!(!d.join("new-variant").exists(), "a refused init writes nothing");
    let o = f.run(&["archive", "runs", "--json"]);
    assert!(
        o.status.code() == Some(2) || json(&o).as_array().unwrap().is_empty(),
        "no run was created by a bad run file"
    );
}

#[test]
fn help_and_version_still_exit_0_under_json() {
    let f = Fixture::new();
    for args in [&["--help", "--json"][..], &["--version"], &["run", "--help", "--json"]] {
        let o = f.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty());
    }
}

/// A start that failed after the run was created (its initial variant does
/// not build) leaves a run with no variant: fixing the variant and running
/// the same command again starts it, with no `--resume` and no clean-up.
#[test]
fn a_run_whose_start_failed_can_be_started_again() {
    let f = Fixture::new();
    let v = f.dir.path().join("v");
    copy_dir(&repo_root().join("variants/arith-wat"), &v);
    let good = std::fs::read_to_string(v.join("src/agent.wat")).unwrap();
    std::fs::write(v.join("src/agent.wat"), "(component (core module $m (func $oops (i32.bogus))))").unwrap();
    std::fs::write(f.p("run.toml"), run_toml("again", &v.display().to_string(), 1, "")).unwrap();

    let o = f.run(&["evolve", &f.p("run.toml"), "--json"]);
    assert_ne!(o.status.code(), Some(0));
    let detail = json(&o)["detail"].as_str().unwrap().to_string();
    assert!(!detail.contains("staging"), "the error names the user's variant, not a staging copy: {detail}");
    let runs = json(&f.run(&["archive", "runs", "--json"]));
    assert_eq!(runs[0]["id"], "again");
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    assert_eq!(runs[0]["variants"], 0);

    std::fs::write(v.join("src/agent.wat"), good).unwrap();
    let o = f.run(&["evolve", &f.p("run.toml"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let runs = json(&f.run(&["archive", "runs", "--json"]));
    assert_eq!(runs[0]["status"], "finished", "{runs}");
    assert!(runs[0]["variants"].as_u64().unwrap() >= 1);
}

/// `archive rm-run` deletes a run (rows and directory), after which its
/// name can be used again; a missing run is exit 2.
#[test]
fn rm_run_deletes_a_run_and_frees_its_name() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(f.p("run.toml"), run_toml("gone", &arith, 1, "")).unwrap();
    assert_eq!(f.run(&["evolve", &f.p("run.toml")]).status.code(), Some(0));
    let o = f.run(&["evolve", &f.p("run.toml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("archive rm-run gone"));

    let o = f.run(&["archive", "rm-run", "gone", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(json(&o)["removed"]["variants"].as_u64().unwrap() >= 1);
    assert!(!f.home().join("runs/gone").exists());
    assert_eq!(json(&f.run(&["archive", "runs", "--json"])), serde_json::json!([]));
    assert_eq!(f.run(&["archive", "rm-run", "gone"]).status.code(), Some(2));
    assert_eq!(f.run(&["evolve", &f.p("run.toml")]).status.code(), Some(0), "the name is free again");
}

/// `evolve --resume` of a finished run reports the run's own baseline (the
/// initial variants' best), not the best score of the whole run.
#[test]
fn resuming_a_finished_run_reports_the_initial_baseline() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(f.p("run.toml"), run_toml("base", &arith, 3, "")).unwrap();
    let o = f.run(&["evolve", &f.p("run.toml"), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let first = json(&o);
    let o = f.run(&["evolve", &f.p("run.toml"), "--resume", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let again = json(&o);
    assert_eq!(again["baseline"], first["baseline"], "{first} vs {again}");
    let rows = json(&f.run(&["archive", "list", "--run", "base", "--json"]));
    let initial_best = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["generation"] == 0)
        .filter_map(|r| r["visible_score"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(again["baseline"].as_f64().unwrap(), initial_best);
}

/// Two `evolve` processes started at once on one run: one proceeds, the
/// other exits 2 at once naming the run and the process holding it; the
/// archive is the same as a run made alone.
#[test]
fn a_second_evolve_of_a_running_run_exits_2_and_the_archive_equals_a_solo_run() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(f.p("run.toml"), run_toml("duo", &arith, 4, "")).unwrap();
    let solo = f.dir.path().join("solo-home");
    assert_eq!(vivarium(&solo, &["evolve", &f.p("run.toml")]).status.code(), Some(0));

    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_vivarium"))
            .args(["evolve", &f.p("run.toml")])
            .env("VIVARIUM_HOME", f.home())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(2)), "exactly one proceeds: {codes:?}");
    let loser = if a.status.code() == Some(2) { &a } else { &b };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(
        err.contains("run `duo`") && (err.contains("process") || err.contains("already exists")),
        "the refusal names the run and its writer: {err}"
    );

    let list = |home: &Path| {
        let rows = json(&vivarium(home, &["archive", "list", "--run", "duo", "--json"]));
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].clone(), r["parent"].clone(), r["visible_score"].clone(), r["held_out_score"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&f.home()), list(&solo), "the archive equals a solo run's");
    let o = f.run(&["audit", "verify", "--json"]);
    assert_eq!(json(&o)["ok"], true);
}

/// A run is locked while its process lives: `archive runs` shows it
/// running with the pid, `rm-run` refuses it, and after a kill -9 the lock
/// is gone: the run shows as interrupted and `--resume` finishes it.
#[test]
fn a_running_run_is_locked_until_its_process_dies() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(f.p("run.toml"), run_toml("held", &arith, 40, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["evolve", &f.p("run.toml")])
        .env("VIVARIUM_HOME", f.home())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the run is in the archive and its lock is held.
    let started = std::time::Instant::now();
    loop {
        let o = f.run(&["archive", "runs", "--json"]);
        if o.status.code() == Some(0) && json(&o)[0]["pid"] == pid {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the run never showed as running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = f.run(&["archive", "runs", "--json"]);
    assert_eq!(json(&o)[0]["status"], "running");
    let o = f.run(&["evolve", &f.p("run.toml"), "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run `held`") && err.contains(&format!("process {pid}")), "{err}");
    let o = f.run(&["archive", "rm-run", "held"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not removed"));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = f.run(&["archive", "runs", "--json"]);
    assert_eq!(json(&o)[0]["status"], "interrupted", "{}", String::from_utf8_lossy(&o.stdout));
    std::fs::write(f.p("run.toml"), run_toml("held", &arith, 40, "")).unwrap();
    let o = f.run(&["evolve", &f.p("run.toml"), "--resume", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(json(&f.run(&["archive", "runs", "--json"]))[0]["status"], "finished");
}

/// Limits that cannot work are refused when read, with exit 2 and the fix;
/// fractional sizes work like fractional durations.
#[test]
fn unusable_limits_are_refused_when_read() {
    let f = Fixture::new();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &f.p("echo.wat")[..], "--task", &f.p("task.json")[..]]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        f.run(&args)
    };
    for (flags, needle) in [
        (&["--memory", "64"][..], "64MiB"),
        (&["--memory", "-1"], "negative"),
        (&["--memory", "0B"], "zero memory"),
        (&["--fuel", "0"], "zero fuel"),
        (&["--fuel", "-1"], "negative"),
        (&["--wall", "0s"], "zero wall-clock"),
    ] {
        let o = run(flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    let o = run(&["--memory", "1.5MiB", "--wall", "1.5s", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));

    let vdir = f.dir.path().join("zero-fuel");
    std::fs::create_dir_all(vdir.join("src")).unwrap();
    std::fs::write(vdir.join("variant.toml"), "[variant]\nname = \"z\"\nlanguage = \"wat\"\n\n[limits]\nfuel = 0\n")
        .unwrap();
    let o = f.run(&["run", &vdir.display().to_string(), "--task", &f.p("task.json")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("variant.toml:6:") && err.contains("limits.fuel") && err.contains("zero fuel"), "{err}");

    std::fs::write(f.p("policy.toml"), "[ceilings]\nwall = \"0s\"\n").unwrap();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json"), "--policy", &f.p("policy.toml")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("policy.toml:2:") && err.contains("ceilings.wall"), "{err}");
}

#[test]
fn an_unknown_audit_event_exits_2_listing_the_events() {
    let f = Fixture::new();
    assert_eq!(f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json")]).status.code(), Some(0));
    let o = f.run(&["audit", "log", "--event", "bogus"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`bogus`") && err.contains("grant") && err.contains("limit-hit"), "{err}");
    let o = f.run(&["audit", "log", "--event", "use", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o).as_array().unwrap().len(), 1);
}

/// An archive id, a component sha256 and a prefix of either all name the
/// same variant, and the answer says which kind matched.
#[test]
fn a_variant_is_named_by_archive_id_or_component_sha() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    std::fs::write(f.p("run.toml"), run_toml("ids", &arith, 1, "")).unwrap();
    assert_eq!(f.run(&["evolve", &f.p("run.toml")]).status.code(), Some(0));
    let rows = json(&f.run(&["archive", "list", "--run", "ids", "--json"]));
    let id = rows[0]["id"].as_str().unwrap().to_string();
    let sha = rows[0]["component_sha"].as_str().unwrap().to_string();

    for (given, kind) in [(&id[..10], "archive-id"), (&sha[..], "component-sha256"), (&sha[..10], "component-sha256")] {
        let o = f.run(&["audit", "grants", given, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{given}: {}", String::from_utf8_lossy(&o.stdout));
        let v = json(&o);
        assert_eq!(v["variant"], sha.as_str());
        assert_eq!(v["matched"]["matched"], kind, "{given}");
        let o = f.run(&["archive", "show", given, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{given}");
        assert_eq!(json(&o)["variant"]["id"], id.as_str());
        assert_eq!(json(&o)["matched"]["matched"], kind);
        let o = f.run(&["audit", "log", "--variant", given, "--event", "grant", "--json"]);
        assert!(!json(&o).as_array().unwrap().is_empty(), "{given}");
    }
    let o = f.run(&["audit", "grants", &id[..10]]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("matched the archive id"));
    let o = f.run(&["audit", "diff", &id, &sha, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["differences"], serde_json::json!([]));
    assert_eq!(f.run(&["audit", "grants", "0000000000"]).status.code(), Some(2));
}

/// `audit grants` lists every grant with its command; `audit diff` compares
/// what the manifests give, so a flag on one run is not a difference.
#[test]
fn audit_diff_compares_manifest_grants_not_the_last_runs_flags() {
    let f = Fixture::new();
    for w in ["echo.wat", "loop.wat"] {
        assert_eq!(f.run(&["inspect", &f.p(w)]).status.code(), Some(0));
    }
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json"), "--fuel", "1000000"]);
    assert_eq!(o.status.code(), Some(0));
    let sha = json(&f.run(&["inspect", &f.p("echo.wat"), "--json"]))["sha256"].as_str().unwrap().to_string();
    let loop_sha = json(&f.run(&["inspect", &f.p("loop.wat"), "--json"]))["sha256"].as_str().unwrap().to_string();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("task.json"), "--fuel", "1000000"]);
    assert_eq!(o.status.code(), Some(0));

    let v = json(&f.run(&["audit", "grants", &sha[..12], "--json"]));
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "inspect, run, inspect, run: {v}");
    assert_eq!(history[1]["narrowed_by_flags"], true);
    assert!(history[1]["command"].as_str().unwrap().contains("--fuel 1000000"), "{v}");
    assert_eq!(history[0]["narrowed_by_flags"], false);

    let o = f.run(&["audit", "diff", &sha[..12], &loop_sha[..12], "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["differences"], serde_json::json!([]), "the last run's --fuel is not a difference: {v}");
    assert_eq!(v["a_grant"]["narrowed_by_flags"], false);
    let o = f.run(&["audit", "diff", &sha[..12], &loop_sha[..12]]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("flags of single runs left out"));
}

/// `build` without `-o` prints where the component is, with its sha256 and
/// size, never the source's path; `-o`, `--out` and `--output` all work.
#[test]
fn build_reports_the_components_path_and_takes_every_output_spelling() {
    let f = Fixture::new();
    let arith = repo_root().join("variants/arith-wat").display().to_string();
    let o = f.run(&["build", &arith, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let v = json(&o);
    let path = v["path"].as_str().unwrap();
    assert!(path.ends_with(".wasm"), "{v}");
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, v["bytes"].as_u64().unwrap());
    for flag in ["-o", "--out", "--output"] {
        let dest = f.p(&format!("c{flag}.wasm"));
        assert_eq!(f.run(&["build", &arith, flag, &dest]).status.code(), Some(0), "{flag}");
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    }
}

#[test]
fn small_mistakes_get_a_message_that_says_what_to_do() {
    let f = Fixture::new();
    let o = f.run(&["init", &f.p("ünïcödé-агент"), "--lang", "wat"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--name"), "{err}");
    assert!(!f.dir.path().join("ünïcödé-агент").exists());
    let o = f.run(&["init", &f.p("ünïcödé-агент"), "--lang", "wat", "--name", "unicode-agent"]);
    assert_eq!(o.status.code(), Some(0));

    std::fs::write(f.p("tasks.json"), r#"[{"id":"t1","domain":"echo","instruction":"echo","input":"hi"}]"#).unwrap();
    let o = f.run(&["run", &f.p("echo.wat"), "--task", &f.p("tasks.json")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("JSON array") && err.contains("one file per task"), "{err}");

    let help = String::from_utf8_lossy(&f.run(&["run", "--help"]).stdout).into_owned();
    assert!(!help.contains("--replay") && !help.contains("--version"), "top-level flags stay at the top:\n{help}");
    assert_eq!(f.run(&["--replay", "--version"]).status.code(), Some(0));
}

/// Two initial variants holding the same files would be one archived
/// variant: the run file is refused (exit 2) naming both, and no run is
/// created.
#[test]
fn two_identical_initial_variants_are_refused_naming_both() {
    let f = Fixture::new();
    let (a, b) = (f.dir.path().join("a"), f.dir.path().join("b"));
    copy_dir(&repo_root().join("variants/arith-wat"), &a);
    copy_dir(&repo_root().join("variants/arith-wat"), &b);
    let initial = format!("{}\", \"{}", a.display(), b.display());
    std::fs::write(f.p("run.toml"), run_toml("twins", &initial, 1, "")).unwrap();
    let o = f.run(&["evolve", &f.p("run.toml"), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stdout));
    let detail = json(&o)["detail"].as_str().unwrap().to_string();
    for needle in [a.display().to_string(), b.display().to_string(), "list it once".into()] {
        assert!(detail.contains(&needle), "{needle} in: {detail}");
    }
    assert!(!f.home().join("archive").exists(), "nothing was created");
}

/// A meta-agent that answers `err` (here: every switch already on, nothing
/// left to improve) is the guest not doing what was asked: exit 4 with
/// status `declined`, as a `run` whose guest answers `err`; not the policy
/// refusal's 3. No child is written.
#[test]
fn improve_with_nothing_to_change_exits_4_declined() {
    let f = Fixture::new();
    let v = f.dir.path().join("v");
    copy_dir(&repo_root().join("variants/arith-wat"), &v);
    let mut wat = std::fs::read_to_string(v.join("src/agent.wat")).unwrap();
    for switch in ["DIVISION", "REMAINDER", "UNARY_MINUS", "POWER"] {
        wat = wat.replace(
            &format!("(global ${switch} i32 (i32.const 0))"),
            &format!("(global ${switch} i32 (i32.const 1))"),
        );
    }
    std::fs::write(v.join("src/agent.wat"), wat).unwrap();
    let child = f.dir.path().join("child");
    let o = f.run(&["--json", "improve", &v.display().to_string(), "--out", &child.display().to_string()]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stdout));
    let j = json(&o);
    assert_eq!(j["status"], "declined");
    assert!(j["detail"].as_str().unwrap().contains("nothing left to improve"), "{j}");
    assert!(!child.exists(), "no child");
}
