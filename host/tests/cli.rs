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
