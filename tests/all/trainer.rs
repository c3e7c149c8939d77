//! The host's `trainer` service and the `tiny-lm` suite.
//!
//! The guest is a real Rust component, `tests/guests/trainer`, that runs a
//! script of trainer calls and answers one line per call. The backends:
//! `embedded` (candle, CPU), `command` (a shell script in the build sandbox)
//! and `ray`, against a fake Ray dashboard started by the test on a real
//! loopback socket that speaks the job submission API; one test also runs a
//! job on a real Ray head it starts (see `docs/trainer.md`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vivarium::caps::Grant;
use vivarium::runtime::{CallOptions, CallReport, Prepared, Runtime};
use vivarium::services::trainer::TrainerGrant;
use vivarium::services::HostServices;
use vivarium::trainer::command::CommandConfig;
use vivarium::trainer::ray::RayConfig;
use vivarium::trainer::{BackendKind, EvalSplit, JobSpec, Ledger, Phase, Trainer, TrainerConfig};
use vivarium::units::HumanDuration;
use vivarium_tests::*;

const GUEST: &str = "tests/guests/trainer";

fn trainer(config: TrainerConfig, jobs: &Path) -> Arc<Trainer> {
    Arc::new(Trainer::new(config, Ledger::in_memory(), jobs).expect("trainer"))
}

fn rt_with(t: Arc<Trainer>) -> Runtime {
    runtime().with_services(HostServices { trainer: Some(t), ..HostServices::default() })
}

fn grant(backends: &[&str], seconds: u64) -> Grant {
    Grant {
        trainer: Some(TrainerGrant {
            backends: backends.iter().map(|b| b.to_string()).collect(),
            gpu_seconds: seconds,
        }),
        ..Grant::minimal(small_limits())
    }
}

async fn prepared(rt: &Runtime, g: Grant) -> Prepared {
    prepare(rt, &rust_guest(GUEST), g).await.expect("prepare")
}

/// Run `script` and return the answer's lines and the report.
async fn script(rt: &Runtime, p: &Prepared, s: &str) -> (Vec<String>, CallReport<vivarium::runtime::bindings::Answer>) {
    let r = rt.solve(p, &task("script", s), &CallOptions::default()).await.expect("host error");
    let lines = ok_output(&r).output.split('\n').map(str::to_string).collect();
    (lines, r)
}

fn command_config(script_name: &str) -> TrainerConfig {
    let mut c = CommandConfig::new("/bin/sh", &[script_name]);
    c.script_name = script_name.into();
    // The programs the scripts run besides the shell, by name: the sandbox
    // exposes the program's file, never its directory.
    c.read_only = vec!["/bin/cat".into(), "/bin/sleep".into()];
    TrainerConfig { backend: BackendKind::Command, command: Some(c), max_job_seconds: 30.0, ..TrainerConfig::default() }
}

const SMALL_LM: &str = r#"{"d_model":16,"layers":1,"heads":2,"context":16,"batch":4,"steps":5}"#;

#[tokio::test]
async fn an_embedded_job_trains_reports_bpb_and_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(TrainerConfig::default(), tmp.path()));
    let p = prepared(&rt, grant(&["embedded"], 10)).await;
    let (lines, r) = script(&rt, &p, &format!("left\nsubmit 1.5 char-lm {SMALL_LM}\nwait 0 4000\nleft")).await;
    assert_eq!(lines[0], "10.0");
    assert_eq!(lines[1], "ok");
    assert!(lines[2].starts_with("succeeded seconds="), "{}", lines[2]);
    assert!(lines[2].contains("steps:5,") && lines[2].contains("val_bpb:"), "{}", lines[2]);
    let usage = r.services.trainer.expect("trainer usage in the audit record");
    assert_eq!((usage.submitted, usage.refused, usage.jobs.len()), (1, 0, 1));
    let job = &usage.jobs[0];
    assert_eq!((job.phase, job.recipe.as_str(), job.backend.as_str()), (Phase::Succeeded, "char-lm", "embedded"));
    assert_eq!(job.budget_seconds, 1.5);
    assert!(job.seconds > 0.0 && job.seconds < 1.5, "{}", job.seconds);
    let bpb = job.metrics["val_bpb"];
    assert!(bpb > 4.0 && bpb < 9.0, "5 steps barely train: {bpb}");
    // The reservation was replaced by the seconds run.
    assert_eq!(lines[3], format!("{:.1}", 10.0 - job.seconds));
}

#[tokio::test]
async fn refusals_are_typed_and_say_what_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(TrainerConfig::default(), tmp.path()));
    let p = prepared(&rt, grant(&["embedded"], 2)).await;
    let (lines, r) = script(
        &rt,
        &p,
        &format!(
            "submit 3 char-lm {SMALL_LM}\nsubmit 1 gpt {{}}\nsubmit 1 char-lm {{\"layers\": 99}}\n\
             submit -1 char-lm {{}}\nsubmit 1 char-lm not-json\nsubmit-script 1 char-lm echo hi\npoll 7\npoll-id job-1-1\nleft"
        ),
    )
    .await;
    assert_eq!(
        lines[0],
        "err budget-exhausted: the job asks for 3 s but 2.0 s of the grant's 2 s are left; ask for less"
    );
    assert!(lines[1].starts_with("err invalid-job: unknown recipe \"gpt\""), "{}", lines[1]);
    assert_eq!(lines[2], "err invalid-job: config for char-lm: layers = 99 is out of range; use 1 to 8");
    assert_eq!(lines[3], "err invalid-job: budget-seconds must be a positive number, not -1");
    assert!(lines[4].starts_with("err invalid-job: config-json is not JSON"), "{}", lines[4]);
    assert!(lines[5].starts_with("err invalid-job: the embedded trainer runs no scripts"), "{}", lines[5]);
    assert!(lines[6].starts_with("err unknown-job: no job \"\""), "{}", lines[6]);
    assert_eq!(lines[7], "err unknown-job: no job \"job-1-1\" was submitted by this call");
    assert_eq!(lines[8], "2.0", "nothing was charged");
    assert_eq!(r.services.trainer.unwrap().refused, 6);

    // A grant without the host's backend is denied.
    let p = prepared(&rt, grant(&["ray"], 10)).await;
    let (lines, _) = script(&rt, &p, &format!("submit 1 char-lm {SMALL_LM}")).await;
    assert!(lines[0].starts_with("err denied: this host trains on the \"embedded\" backend"), "{}", lines[0]);
}

#[tokio::test]
async fn a_command_job_reports_its_last_json_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(command_config("train.sh"), &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 10)).await;
    let s = "echo step 1\\necho made > model.bin\\ncat config.json\\necho\\necho '{\"val_bpb\": 1.25, \"steps\": 3}'";
    let (lines, _) = script(&rt, &p, &format!("submit-script 5 any {s}\nwait 0 4000\nlog")).await;
    assert_eq!(lines[0], "ok");
    assert!(lines[1].starts_with("succeeded "), "{}", lines[1]);
    assert!(lines[1].contains("metrics=steps:3,val_bpb:1.25 msg="), "{}", lines[1]);
    assert_eq!(lines[2], "step 1\\n{}\\n{\"val_bpb\": 1.25, \"steps\": 3}\\n");
    // The job directory is gone.
    assert_eq!(std::fs::read_dir(tmp.path().join("jobs")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_command_job_may_not_write_outside_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside.txt");
    let rt = rt_with(trainer(command_config("train.sh"), &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 10)).await;
    let s = format!("echo pwned > {}\\necho '{{\"val_bpb\": 0}}'", outside.display());
    let (lines, _) = script(&rt, &p, &format!("submit-script 5 any set -e\\n{s}\nwait 0 4000")).await;
    assert!(lines[1].starts_with("failed ") && lines[1].contains("reached outside its job directory"), "{}", lines[1]);
    assert!(!outside.exists(), "the write outside the job directory happened");
}

#[tokio::test]
async fn a_command_job_may_not_reach_the_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = command_config("train.sh");
    config.command.as_mut().unwrap().program = "/bin/bash".into();
    let rt = rt_with(trainer(config, &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 10)).await;
    let s = format!("(exec 3<>/dev/tcp/127.0.0.1/{port}) || exit 7\\necho '{{\"val_bpb\": 0}}'");
    let (lines, _) = script(&rt, &p, &format!("submit-script 5 any {s}\nwait 0 4000")).await;
    // Without a network namespace Landlock refuses `connect` (EACCES); in
    // one, the loopback is down (ENETUNREACH).
    let (head, msg) = lines[1].split_once(" msg=").unwrap();
    assert!(head.starts_with("failed seconds=") && head.ends_with(" metrics="), "{head}");
    assert!(
        msg.starts_with(
            "the command (exit status: 7) tried to reach the network, which training jobs may not: train.sh: connect: "
        ),
        "{msg}"
    );
    assert!(listener.accept().is_err(), "the job reached the host's loopback");
}

#[tokio::test]
async fn a_command_job_may_not_read_installed_programs_or_the_host() {
    // The host (this test binary holds the held-out tasks and graders, as
    // `vivarium` does), a copy of it where a system-wide install puts it,
    // and a program beside the shell (`/usr/bin`, once exposed whole).
    let exe = std::env::current_exe().unwrap();
    let copy = Path::new("/usr/local/bin").join(format!("vivarium-trainer-probe-{}", std::process::id()));
    let copied = std::fs::copy(&exe, &copy).is_ok();
    let mut files = vec![exe.display().to_string(), "/usr/bin/env".to_string()];
    if copied {
        files.push(copy.display().to_string());
    }
    assert!(files.iter().all(|f| Path::new(f).is_file()), "{files:?}");
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(command_config("train.sh"), &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 10)).await;
    let s = format!(
        "n=0\\nfor f in {}; do if (exec 3< \"$f\") 2>/dev/null; then n=$((n+1)); fi; done\\necho '{{\"read\": '$n'}}'",
        files.join(" ")
    );
    let (lines, _) = script(&rt, &p, &format!("submit-script 5 any {s}\nwait 0 4000")).await;
    if copied {
        let _ = std::fs::remove_file(&copy);
    }
    assert!(lines[1].starts_with("succeeded ") && lines[1].contains("metrics=read:0 "), "{}", lines[1]);
}

#[tokio::test]
async fn a_job_past_its_budget_is_killed_and_charged_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(command_config("train.sh"), &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 10)).await;
    let started = Instant::now();
    let (lines, r) = script(&rt, &p, "submit-script 0.5 any echo '{\"loss\": 9}'\\nsleep 30\nwait 0 4000\nleft").await;
    // The script sleeps 30 s; well under that means it was killed at its
    // budget (the margin is for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(15), "killed at its budget: {:?}", started.elapsed());
    assert_eq!(
        lines[1],
        "budget-exhausted seconds=0.5 metrics=loss:9 msg=the job ran out of its budget of 0.5 s and was stopped; \
         ask for more seconds or do less"
    );
    assert_eq!(lines[2], "9.5");
    let job = &r.services.trainer.unwrap().jobs[0];
    assert_eq!((job.phase, job.seconds), (Phase::BudgetExhausted, 0.5));
}

#[tokio::test]
async fn a_hanging_job_never_holds_the_guest_past_its_deadline_and_ends_with_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt_with(trainer(command_config("train.sh"), &tmp.path().join("jobs")));
    let p = prepared(&rt, grant(&["command"], 100)).await;
    // The call's wall limit is 5 s; the guest asks to wait 60 s.
    let started = Instant::now();
    let (lines, r) = script(&rt, &p, "submit-script 20 any while :; do :; done\nwait 0 60000\ncancel 0").await;
    let took = started.elapsed();
    // `wait` gives control back before the call's 5 s deadline, not after
    // the 60 s asked for (margins for a loaded machine).
    assert!(took < Duration::from_secs(9) && took > Duration::from_secs(3), "{took:?}");
    let ran: f64 = lines[1]
        .strip_prefix("running seconds=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", lines[1]));
    assert!((2.0..5.0).contains(&ran), "{}", lines[1]);
    assert!(lines[2].starts_with("running ") || lines[2].starts_with("cancelled "), "{}", lines[2]);
    let job = &r.services.trainer.unwrap().jobs[0];
    assert_eq!(job.phase, Phase::Cancelled);
    assert!(job.seconds > 4.0 && job.seconds < 6.0, "{}", job.seconds);
}

/// A fake Ray dashboard: speaks the job submission API, records requests.
struct FakeRay {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRay {
    /// `finish_after`: GET status polls answered RUNNING before SUCCEEDED
    /// (`usize::MAX`: never finishes).
    fn start(finish_after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut polls = 0usize;
            let mut state = "PENDING".to_string();
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Some((method, path, body)) = read_request(&mut s) else { continue };
                reqs.lock().unwrap().push((method.clone(), path.clone(), body.clone()));
                let (code, answer) = match (method.as_str(), path.as_str()) {
                    ("POST", "/api/jobs/") => {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        (200, serde_json::json!({"submission_id": v["submission_id"], "job_id": null}))
                    }
                    ("GET", p) if p.ends_with("/logs") => {
                        (200, serde_json::json!({"logs": "epoch 1\n{\"val_bpb\": 2.5, \"steps\": 7}\n"}))
                    }
                    ("GET", p) if p.starts_with("/api/jobs/") => {
                        polls += 1;
                        if state != "STOPPED" {
                            state = if polls > finish_after { "SUCCEEDED".into() } else { "RUNNING".into() };
                        }
                        (200, serde_json::json!({"status": state, "message": "fake"}))
                    }
                    ("POST", p) if p.ends_with("/stop") => {
                        state = "STOPPED".into();
                        (200, serde_json::json!({"stopped": true}))
                    }
                    _ => (404, serde_json::json!({"error": "not found"})),
                };
                let body = answer.to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { addr, requests, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeRay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(s: &mut TcpStream) -> Option<(String, String, String)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0usize);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    Some((method, path, String::from_utf8_lossy(&buf[head_end..]).to_string()))
}

fn ray_trainer(server: &FakeRay) -> Trainer {
    let mut ray = RayConfig::new(server.url(), "python -c \"import os; exec(os.environ['VIVARIUM_JOB_SCRIPT'])\"");
    ray.poll_interval = HumanDuration(Duration::from_millis(20));
    ray.runtime_env = BTreeMap::from([("pip".to_string(), toml::Value::Array(vec!["torch".into()]))]);
    let config = TrainerConfig { backend: BackendKind::Ray, ray: Some(ray), ..TrainerConfig::default() };
    Trainer::new(config, Ledger::in_memory(), Path::new("/nonexistent")).unwrap()
}

fn ray_spec(budget: Duration) -> JobSpec {
    JobSpec {
        recipe: "gpt".into(),
        config: serde_json::json!({"lr": 0.01}),
        script: Some("print('hi')".into()),
        budget,
        eval_split: EvalSplit::Validation,
    }
}

#[test]
fn the_ray_client_submits_polls_and_reads_the_metrics() {
    let server = FakeRay::start(2);
    let t = ray_trainer(&server);
    let s = t.run_blocking(ray_spec(Duration::from_secs(10))).unwrap();
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    assert_eq!(s.metrics, BTreeMap::from([("steps".to_string(), 7.0), ("val_bpb".to_string(), 2.5)]));
    assert_eq!(s.log_tail, "epoch 1\n{\"val_bpb\": 2.5, \"steps\": 7}\n");
    let reqs = server.requests.lock().unwrap().clone();
    let (m, p, body) = &reqs[0];
    assert_eq!((m.as_str(), p.as_str()), ("POST", "/api/jobs/"));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let sid = v["submission_id"].as_str().unwrap().to_string();
    assert_eq!(v["entrypoint"], "python -c \"import os; exec(os.environ['VIVARIUM_JOB_SCRIPT'])\"");
    assert_eq!(v["runtime_env"]["pip"], serde_json::json!(["torch"]));
    assert_eq!(v["runtime_env"]["env_vars"]["VIVARIUM_JOB_CONFIG"], "{\"lr\":0.01}");
    assert_eq!(v["runtime_env"]["env_vars"]["VIVARIUM_JOB_SCRIPT"], "print('hi')");
    assert_eq!(v["metadata"]["recipe"], "gpt");
    let paths: Vec<String> = reqs[1..].iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    let status = format!("GET /api/jobs/{sid}");
    assert_eq!(paths, vec![status.clone(), status.clone(), status, format!("GET /api/jobs/{sid}/logs")]);
}

#[test]
fn a_ray_job_past_its_budget_is_stopped_on_the_cluster() {
    let server = FakeRay::start(usize::MAX);
    let t = ray_trainer(&server);
    let s = t.run_blocking(ray_spec(Duration::from_millis(300))).unwrap();
    assert_eq!(s.phase, Phase::BudgetExhausted, "{s:?}");
    assert_eq!(s.seconds, 0.3);
    assert_eq!(s.metrics["val_bpb"], 2.5, "metrics printed before the kill are kept");
    let reqs = server.requests.lock().unwrap().clone();
    let stops: Vec<_> = reqs.iter().filter(|(m, p, _)| m == "POST" && p.ends_with("/stop")).collect();
    assert_eq!(stops.len(), 1, "{reqs:?}");
}

/// Also run on an async runtime: the Ray client is built and dropped there.
#[tokio::test]
async fn a_ray_cluster_that_is_down_fails_the_job_with_the_reason() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed at once
    let server = FakeRay { addr, requests: Arc::default(), stop: Arc::default() };
    let s = ray_trainer(&server).run_blocking(ray_spec(Duration::from_secs(5))).unwrap();
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.message.starts_with("Ray submit: cannot reach the cluster"), "{}", s.message);
}

/// Against a real Ray head that the test starts (`scripts/ray-cluster.sh up
/// --workers 0`, from the Ray that `scripts/setup.sh` installs): a job runs
/// its script there and the metrics come back. `VIVARIUM_RAY_DASHBOARD`
/// names an existing head's dashboard instead.
#[test]
fn a_real_ray_head_runs_a_job() {
    let (_head, address) = match std::env::var("VIVARIUM_RAY_DASHBOARD") {
        Ok(a) => (None, a),
        Err(_) => {
            let head = vivarium::cluster::local::LocalCluster::start(0).expect("a local Ray head");
            let dashboard = head.dashboard.clone();
            (Some(head), dashboard)
        }
    };
    let mut ray = RayConfig::new(address, "python -c \"import os; exec(os.environ['VIVARIUM_JOB_SCRIPT'])\"");
    ray.poll_interval = HumanDuration(Duration::from_millis(200));
    let config = TrainerConfig { backend: BackendKind::Ray, ray: Some(ray), ..TrainerConfig::default() };
    let t = Trainer::new(config, Ledger::in_memory(), Path::new("/nonexistent")).unwrap();
    let mut spec = ray_spec(Duration::from_secs(120));
    spec.script = Some(
        "import json, os\ncfg = json.loads(os.environ['VIVARIUM_JOB_CONFIG'])\nprint(json.dumps({'val_bpb': cfg['lr'] * 100}))"
            .into(),
    );
    let s = t.run_blocking(spec).unwrap();
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    assert_eq!(s.metrics["val_bpb"], 1.0);
}

#[tokio::test]
async fn the_tiny_lm_suite_trains_on_the_host_and_ignores_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let session = vivarium::variant::Session::open(vivarium::home::Home::at(tmp.path())).unwrap();
    let suite = vivarium::tasks::suite("tiny-lm").unwrap();
    // A variant that answers with a claimed metric instead of a config.
    let liar = wat_component(&agent_wat(
        false,
        r#"(data (i32.const 32768) "{\"val_bpb\": 0.0}")"#,
        "(call $answer (i32.const 32768) (i32.const 16))",
    ));
    let p = prepare(&session.runtime, &liar, Grant::minimal(small_limits())).await.unwrap();
    let (results, spent) =
        vivarium::tasks::run_tasks(&session, &p, &suite, &suite.visible[..1], false, &CallOptions::default())
            .await
            .unwrap();
    assert_eq!(results[0].score, 0.0);
    assert!(results[0].note.contains("unknown field `val_bpb`"), "{}", results[0].note);
    assert_eq!(spent.gpu_seconds, 0.0, "nothing was trained");

    // The baseline variant's config is trained and measured by the host.
    let built = rust_guest("variants/tiny-lm");
    let p = prepare(&session.runtime, &built, Grant::minimal(small_limits())).await.unwrap();
    let (results, spent) =
        vivarium::tasks::run_tasks(&session, &p, &suite, &suite.held_out, true, &CallOptions::default()).await.unwrap();
    let r = &results[0];
    assert!(r.note.starts_with("bpb "), "{}", r.note);
    let bpb: f64 = r.note[4..].split(' ').next().unwrap().parse().unwrap();
    assert!((r.score - (1.0 - bpb / 8.0)).abs() < 1e-4, "the note rounds bpb to 4 places");
    assert!(bpb > 1.0 && bpb < 8.0, "{bpb}");
    assert!(spent.gpu_seconds > 0.5 && spent.gpu_seconds <= 2.0, "{}", spent.gpu_seconds);
}

fn evolve_run(dir: &Path, name: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nsuite = \"tiny-lm\"\nseed = 3\ngenerations = 2\nchildren_per_generation = 1\n\
         initial = [\"{}\"]\n{extra}",
        workspace_root().join("variants/tiny-lm").display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn evolve_runs_the_tiny_lm_suite_and_the_meta_agent_edits_its_config() {
    use vivarium::archive::{Archive, Split};
    let tmp = tempfile::tempdir().unwrap();
    let run = evolve_run(tmp.path(), "lm", "");
    let s = vivarium::evolve::evolve(&sandboxed_session(&tmp.path().join("h")), &run, &Default::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(s.stop, vivarium::evolve::StopReason::Finished);
    assert_eq!(s.variants, 2, "the baseline and one child");
    // Three tasks of at most 2 s each per variant.
    assert!(s.gpu_seconds > 3.0 && s.gpu_seconds <= 2.0 * 3.0 * 2.0, "{}", s.gpu_seconds);
    let archive = Archive::open(&s.archive_dir).unwrap();
    let rows = archive.list(Some("lm")).unwrap();
    for row in &rows {
        let results = archive.results(&row.id).unwrap();
        assert_eq!(results.iter().filter(|r| r.split == Split::Visible).count(), 2);
        assert_eq!(results.iter().filter(|r| r.split == Split::HeldOut).count(), 1);
        for r in &results {
            assert!(r.note.starts_with("bpb "), "{}", r.note);
            assert!(r.score > 0.0 && r.score < 1.0, "{}", r.score);
        }
    }
    // The first child tripled its learning rate (the first move).
    let child = rows.iter().find(|r| r.generation == 1).expect("a first-generation child");
    let files = archive.tree_contents(&child.tree_sha).unwrap();
    let (_, lib) = files.iter().find(|(e, _)| e.path == "src/lib.rs").expect("src/lib.rs");
    let lib = String::from_utf8_lossy(lib);
    assert!(lib.contains("const LR_MILLI: u32 = 3;") && lib.contains("const GENERATION: u32 = 1;"), "{lib}");
    // A 3x learning rate trains much further in 2 s (bpb about 5.7 -> 5.2
    // on the development machine).
    assert!(child.visible_score.unwrap() > s.baseline, "{} vs {}", child.visible_score.unwrap(), s.baseline);
}

#[tokio::test]
async fn evolve_stops_at_the_runs_trainer_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let run = evolve_run(tmp.path(), "lm-budget", "[budget]\ngpu_seconds = 3\n");
    let s = vivarium::evolve::evolve(&sandboxed_session(&tmp.path().join("h")), &run, &Default::default(), &|_| {})
        .await
        .unwrap();
    match &s.stop {
        vivarium::evolve::StopReason::Budget(why) => assert!(why.starts_with("trainer seconds "), "{why}"),
        other => panic!("expected a budget stop, got {other:?}"),
    }
    assert_eq!(s.variants, 1, "only the baseline");
    assert!(s.gpu_seconds > 3.0, "{}", s.gpu_seconds);
}
