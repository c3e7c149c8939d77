//! WASI containment under real grants.
//!
//! Every test computes its grant the way the host does — a `variant.toml`
//! cut down by a `policy.toml` through [`vivarium::caps::resolve`] — or
//! builds a [`Grant`] in code where the point is what the runtime does with
//! a grant whatever made it. The guests are real Rust components:
//! `tests/guests/hostile` (files, environment, entropy and clocks) and
//! `tests/guests/netclient` (TCP through `std::net`; kept apart because it
//! imports `wasi:sockets`). Each attack asserts the exact outcome the guest
//! sees, that the host's files are untouched, and that a well-behaved call on
//! the same runtime succeeds afterwards.
//!
//! Error texts are the guest's `std::io::Error` for the WASI error code:
//! `not-permitted` (63) when a path or a link leads out of a preopened
//! directory or a read-only one is written, `no-entry` (44) when a path
//! names no preopened directory at all, `access` (2) when the socket check
//! refuses an address.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vivarium::caps::{resolve, Access, Denial, FileGrant, Grant, Manifest, Overrides, Policy, Resolution, Source};
use vivarium::home::Home;
use vivarium::runtime::bindings::{Answer, ImproveContext};
use vivarium::runtime::{CallOptions, CallOutcome, CallReport, Loaded, Prepared};
use vivarium::units::ByteSize;
use vivarium::variant::{Opened, Session};
use vivarium::Error;
use vivarium_tests::*;

const HOSTILE: &str = "tests/guests/hostile";
const NETCLIENT: &str = "tests/guests/netclient";

/// What the host keeps outside the guest's reach.
const SECRET: &str = "the host's secret\n";
/// What `write-read` and `write-file` put in a file.
const WRITTEN: &str = "written by the guest\n";

/// `not-permitted`: out of a preopen, or a write under a read-only one.
const NOT_PERMITTED: &str = "Operation not permitted (os error 63)";
/// `no-entry`: no preopened directory holds the path.
const NO_ENTRY: &str = "No such file or directory (os error 44)";
/// `access`: the socket check refused the address.
const ACCESS: &str = "Permission denied (os error 2)";
/// Name lookup is off: std's error for a refused `ip-name-lookup`.
const NO_LOOKUP: &str = "failed to lookup address information: Non-recoverable error";

// ---------------------------------------------------------------------------
// Helpers.

/// Set the host environment the env tests look at ([`TEST_ENV`]), before
/// any call reads it (every test calls this first).
fn init() {
    init_env();
}

fn manifest(caps: &str) -> Manifest {
    Manifest::parse(
        &format!("[variant]\nname = \"caps\"\nlanguage = \"rust\"\n\n[capabilities]\n{caps}\n"),
        "variant.toml",
    )
    .expect("test manifest parses")
}

fn policy(caps: &str) -> Policy {
    Policy::parse(
        &format!("[defaults]\nfuel = 200_000_000\nmemory = \"64MiB\"\nwall = \"10s\"\n\n[capabilities]\n{caps}\n"),
        "policy.toml",
    )
    .expect("test policy parses")
}

/// The grant of a manifest asking `manifest_caps` under a policy allowing `policy_caps`.
fn resolution(manifest_caps: &str, policy_caps: &str) -> Resolution {
    resolve(&manifest(manifest_caps), &policy(policy_caps), &Overrides::default())
}

fn denial(capability: &str, requested: &str, reason: &str) -> Denial {
    Denial { capability: capability.into(), requested: requested.into(), reason: reason.into() }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The guest compiled once per test binary.
async fn loaded(guest: &str) -> Loaded {
    static LOADED: Mutex<Option<HashMap<String, Loaded>>> = Mutex::new(None);
    if let Some(l) = LOADED.lock().unwrap().get_or_insert_with(HashMap::new).get(guest) {
        return l.clone();
    }
    let l = shared_runtime().load(&rust_guest(guest)).await.expect("guest loads");
    LOADED.lock().unwrap().get_or_insert_with(HashMap::new).insert(guest.to_string(), l.clone());
    l
}

async fn prepared(guest: &str, grant: Grant) -> vivarium::Result<Prepared> {
    shared_runtime().prepare(&loaded(guest).await, grant)
}

async fn call(
    p: &Prepared,
    instruction: &str,
    input: &str,
    scratch: Option<&Path>,
) -> vivarium::Result<CallReport<Answer>> {
    let opts = CallOptions { scratch: scratch.map(Path::to_path_buf), ..CallOptions::default() };
    shared_runtime().solve(p, &task(instruction, input), &opts).await
}

/// The guest's answer to one call.
async fn answer(p: &Prepared, instruction: &str, input: &str, scratch: Option<&Path>) -> String {
    let r = call(p, instruction, input, scratch).await.expect("no host error");
    ok_output(&r).output.clone()
}

/// One attack, then a well-behaved call on the same prepared component and
/// runtime: `ok`, and where `scratch` is granted read-write a write and a
/// read-back there.
async fn attack(p: &Prepared, instruction: &str, input: &str, scratch: Option<&Path>) -> String {
    let out = answer(p, instruction, input, scratch).await;
    assert_eq!(answer(p, "ok", "", scratch).await, "fine", "after {instruction} {input}");
    if p.grant.files.iter().any(|f| f.path == "scratch" && f.access == Access::ReadWrite) {
        assert_eq!(
            answer(p, "write-read", "scratch/after-attack.txt", scratch).await,
            format!("read back: {WRITTEN}"),
            "after {instruction} {input}"
        );
    }
    out
}

fn err(text: &str) -> String {
    format!("error: {text}")
}

/// A host directory outside every scratch area, holding `secret.txt`.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        Self { dir }
    }
    fn secret(&self) -> PathBuf {
        self.dir.path().join("secret.txt")
    }
    /// The secret is as it was, its directory holds nothing new, and no hard
    /// link to it was made.
    fn assert_untouched(&self) {
        assert_eq!(std::fs::read_to_string(self.secret()).unwrap(), SECRET);
        assert_eq!(std::fs::metadata(self.secret()).unwrap().nlink(), 1);
        let names: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret.txt"]);
    }
}

fn read_write_scratch() -> Resolution {
    resolution(r#"files = [{ path = "scratch", access = "read-write" }]"#, "files = 1")
}

/// A scratch area whose root also holds `outside.txt` (a host file next to
/// the preopened `scratch`, one `..` away) and `scratch/in.txt`.
fn scratch_area() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("scratch")).unwrap();
    std::fs::write(root.path().join("outside.txt"), SECRET).unwrap();
    std::fs::write(root.path().join("scratch/in.txt"), "inside\n").unwrap();
    root
}

// ---------------------------------------------------------------------------
// Files.

#[tokio::test]
async fn files_a_read_write_grant_holds_what_the_guest_writes() {
    init();
    let r = read_write_scratch();
    assert_eq!(
        r.grant.files,
        [FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: Some(ByteSize(16 << 20)) }]
    );
    assert_eq!(r.denials, []);
    assert_eq!(r.provenance_of("files").unwrap().value, "scratch (read-write, quota 16MiB)");
    let p = prepared(HOSTILE, r.grant).await.unwrap();

    let root = tempfile::tempdir().unwrap();
    assert_eq!(attack(&p, "write-read", "scratch/x.txt", Some(root.path())).await, format!("read back: {WRITTEN}"));
    assert_eq!(std::fs::read_to_string(root.path().join("scratch/x.txt")).unwrap(), WRITTEN);
    // The guest sees its preopen under the granted name, relative or absolute.
    assert_eq!(answer(&p, "read-file", "/scratch/x.txt", Some(root.path())).await, WRITTEN);
    let mut listing: Vec<String> =
        answer(&p, "list-dir", "scratch", Some(root.path())).await.lines().map(String::from).collect();
    listing.sort();
    assert_eq!(listing, ["scratch/after-attack.txt", "scratch/x.txt"]);
    // A path outside every preopen names nothing.
    assert_eq!(attack(&p, "write-read", "x.txt", Some(root.path())).await, err(&format!("write: {NO_ENTRY}")));
    assert!(!root.path().join("x.txt").exists());

    // A fresh scratch area starts empty: nothing carries over between areas.
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(attack(&p, "read-file", "scratch/x.txt", Some(fresh.path())).await, err(NO_ENTRY));
}

#[tokio::test]
async fn files_dot_dot_escapes_fail() {
    init();
    let p = prepared(HOSTILE, read_write_scratch().grant).await.unwrap();
    let root = scratch_area();
    let sc = Some(root.path());
    for path in [
        "scratch/../outside.txt",
        "scratch/../../etc/passwd",
        "scratch/../../../../../../../../etc/passwd",
        "scratch/./../outside.txt",
        "/scratch/../outside.txt",
    ] {
        assert_eq!(attack(&p, "read-file", path, sc).await, err(NOT_PERMITTED), "{path}");
    }
    assert_eq!(attack(&p, "list-dir", "scratch/..", sc).await, err(NOT_PERMITTED));
    assert_eq!(attack(&p, "write-file", "scratch/../outside.txt", sc).await, err(NOT_PERMITTED));
    assert_eq!(attack(&p, "append", "scratch/../outside.txt", sc).await, err(NOT_PERMITTED));
    assert_eq!(attack(&p, "write-file", "scratch/../new.txt", sc).await, err(NOT_PERMITTED));
    assert_eq!(std::fs::read_to_string(root.path().join("outside.txt")).unwrap(), SECRET);
    assert!(!root.path().join("new.txt").exists());
}

#[tokio::test]
async fn files_absolute_paths_fail() {
    init();
    let p = prepared(HOSTILE, read_write_scratch().grant).await.unwrap();
    let outside = Outside::new();
    let root = scratch_area();
    let sc = Some(root.path());
    let secret = outside.secret().display().to_string();
    // The host's own path of a file inside the scratch area means nothing either.
    let own = root.path().join("scratch/in.txt").display().to_string();
    for path in ["/etc/passwd", "/", secret.as_str(), own.as_str(), "/outside.txt"] {
        assert_eq!(attack(&p, "read-file", path, sc).await, err(NO_ENTRY), "{path}");
    }
    assert_eq!(attack(&p, "list-dir", "/", sc).await, err(NO_ENTRY));
    assert_eq!(attack(&p, "write-file", &secret, sc).await, err(NO_ENTRY));
    assert_eq!(attack(&p, "append", &secret, sc).await, err(NO_ENTRY));
    assert_eq!(attack(&p, "write-file", "/tmp/vivarium-caps-pwned", sc).await, err(NO_ENTRY));
    outside.assert_untouched();
    assert!(!Path::new("/tmp/vivarium-caps-pwned").exists());
    assert_eq!(std::fs::read_to_string(root.path().join("scratch/in.txt")).unwrap(), "inside\n");
}

#[tokio::test]
async fn files_symlinks_planted_in_the_scratch_area_are_not_followed_out() {
    init();
    let p = prepared(HOSTILE, read_write_scratch().grant).await.unwrap();
    let outside = Outside::new();
    let root = scratch_area();
    let sc = Some(root.path());
    let dir = root.path().join("scratch");
    let links: [(&str, PathBuf); 5] = [
        ("secret-link", outside.secret()),
        ("root-link", PathBuf::from("/")),
        ("up-link", PathBuf::from("../outside.txt")),
        ("deep-link", PathBuf::from("../../../../../../../../etc/passwd")),
        ("inner-link", PathBuf::from("in.txt")),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    for path in ["scratch/secret-link", "scratch/up-link", "scratch/deep-link", "scratch/root-link/etc/passwd"] {
        assert_eq!(attack(&p, "read-file", path, sc).await, err(NOT_PERMITTED), "{path}");
    }
    assert_eq!(attack(&p, "list-dir", "scratch/root-link", sc).await, err(NOT_PERMITTED));
    for path in ["scratch/secret-link", "scratch/up-link", "scratch/root-link/tmp/vivarium-caps-pwned"] {
        assert_eq!(attack(&p, "write-file", path, sc).await, err(NOT_PERMITTED), "{path}");
        assert_eq!(attack(&p, "append", path, sc).await, err(NOT_PERMITTED), "{path}");
    }
    // A link that stays inside the preopen is followed.
    assert_eq!(attack(&p, "read-file", "scratch/inner-link", sc).await, "inside\n");

    outside.assert_untouched();
    assert_eq!(std::fs::read_to_string(root.path().join("outside.txt")).unwrap(), SECRET);
    assert!(!Path::new("/tmp/vivarium-caps-pwned").exists());
    for (name, target) in &links {
        assert_eq!(&std::fs::read_link(dir.join(name)).unwrap(), target, "{name} was not replaced");
    }
}

#[tokio::test]
async fn files_links_made_by_the_guest_do_not_escape() {
    init();
    let p = prepared(HOSTILE, read_write_scratch().grant).await.unwrap();
    let outside = Outside::new();
    let root = scratch_area();
    let sc = Some(root.path());
    let dir = root.path().join("scratch");
    let secret = outside.secret().display().to_string();

    // Absolute link targets are refused outright.
    assert_eq!(attack(&p, "symlink", "/etc/passwd|scratch/g1", sc).await, err("symlink: not-permitted"));
    assert_eq!(attack(&p, "symlink", &format!("{secret}|scratch/g2"), sc).await, err("symlink: not-permitted"));
    assert!(std::fs::symlink_metadata(dir.join("g1")).is_err());
    assert!(std::fs::symlink_metadata(dir.join("g2")).is_err());
    // A relative link pointing out may be made, but never followed.
    assert_eq!(attack(&p, "symlink", "../outside.txt|scratch/g3", sc).await, err(&format!("read: {NOT_PERMITTED}")));
    assert_eq!(attack(&p, "append", "scratch/g3", sc).await, err(NOT_PERMITTED));
    // One that stays inside works.
    assert_eq!(attack(&p, "symlink", "in.txt|scratch/g4", sc).await, "read: inside\n");

    // Hard links: a host path is not reachable to link from, `..` is refused,
    // and a link to a planted symlink is a link to the symlink, which is
    // still not followed out.
    assert_eq!(attack(&p, "hard-link", "/etc/passwd|scratch/h1", sc).await, err(&format!("hard_link: {NO_ENTRY}")));
    assert_eq!(
        attack(&p, "hard-link", &format!("{secret}|scratch/h2"), sc).await,
        err(&format!("hard_link: {NO_ENTRY}"))
    );
    assert_eq!(
        attack(&p, "hard-link", "scratch/../outside.txt|scratch/h3", sc).await,
        err(&format!("hard_link: {NOT_PERMITTED}"))
    );
    std::os::unix::fs::symlink(outside.secret(), dir.join("secret-link")).unwrap();
    assert_eq!(
        attack(&p, "hard-link", "scratch/secret-link|scratch/h4", sc).await,
        err(&format!("read: {NOT_PERMITTED}"))
    );
    assert_eq!(attack(&p, "hard-link", "scratch/in.txt|scratch/h5", sc).await, "read: inside\n");
    for gone in ["h1", "h2", "h3"] {
        assert!(std::fs::symlink_metadata(dir.join(gone)).is_err(), "{gone}");
    }
    outside.assert_untouched();
    assert_eq!(std::fs::metadata(root.path().join("outside.txt")).unwrap().nlink(), 1);
    assert_eq!(std::fs::read_to_string(root.path().join("outside.txt")).unwrap(), SECRET);
}

#[tokio::test]
async fn files_a_read_only_grant_refuses_every_write() {
    init();
    let r = resolution(r#"files = [{ path = "data", access = "read-only" }]"#, "files = true");
    assert_eq!(r.grant.files, [FileGrant { path: "data".into(), access: Access::ReadOnly, quota: None }]);
    assert_eq!(r.denials, []);
    let p = prepared(HOSTILE, r.grant).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("data")).unwrap();
    std::fs::write(root.path().join("data/in.txt"), "inside\n").unwrap();
    let sc = Some(root.path());

    assert_eq!(attack(&p, "read-file", "data/in.txt", sc).await, "inside\n");
    assert_eq!(attack(&p, "write-file", "data/new.txt", sc).await, err(NOT_PERMITTED));
    assert_eq!(attack(&p, "write-read", "data/in.txt", sc).await, err(&format!("write: {NOT_PERMITTED}")));
    assert_eq!(attack(&p, "append", "data/in.txt", sc).await, err(NOT_PERMITTED));
    assert_eq!(attack(&p, "symlink", "in.txt|data/l", sc).await, err("symlink: not-permitted"));
    assert_eq!(attack(&p, "hard-link", "data/in.txt|data/h", sc).await, err(&format!("hard_link: {NOT_PERMITTED}")));

    let names: Vec<_> = std::fs::read_dir(root.path().join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["in.txt"]);
    assert_eq!(std::fs::read_to_string(root.path().join("data/in.txt")).unwrap(), "inside\n");
    assert_eq!(answer(&p, "read-file", "data/in.txt", sc).await, "inside\n");
}

#[tokio::test]
async fn files_granted_denied_by_policy_and_absent() {
    init();
    let asks = r#"files = [{ path = "scratch", access = "read-write" }]"#;

    // Granted.
    let granted = resolution(asks, "files = 1");
    assert_eq!(granted.grant.files.len(), 1);
    let p = prepared(HOSTILE, granted.grant).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    assert_eq!(answer(&p, "write-read", "scratch/x.txt", Some(root.path())).await, format!("read back: {WRITTEN}"));

    // Denied by a policy with `files = false`: the grant has no files, the
    // resolution names the denial, and the guest's open fails even with a
    // scratch area at hand.
    let denied = resolution(asks, "files = false");
    assert_eq!(denied.grant.files, []);
    assert_eq!(denied.denials, [denial("files", "scratch (read-write)", "the policy allows no file grants")]);
    assert!(denied.provenance_of("files").is_none());
    match denied.refusal() {
        Some(Error::Refused { what, .. }) => assert_eq!(what, ["files"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let p = prepared(HOSTILE, denied.grant).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    assert_eq!(attack(&p, "write-read", "scratch/x.txt", Some(root.path())).await, err(&format!("write: {NO_ENTRY}")));
    assert_eq!(attack(&p, "list-dir", "scratch", Some(root.path())).await, err(NO_ENTRY));
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing is created for a denied grant");

    // Past the policy's count, later entries are denied.
    let two = resolution(
        r#"files = [{ path = "scratch", access = "read-write" }, { path = "more", access = "read-only" }]"#,
        "files = 1",
    );
    assert_eq!(
        two.grant.files,
        [FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: Some(ByteSize(16 << 20)) }]
    );
    assert_eq!(two.denials, [denial("files", "more (read-only)", "the policy allows at most 1 file grants")]);

    // Absent: not asked for, so neither granted nor denied.
    let absent = resolution("", "files = true");
    assert_eq!(absent.grant.files, []);
    assert_eq!(absent.denials, []);
    let p = prepared(HOSTILE, absent.grant).await.unwrap();
    assert_eq!(attack(&p, "write-read", "scratch/x.txt", Some(root.path())).await, err(&format!("write: {NO_ENTRY}")));
    assert_eq!(attack(&p, "read-file", "/etc/passwd", None).await, err(NO_ENTRY));
}

#[tokio::test]
async fn files_an_unsafe_grant_or_a_linked_scratch_area_is_refused_before_the_call() {
    init();
    let outside = Outside::new();
    let root = tempfile::tempdir().unwrap();
    let in_root = tempfile::tempdir_in(root.path()).unwrap();
    // A grant built in code skips the manifest's checks; the runtime checks again.
    for (path, why) in [
        ("../escape", "file path `../escape` contains `..`"),
        ("/etc", "file path `/etc` is absolute; give a path relative to the run's scratch area"),
        ("a//b", "file path `a//b` has an empty component (`//` or a trailing `/`)"),
    ] {
        let g = Grant {
            files: vec![FileGrant { path: path.into(), access: Access::ReadWrite, quota: None }],
            ..Grant::minimal(small_limits())
        };
        let p = prepared(HOSTILE, g).await.unwrap();
        match call(&p, "ok", "", Some(in_root.path())).await {
            Err(Error::Refused { what, detail }) => {
                assert_eq!(what, ["files"]);
                assert_eq!(detail, format!("file grant refused: {why}"));
            }
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!root.path().join("escape").exists());

    // A link planted where the granted directory goes: the host never
    // preopens through it.
    let p = prepared(HOSTILE, read_write_scratch().grant).await.unwrap();
    let linked = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.dir.path(), linked.path().join("scratch")).unwrap();
    match call(&p, "write-read", "scratch/secret.txt", Some(linked.path())).await {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, ["files"]);
            assert_eq!(
                detail,
                format!(
                    "file grant `scratch`: {} in the scratch area is a symbolic link; a grant is never preopened through a link",
                    linked.path().join("scratch").display()
                )
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A file where the granted directory goes.
    let filed = tempfile::tempdir().unwrap();
    std::fs::write(filed.path().join("scratch"), "a file").unwrap();
    match call(&p, "ok", "", Some(filed.path())).await {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, ["files"]);
            assert_eq!(
                detail,
                format!(
                    "file grant `scratch`: {} in the scratch area is not a directory",
                    filed.path().join("scratch").display()
                )
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // File grants without a scratch area.
    match call(&p, "ok", "", None).await {
        Err(Error::Invalid(m)) => assert_eq!(m, "file grants need a scratch directory"),
        other => panic!("expected invalid, got {other:?}"),
    }
    outside.assert_untouched();
    // The host carries on.
    let clean = tempfile::tempdir().unwrap();
    assert_eq!(answer(&p, "write-read", "scratch/x.txt", Some(clean.path())).await, format!("read back: {WRITTEN}"));
}

#[tokio::test]
async fn files_a_session_gives_each_call_a_fresh_scratch_area() {
    init();
    let home = tempfile::tempdir().unwrap();
    let session = Session::open(Home::at(home.path())).unwrap();
    let loaded = session.runtime.load(&rust_guest(HOSTILE)).await.unwrap();
    let opened = Opened { loaded, resolution: read_write_scratch(), manifest: None };
    let p = session.prepare(&opened).unwrap();

    let area = session.scratch_for(&p).unwrap().expect("a file grant gets a scratch area");
    assert!(area.starts_with(session.home.scratch_dir()), "{}", area.display());
    let opts = CallOptions { scratch: Some(area.clone()), ..CallOptions::default() };
    let r = session.solve(&p, &task("write-read", "scratch/x.txt"), &opts).await.unwrap();
    assert_eq!(ok_output(&r).output, format!("read back: {WRITTEN}"));
    assert_eq!(std::fs::read_to_string(area.join("scratch/x.txt")).unwrap(), WRITTEN);

    // Without a scratch area in the options, the session makes a new one.
    let r = session.solve(&p, &task("read-file", "scratch/x.txt"), &CallOptions::default()).await.unwrap();
    assert_eq!(ok_output(&r).output, err(NO_ENTRY));
    // `improve` gets one too (the hostile guest answers err; no host error).
    let ctx = ImproveContext {
        self_id: "caps".into(),
        sources: vec![],
        history: vec![],
        feedback: String::new(),
        iterations_left: 1,
    };
    let r = session.improve(&p, &ctx, &CallOptions::default()).await.unwrap();
    match &r.outcome {
        CallOutcome::GuestError(m) => assert_eq!(m, "not supported"),
        other => panic!("expected the guest's error, got {other:?}"),
    }

    // A grant without files gets none.
    let bare = Opened {
        loaded: session.runtime.load(&rust_guest(HOSTILE)).await.unwrap(),
        resolution: resolution("", "files = true"),
        manifest: None,
    };
    let p = session.prepare(&bare).unwrap();
    assert_eq!(session.scratch_for(&p).unwrap(), None);
}

// ---------------------------------------------------------------------------
// Environment variables.

#[tokio::test]
async fn env_only_granted_names_reach_the_guest() {
    init();
    let r =
        resolution(r#"env = ["VIVARIUM_CAPS_LANG", "VIVARIUM_CAPS_OTHER"]"#, r#"env_allow = ["VIVARIUM_CAPS_LANG"]"#);
    assert_eq!(r.grant.env, ["VIVARIUM_CAPS_LANG"]);
    assert_eq!(r.denials, [denial("env", "VIVARIUM_CAPS_OTHER", "not in the policy's env_allow")]);
    let p = prepared(HOSTILE, r.grant).await.unwrap();
    assert_eq!(attack(&p, "env", "", None).await, "vars: [VIVARIUM_CAPS_LANG=en_GB.UTF-8]\nargs: []");

    // Granted but not set in the host: nothing.
    let g = Grant { env: s(&["VIVARIUM_CAPS_UNSET"]), ..Grant::minimal(small_limits()) };
    let p = prepared(HOSTILE, g).await.unwrap();
    assert_eq!(attack(&p, "env", "", None).await, "vars: []\nargs: []");

    // Absent: nothing, although the host has plenty.
    let p = prepared(HOSTILE, resolution("", r#"env_allow = ["*"]"#).grant).await.unwrap();
    assert_eq!(attack(&p, "env", "", None).await, "vars: []\nargs: []");
}

#[tokio::test]
async fn env_a_secret_looking_name_needs_an_exact_policy_entry() {
    init();
    let asks = r#"env = ["API_TOKEN", "VIVARIUM_CAPS_LANG"]"#;
    let r = resolution(asks, r#"env_allow = ["*"]"#);
    assert_eq!(r.grant.env, ["VIVARIUM_CAPS_LANG"]);
    assert_eq!(
        r.denials,
        [denial(
            "env",
            "API_TOKEN",
            "looks like a secret (contains `TOKEN`); only an exact entry in the policy's env_allow passes it"
        )]
    );
    let p = prepared(HOSTILE, r.grant).await.unwrap();
    assert_eq!(attack(&p, "env", "", None).await, "vars: [VIVARIUM_CAPS_LANG=en_GB.UTF-8]\nargs: []");

    let r = resolution(asks, r#"env_allow = ["*", "API_TOKEN"]"#);
    assert_eq!(r.grant.env, ["API_TOKEN", "VIVARIUM_CAPS_LANG"]);
    assert_eq!(r.denials, []);
    assert_eq!(r.provenance_of("env").unwrap().value, "API_TOKEN, VIVARIUM_CAPS_LANG");
    let p = prepared(HOSTILE, r.grant).await.unwrap();
    assert_eq!(
        attack(&p, "env", "", None).await,
        "vars: [API_TOKEN=tok-123, VIVARIUM_CAPS_LANG=en_GB.UTF-8]\nargs: []"
    );
}

// ---------------------------------------------------------------------------
// Sockets.

/// A local TCP server that answers `pong` to each line and counts connections.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_ok() {
                    let _ = conn.write_all(b"pong\n");
                }
            }
        });
        Self { port, accepted }
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

const SOCKET_IMPORTS: [&str; 7] = [
    "wasi:sockets/network@0.2.6",
    "wasi:sockets/instance-network@0.2.6",
    "wasi:sockets/udp@0.2.6",
    "wasi:sockets/udp-create-socket@0.2.6",
    "wasi:sockets/tcp@0.2.6",
    "wasi:sockets/tcp-create-socket@0.2.6",
    "wasi:sockets/ip-name-lookup@0.2.6",
];

fn assert_sockets_refused(result: vivarium::Result<Prepared>) {
    match result {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, SOCKET_IMPORTS);
            let each: Vec<String> = SOCKET_IMPORTS
                .iter()
                .map(|i| format!("{i} (capability `sockets` is not granted to this variant)"))
                .collect();
            assert_eq!(detail, format!("import refused before instantiation: {}", each.join("; ")));
        }
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, the component was prepared"),
    }
}

#[tokio::test]
async fn sockets_a_component_importing_them_is_refused_without_a_grant() {
    init();
    assert_sockets_refused(prepared(NETCLIENT, Grant::minimal(small_limits())).await);

    // Asked for, but the policy allows no sockets.
    let r = resolution(r#"sockets = ["127.0.0.1:9"]"#, "");
    assert_eq!(r.grant.sockets, Vec::<String>::new());
    assert_eq!(r.denials, [denial("sockets", "127.0.0.1:9", "not in the policy's sockets_allow")]);
    assert_sockets_refused(prepared(NETCLIENT, r.grant).await);

    // The same host still runs a component that does not import them.
    let p = prepared(HOSTILE, Grant::minimal(small_limits())).await.unwrap();
    assert_eq!(answer(&p, "ok", "", None).await, "fine");
}

#[tokio::test]
async fn sockets_only_listed_pairs_connect() {
    init();
    let listed = Server::start();
    let unlisted = Server::start();
    let pair = listed.addr();
    let r = resolution(&format!(r#"sockets = ["{pair}"]"#), &format!(r#"sockets_allow = ["{pair}"]"#));
    assert_eq!(r.grant.sockets, [pair.clone()]);
    assert_eq!(r.denials, []);
    let p = prepared(NETCLIENT, r.grant).await.unwrap();

    assert_eq!(attack(&p, "connect", &pair, None).await, "reply: pong");
    assert_eq!(listed.accepted(), 1);

    let refused = err(&format!("connect: {ACCESS}"));
    for addr in [unlisted.addr(), format!("127.0.0.2:{}", listed.port)] {
        assert_eq!(attack(&p, "connect", &addr, None).await, refused, "{addr}");
    }
    // wasmtime refuses the wildcard address (which Linux would route to
    // loopback) and IPv4-mapped IPv6 addresses before any check.
    for addr in [format!("0.0.0.0:{}", listed.port), format!("[::ffff:127.0.0.1]:{}", listed.port)] {
        assert_eq!(attack(&p, "connect", &addr, None).await, err("connect: Invalid argument (os error 28)"), "{addr}");
    }
    // No name lookup, not even of a name for a listed address.
    assert_eq!(
        attack(&p, "connect", &format!("localhost:{}", listed.port), None).await,
        err(&format!("connect: {NO_LOOKUP}"))
    );
    assert_eq!(attack(&p, "resolve", "example.com:443", None).await, err(NO_LOOKUP));
    // No listening, on the listed pair or anywhere else.
    for addr in ["127.0.0.1:0", "0.0.0.0:0", pair.as_str()] {
        let out = attack(&p, "listen", addr, None).await;
        assert_eq!(out, err(&format!("bind: {ACCESS}")), "{addr}");
    }
    assert_eq!(unlisted.accepted(), 0);
    assert_eq!(listed.accepted(), 1);
    assert_eq!(attack(&p, "connect", &pair, None).await, "reply: pong");
    assert_eq!(listed.accepted(), 2);
}

#[tokio::test]
async fn sockets_private_addresses_need_the_exact_pair_in_the_policy() {
    init();
    let server = Server::start();
    let pair = server.addr();
    let internal = [
        pair.clone(),
        "10.0.0.1:80".to_string(),
        "192.168.1.1:443".to_string(),
        "169.254.169.254:80".to_string(),
        format!("localhost:{}", server.port),
    ];
    let asks = format!("sockets = [{}]", internal.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "));
    let why = "a private or loopback address; the policy must list this exact pair";

    // A wildcard covers them, but internal addresses need the exact pair.
    for allow in
        [r#"sockets_allow = ["*:*"]"#.to_string(), format!(r#"sockets_allow = ["127.0.0.1:*", "*:{}"]"#, server.port)]
    {
        let r = resolution(&asks, &allow);
        assert_eq!(r.grant.sockets, Vec::<String>::new(), "{allow}");
        let denied: Vec<&str> = r.denials.iter().map(|d| d.requested.as_str()).collect();
        let not_covered = "not in the policy's sockets_allow";
        for d in &r.denials {
            assert_eq!(d.capability, "sockets");
            assert!(d.reason == why || d.reason == not_covered, "{d}");
        }
        assert_eq!(denied, internal.iter().map(String::as_str).collect::<Vec<_>>(), "{allow}");
        assert_eq!(r.denials[0].reason, why);
        assert_sockets_refused(prepared(NETCLIENT, r.grant).await);
    }

    // Listed exactly: granted, and the connection goes through.
    let r = resolution(&asks, &format!(r#"sockets_allow = ["*:*", "{pair}"]"#));
    assert_eq!(r.grant.sockets, [pair.clone()]);
    assert_eq!(r.denials, internal[1..].iter().map(|s| denial("sockets", s, why)).collect::<Vec<_>>());
    let p = prepared(NETCLIENT, r.grant).await.unwrap();
    assert_eq!(attack(&p, "connect", &pair, None).await, "reply: pong");
    assert_eq!(attack(&p, "connect", "10.0.0.1:80", None).await, err(&format!("connect: {ACCESS}")));
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn sockets_a_name_grant_admits_the_addresses_the_host_resolves() {
    init();
    let server = Server::start();
    let other = Server::start();
    // `localhost` is an internal name: the policy must list the exact pair.
    let named = format!("localhost:{}", server.port);
    let r = resolution(&format!(r#"sockets = ["{named}"]"#), &format!(r#"sockets_allow = ["{named}"]"#));
    assert_eq!(r.grant.sockets, [named.clone()]);
    let p = prepared(NETCLIENT, r.grant).await.unwrap();
    // The guest cannot resolve names; it connects by address, and the host
    // admits an address the granted name resolves to, on the granted port.
    assert_eq!(attack(&p, "connect", &server.addr(), None).await, "reply: pong");
    assert_eq!(attack(&p, "connect", &other.addr(), None).await, err(&format!("connect: {ACCESS}")));
    assert_eq!(attack(&p, "connect", &named, None).await, err(&format!("connect: {NO_LOOKUP}")));

    // A name that is not internal never admits an internal address, whatever
    // it resolves to (no lookup is even made for one).
    let g =
        Grant { sockets: s(&[&format!("vivarium-caps.invalid:{}", server.port)]), ..Grant::minimal(small_limits()) };
    let p = prepared(NETCLIENT, g).await.unwrap();
    assert_eq!(attack(&p, "connect", &server.addr(), None).await, err(&format!("connect: {ACCESS}")));
    assert_eq!(server.accepted(), 1);
    assert_eq!(other.accepted(), 0);
}

// ---------------------------------------------------------------------------
// Deterministic mode.

/// The `entropy` answer split into its fields.
fn entropy_fields(out: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut rest = out;
    for key in ["random", "keyed", "wall", "mono0", "mono1", "mono-delta"] {
        let start = rest.find(&format!("{key}=")).unwrap_or_else(|| panic!("{key} in {out}")) + key.len() + 1;
        rest = &rest[start..];
        let end = ["random=", " keyed=", " wall=", " mono0=", " mono1=", " mono-delta="]
            .iter()
            .filter_map(|k| rest.find(k))
            .min()
            .unwrap_or(rest.len());
        fields.insert(key.to_string(), rest[..end].to_string());
    }
    fields
}

#[tokio::test]
async fn deterministic_mode_replays_randomness_and_clocks() {
    init();
    let r = resolution("deterministic = { seed = 42 }", "");
    assert_eq!(r.grant.deterministic, Some(42));
    let p = prepared(HOSTILE, r.grant.clone()).await.unwrap();
    let first = attack(&p, "entropy", "", None).await;
    let second = attack(&p, "entropy", "", None).await;
    assert_eq!(first, second);
    // Two runs on separately prepared copies of the grant replay too.
    let again = prepared(HOSTILE, r.grant).await.unwrap();
    assert_eq!(answer(&again, "entropy", "", None).await, first);
    let f = entropy_fields(&first);
    assert_eq!(f["random"].len(), 32, "{first}");
    assert!(!f["random"].starts_with("error"), "{first}");
    // The virtual clock: a fixed epoch, 1 ms per reading.
    assert_eq!(f["wall"], "1700000000000000000");
    assert_eq!(f["mono0"], "Instant { tv_sec: 0, tv_nsec: 1000000 }");
    assert_eq!(f["mono1"], "Instant { tv_sec: 0, tv_nsec: 2000000 }");
    assert_eq!(f["mono-delta"], "1000000");

    // Another seed: other random bytes, the same clocks.
    let p43 = prepared(HOSTILE, resolution("deterministic = { seed = 43 }", "").grant).await.unwrap();
    let g = entropy_fields(&answer(&p43, "entropy", "", None).await);
    assert_ne!(g["random"], f["random"]);
    assert_ne!(g["keyed"], f["keyed"]);
    assert_eq!((&g["wall"], &g["mono0"], &g["mono1"]), (&f["wall"], &f["mono0"], &f["mono1"]));

    // A policy can force it; a policy can forbid it.
    let forced = resolution("", "deterministic = { forced = true, seed = 7 }");
    assert_eq!(forced.grant.deterministic, Some(7));
    assert_eq!(forced.provenance_of("deterministic").unwrap().source, Source::PolicyForced);
    let forbidden = resolution("deterministic = { seed = 42 }", "deterministic = { allowed = false }");
    assert_eq!(forbidden.grant.deterministic, None);
    assert_eq!(forbidden.denials, [denial("deterministic", "seed 42", "the policy does not allow deterministic mode")]);
}

#[tokio::test]
async fn without_deterministic_mode_runs_differ() {
    init();
    let r = resolution("", "");
    assert_eq!(r.grant.deterministic, None);
    let p = prepared(HOSTILE, r.grant).await.unwrap();
    let a = entropy_fields(&attack(&p, "entropy", "", None).await);
    let b = entropy_fields(&attack(&p, "entropy", "", None).await);
    assert_ne!(a["random"], b["random"]);
    assert_ne!(a["keyed"], b["keyed"]);
    assert_ne!(a["wall"], b["wall"]);
    // The real wall clock.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let wall: u128 = b["wall"].parse().unwrap();
    assert!(wall <= now && now - wall < 60_000_000_000, "{wall} vs {now}");
}
