//! Evaluations on a real Ray cluster (`[cluster] engine = "ray"`): one local
//! cluster per test binary — a head and two worker nodes of one CPU each,
//! started by `scripts/ray-cluster.sh up --hold` from the Ray that
//! `scripts/setup.sh` installs, stopped when this process ends.
//!
//! Every run is the demo's shape (seed 7, three generations of two
//! children, staged evaluation) on `variants/arith-wat`, which builds in
//! process, so a run takes seconds; each is compared with the same run on
//! the `local` engine: the same variants (ids, parents, generations,
//! scores), the same fuel charged, one audit `use` record per guest call.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use vivarium::archive::Archive;
use vivarium::audit::{AuditLog, EventKind, Record};
use vivarium::cluster::local::LocalCluster;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The cluster of this test binary.
fn cluster() -> &'static LocalCluster {
    static C: OnceLock<LocalCluster> = OnceLock::new();
    C.get_or_init(|| {
        let started = Instant::now();
        let c = LocalCluster::start(2).expect("a local Ray cluster (scripts/setup.sh installs Ray)");
        println!("cluster up at {} in {:.1} s", c.address, started.elapsed().as_secs_f64());
        c
    })
}

/// The demo's run on arith-wat, named `name`; `cluster` is the run file's
/// `[cluster]` table (empty: local).
fn run_file(dir: &Path, name: &str, cluster: &str) -> PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 7\ngenerations = 3\nchildren_per_generation = 2\n\
         workers = 1\nselection = \"dgm\"\nkeep = \"all\"\ninitial = [\"{}\"]\n\n[staged]\nfirst = 4\nthreshold = 0.25\n\n{cluster}",
        root().join("variants/arith-wat").display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn ray_table(address: &str, worker: Option<&Path>) -> String {
    let mut t = format!("[cluster]\nengine = \"ray\"\naddress = \"{address}\"\nslots = 2\n");
    if let Some(w) = worker {
        t.push_str(&format!("worker_command = \"{}\"\n", w.display()));
    }
    t
}

/// `vivarium --json evolve <run>` with its state in `home`.
fn vivarium(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vivarium"));
    c.env("VIVARIUM_HOME", home)
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .env_remove("VIVARIUM_RAY_ADDRESS");
    c
}

fn evolve(home: &Path, run: &Path, resume: bool) -> Output {
    let mut c = vivarium(home);
    c.args(["--json", "evolve"]).arg(run);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

type Fingerprint = Vec<(String, Option<String>, u32, Option<f64>, Option<f64>)>;

fn fingerprint(home: &Path, run: &str) -> Fingerprint {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some(run))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.held_out_score))
        .collect()
}

fn records(home: &Path) -> Vec<Record> {
    AuditLog::open(&home.join("audit")).unwrap().records().unwrap()
}

/// `use` records of `solve` calls: one per graded task.
fn solve_uses(home: &Path) -> Vec<Record> {
    records(home).into_iter().filter(|r| r.event == EventKind::Use && r.details["call"] == "solve").collect()
}

/// What a run's home must show whatever happened on the way: the archive
/// and audit chain whole.
fn check_whole(home: &Path, what: &str) {
    let integrity = Archive::open(&home.join("archive")).unwrap().integrity_check().unwrap();
    assert!(integrity.is_ok(), "{what}: {integrity:?}");
    let verify = vivarium::audit::verify_dir(&home.join("audit")).unwrap();
    assert!(verify.ok, "{what}: {verify:?}");
}

/// The same run on the local engine: its fingerprint and its count of
/// graded calls.
struct Reference {
    fingerprint: Fingerprint,
    solves: usize,
}

/// The run charged exactly the fuel of the graded calls its audit chain
/// records: each answer counted once. (Not the local run's figure: a
/// call's fuel includes 1,000 per host-call return, and that count varies
/// by a few between runs of the same component.)
fn check_fuel_charged_once(home: &Path, summary: &Value, what: &str) {
    let audited: u64 = solve_uses(home).iter().map(|r| r.details["usage"]["fuel"].as_u64().unwrap()).sum();
    assert_eq!(summary["fuel"].as_u64().unwrap(), audited, "{what}: fuel charged = fuel of the audited calls");
}

/// One reference per run name (ids do not depend on it, but the archive's
/// listing is per run).
fn reference(name: &str) -> Reference {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), name, "");
    let home = tmp.path().join("local");
    let out = evolve(&home, &run, false);
    assert!(out.status.success(), "the local run failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_fuel_charged_once(&home, &summary, "the local run");
    let r = Reference { fingerprint: fingerprint(&home, name), solves: solve_uses(&home).len() };
    assert!(r.fingerprint.len() >= 3, "the run archives the baseline and its children: {:?}", r.fingerprint);
    r
}

#[test]
fn an_evolve_on_a_two_node_ray_cluster_archives_what_the_local_run_archives() {
    let c = cluster();
    let expected = reference("same");
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), "same", &ray_table(&c.address, None));
    let home = tmp.path().join("ray");
    let started = Instant::now();
    let out = evolve(&home, &run, false);
    assert!(out.status.success(), "the Ray run failed: {}", String::from_utf8_lossy(&out.stderr));
    println!("the Ray run took {:.1} s", started.elapsed().as_secs_f64());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fingerprint(&home, "same"), expected.fingerprint, "same ids, parents, generations and scores");
    check_fuel_charged_once(&home, &summary, "the Ray run");
    check_whole(&home, "the Ray run");

    // Every graded call is in the coordinator's one chain, once, naming the
    // Ray node that ran it and the component it ran.
    let uses = solve_uses(&home);
    assert_eq!(uses.len(), expected.solves, "one use record per graded call, as locally");
    let mut nodes: Vec<&str> = Vec::new();
    for r in &uses {
        let origin = &r.details["cluster"];
        assert_eq!(origin["engine"], "ray", "{r:?}");
        assert_eq!(origin["component_sha256"].as_str(), r.variant.as_deref(), "{r:?}");
        let node = origin["node"].as_str().unwrap();
        assert_eq!(node.len(), 56, "a Ray node id: {node}");
        nodes.push(node);
    }
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "two batches at once on two one-CPU nodes use both nodes: {nodes:?}");
    // The workers' homes are theirs: the coordinator's audit log has no
    // grant computed elsewhere (every grant record names this command).
    for r in records(&home).iter().filter(|r| r.event == EventKind::Grant) {
        assert!(r.details["command"].as_str().unwrap().contains("evolve"), "{r:?}");
    }
}

/// Pids of the running `<worker> __cluster-worker` processes.
fn workers_of(worker: &Path) -> Vec<i32> {
    let want = format!("{}\0__cluster-worker\0", worker.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_worker_killed_mid_run_is_retried_and_counted_once() {
    let c = cluster();
    let expected = reference("killed");
    let tmp = tempfile::tempdir().unwrap();
    // This test's workers run a binary of their own path, so it kills
    // only them (the other tests share the cluster).
    let worker = tmp.path().join("bin/vivarium");
    std::fs::create_dir_all(worker.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vivarium"), &worker).unwrap();
    let run = run_file(tmp.path(), "killed", &ray_table(&c.address, Some(&worker)));
    let home = tmp.path().join("ray");
    let started = Instant::now();
    let mut child = vivarium(&home)
        .args(["--json", "evolve"])
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill each worker process as soon as it appears, three times: the
    // first appears when the first batch reaches a node, so the kill lands
    // while it grades.
    let mut killed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while killed.len() < 3 && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        for pid in workers_of(&worker) {
            if !killed.contains(&pid) && killed.len() < 3 {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Ray run failed: {}", String::from_utf8_lossy(&out.stderr));
    println!("killed worker processes {killed:?}; the run took {:.1} s", started.elapsed().as_secs_f64());
    assert!(!killed.is_empty(), "no worker was killed while the run ran");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fingerprint(&home, "killed"), expected.fingerprint, "nothing lost, nothing duplicated");
    check_fuel_charged_once(&home, &summary, "the run whose workers were killed");
    assert_eq!(solve_uses(&home).len(), expected.solves, "a retried batch is audited once");
    check_whole(&home, "the run whose workers were killed");
    let pids: Vec<u64> =
        solve_uses(&home).iter().map(|r| r.details["cluster"]["worker_pid"].as_u64().unwrap()).collect();
    // A worker killed before it answered never answers; the batches it had
    // were answered by the processes started in its place.
    assert!(pids.iter().any(|p| !killed.contains(&(*p as i32))), "replacement workers answered: {pids:?}");
}

#[test]
fn a_coordinator_killed_mid_run_resumes_on_the_cluster_and_finds_its_finished_work() {
    let c = cluster();
    let started = Instant::now();
    let expected = reference("resumed");
    let local_full = started.elapsed();
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), "resumed", &ray_table(&c.address, None));
    // The first attempt runs on the local engine and is killed halfway: a
    // run moved from a laptop to the cluster resumes there. Each of the
    // next two, on the cluster, is killed the moment the cluster's answer
    // to a batch reaches the run's journal — mid-evaluation, before the
    // step is recorded — so the resume must find that answer there.
    let laptop = tmp.path().join("laptop");
    std::fs::create_dir_all(&laptop).unwrap();
    let run_local = run_file(&laptop, "resumed", "");
    let home = tmp.path().join("killed");
    let journal = home.join("runs/resumed/cluster");
    // Answers in the journal (a file being written has another name).
    let answers = || {
        std::fs::read_dir(&journal)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    let mut landed = 0;
    let mut resume = false;
    for i in 0..3 {
        let mut cmd = vivarium(&home);
        cmd.args(["evolve"]).arg(if i == 0 { &run_local } else { &run }).stdout(Stdio::null()).stderr(Stdio::null());
        if resume {
            cmd.arg("--resume");
        }
        let before = answers();
        let mut child = cmd.spawn().unwrap();
        if i == 0 {
            std::thread::sleep(local_full / 2);
        } else {
            while answers() == before && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(libc::SIGKILL) {
            landed += 1;
            println!("kill {} landed ({} engine)", i + 1, if i == 0 { "local" } else { "ray" });
        }
        resume = home.join("archive").exists();
    }
    let out = evolve(&home, &run, resume);
    assert!(out.status.success(), "the last resume failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fingerprint(&home, "resumed"), expected.fingerprint, "nothing lost, nothing duplicated");
    check_whole(&home, "the resumed run");
    let replayed =
        solve_uses(&home).iter().filter(|r| r.details["cluster"]["from_journal"] == Value::Bool(true)).count();
    println!("{landed} kills landed mid-run; {replayed} graded calls found in the journal");
    assert!(landed >= 2, "the kills landed while the coordinator ran");
    assert!(replayed >= 1, "a resumed run takes the cluster's finished answers from the journal");
}

#[test]
fn an_unreachable_cluster_is_an_error_naming_the_address_and_archives_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let run = run_file(tmp.path(), "nowhere", &ray_table("127.0.0.1:1", None));
    let home = tmp.path().join("h");
    // VIVARIUM_RAY_ADDRESS overrides the run file's address.
    let out = vivarium(&home).env("VIVARIUM_RAY_ADDRESS", &address).arg("evolve").arg(&run).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach the Ray cluster at {address}")), "{err}");
    assert!(err.contains("scripts/ray-cluster.sh up"), "says what to do: {err}");
    assert!(!home.join("archive").exists(), "nothing archived");
    assert!(!home.join("runs/nowhere").exists(), "no run directory");
}
