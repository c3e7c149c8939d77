//! Crash safety: `vivarium evolve` killed with SIGKILL at 20 random moments,
//! each followed by `--resume`, ends with the same archive as an
//! uninterrupted run — nothing lost, nothing duplicated — an archive that
//! passes its integrity check and an audit log that verifies.
//!
//! The moments come from a seeded PRNG. The seed and every moment (with the
//! phase the run was in: build, improve, child-build, evaluate,
//! archive-write, record) are printed; rerun one with
//! `VIVARIUM_CRASH_SEED=<seed> cargo test -p vivarium --test all evolve_resume:: -- --nocapture`
//! (with `VIVARIUM_CRASH_KEEP=1` the homes and per-attempt logs are kept).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vivarium::archive::Archive;

/// Kills delivered to a running `vivarium evolve`.
const KILLS: usize = 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `vivarium` with its state in `home`, tracing the evolve phases to `log`.
fn vivarium(home: &Path, log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vivarium"));
    c.env("VIVARIUM_HOME", home)
        .env("VIVARIUM_LOG", "vivarium::evolve=info")
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    c
}

type Fingerprint = Vec<(String, Option<String>, u32, Option<f64>, Option<f64>, vivarium::archive::SearchFields)>;

fn fingerprint(home: &Path) -> Fingerprint {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some("crash"))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.held_out_score, v.search))
        .collect()
}

/// The step ledger: which steps finished, with which variant and outcome
/// (a near-duplicate rejection included).
fn ledger(home: &Path, steps: u64) -> Vec<Option<(Option<String>, String)>> {
    let a = Archive::open(&home.join("archive")).unwrap();
    (0..steps).map(|s| a.step("crash", s).unwrap().map(|(v, o)| (v.map(|v| v.0), o))).collect()
}

/// The archive and the audit log of `home` are whole and agree with `expected`.
fn check_home(home: &Path, expected: &Fingerprint, what: &str) {
    assert_eq!(&fingerprint(home), expected, "{what}: same variants, none lost, none duplicated");
    let archive = Archive::open(&home.join("archive")).unwrap();
    let integrity = archive.integrity_check().unwrap();
    assert!(integrity.is_ok(), "{what}: {integrity:?}");
    // A kill can tear the audit log's last line; the next append repairs it
    // and records a `recovery` event, after which the chain verifies.
    let verify = vivarium::audit::verify_dir(&home.join("audit")).unwrap();
    assert!(verify.ok, "{what}: {verify:?}");
}

/// The phase the run was in: the last `phase …` line it traced.
fn last_phase(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| l.split_once("phase ").map(|(_, p)| p.trim().to_string()))
        .unwrap_or_else(|| "startup".into())
}

/// splitmix64: a small, seedable PRNG, so a failing sweep can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn twenty_kill_9s_then_resume_lose_and_duplicate_nothing() {
    let seed = std::env::var("VIVARIUM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("crash sweep seed {seed} (replay: VIVARIUM_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let guard = tempfile::tempdir().unwrap();
    let (_guard, base) = if std::env::var_os("VIVARIUM_CRASH_KEEP").is_some() {
        let kept = guard.keep();
        println!("keeping the homes and logs in {}", kept.display());
        (None, kept)
    } else {
        let base = guard.path().to_path_buf();
        (Some(guard), base)
    };
    let run = base.join("run.toml");
    // arith-wat builds in process (no cargo), so a run is about a second and
    // still has every phase: build and evaluate the baseline, then per child
    // improve, child build, archive write and evaluation. The search is on:
    // islands with migration, the MAP-Elites grid, repeated evaluation,
    // crossover, novelty rejection (of exact copies) and the UCB bandit over
    // two models — all of it must come out the same after any kill.
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"crash\"\nsuite = \"arith\"\nseed = 5\ngenerations = 3\nchildren_per_generation = 2\ninitial = [\"{}\"]\n\
             [search]\nislands = 2\nmigration_interval = 1\nmigration_rate = 0.5\ndescriptors = [\"source_size\", \"score\"]\n\
             repeats = 2\ncrossover = 0.5\nnovelty_threshold = 1.0\nmodel_selection = \"ucb\"\n\
             [[models]]\nname = \"m1\"\n[[models]]\nname = \"m2\"\n",
            root().join("variants/arith-wat").display()
        ),
    )
    .unwrap();

    // The reference: one uninterrupted run, which also sets the time scale.
    let clean = base.join("clean");
    let started = Instant::now();
    let out = vivarium(&clean, &base.join("clean.log")).arg("evolve").arg(&run).status().unwrap();
    let full = started.elapsed();
    assert!(out.success(), "the uninterrupted run failed: {}", last_phase(&base.join("clean.log")));
    let expected = fingerprint(&clean);
    let expected_ledger = ledger(&clean, 7);
    assert!(
        expected.iter().all(|v| v.5.island.is_some() && v.5.cell.is_some() && v.5.repeats == Some(2)),
        "{expected:?}"
    );
    assert!(expected[1..].iter().all(|v| v.5.model.is_some()), "every child has its bandit's model: {expected:?}");
    assert!(expected.len() >= 3, "the run archives the baseline and its children: {expected:?}");
    println!("uninterrupted run: {} ms, {} variants", full.as_millis(), expected.len());

    // Each attempt is killed at a moment drawn in [0, 0.6 × the full run),
    // so most kills land mid-run; a round whose run completes between kills
    // is checked, and the next round starts from an empty home, until 20
    // kills have hit a running process.
    let mut kills: Vec<(usize, u64, String)> = Vec::new();
    let mut round = 0;
    let mut attempt = 0;
    while kills.len() < KILLS {
        round += 1;
        let home = base.join(format!("round-{round}"));
        let mut resume = false;
        loop {
            attempt += 1;
            let log = base.join(format!("attempt-{attempt}.log"));
            let mut cmd = vivarium(&home, &log);
            cmd.arg("evolve").arg(&run);
            if resume {
                cmd.arg("--resume");
            }
            let delay = Duration::from_secs_f64(full.as_secs_f64() * 0.6 * rng.unit());
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                let _ = child.kill(); // SIGKILL
            }
            let status = child.wait().unwrap();
            if home.join("archive").exists() {
                resume = true;
            }
            if status.signal() == Some(libc::SIGKILL) {
                let phase = last_phase(&log);
                println!("kill {:2}: round {round}, after {:4} ms, in {phase}", kills.len() + 1, delay.as_millis());
                kills.push((round, delay.as_millis() as u64, phase));
                if kills.len() == KILLS {
                    break;
                }
            } else {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                assert!(
                    status.success(),
                    "attempt {attempt} failed: {status} in {}; the end of its log:\n{}",
                    last_phase(&log),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                break;
            }
        }
        // Finish the round without interruption and check it.
        let log = base.join(format!("round-{round}-final.log"));
        let mut cmd = vivarium(&home, &log);
        cmd.arg("evolve").arg(&run);
        if resume {
            cmd.arg("--resume");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "round {round}: the final resume failed: {status}");
        check_home(&home, &expected, &format!("round {round} (seed {seed})"));
        assert_eq!(ledger(&home, 7), expected_ledger, "round {round} (seed {seed}): the same steps and outcomes");
    }
    let mut phases: Vec<&str> = kills.iter().map(|k| k.2.as_str()).collect();
    phases.sort();
    phases.dedup();
    println!("{} kills over {round} rounds ({attempt} attempts); phases hit: {}", kills.len(), phases.join(", "));
}

/// An archive written before the search columns existed (schema 2), its
/// run interrupted before its last generation, opens, verifies and resumes
/// under the same run file: the resumed run ends with the variants of an
/// uninterrupted one; the old rows read as "not recorded" and the new ones
/// carry their island.
#[test]
fn a_run_archived_under_schema_two_resumes_under_this_build() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"crash\"\nsuite = \"arith\"\nseed = 5\ngenerations = 2\nchildren_per_generation = 2\ninitial = [\"{}\"]\n",
            root().join("variants/arith-wat").display()
        ),
    )
    .unwrap();
    let log = tmp.path().join("first.log");
    assert!(vivarium(&home, &log).arg("evolve").arg(&run).status().unwrap().success());
    let expected = fingerprint(&home);
    assert!(expected.iter().any(|v| v.2 == 2), "{expected:?}");
    // Take the index back to schema 2, as the build before these columns
    // left it, and to the moment before generation 2 (steps 3 and 4), as a
    // kill would have.
    let conn = rusqlite::Connection::open(home.join("archive/index.sqlite")).unwrap();
    conn.execute_batch(
        "DELETE FROM results WHERE variant_id IN (SELECT id FROM variants WHERE generation = 2);
         DELETE FROM steps WHERE step >= 3;
         DELETE FROM variants WHERE generation = 2;
         UPDATE runs SET status = 'running', finished = NULL;",
    )
    .unwrap();
    for col in ["island", "cell", "repeats", "score_lo", "score_hi", "model", "tokens"] {
        conn.execute_batch(&format!("ALTER TABLE variants DROP COLUMN {col}")).unwrap();
    }
    conn.execute_batch("ALTER TABLE steps DROP COLUMN parent_id").unwrap();
    conn.execute("UPDATE schema_version SET version = 2", []).unwrap();
    drop(conn);

    let log = tmp.path().join("resume.log");
    let status = vivarium(&home, &log).arg("evolve").arg(&run).arg("--resume").status().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let archive = Archive::open(&home.join("archive")).unwrap();
    assert_eq!(archive.schema_version().unwrap(), vivarium::archive::SCHEMA_VERSION);
    let after = fingerprint(&home);
    let core = |f: &Fingerprint| f.iter().map(|v| (v.0.clone(), v.1.clone(), v.2, v.3, v.4)).collect::<Vec<_>>();
    assert_eq!(core(&after), core(&expected), "the same variants as the uninterrupted run");
    for v in &after {
        if v.2 < 2 {
            assert_eq!(v.5, Default::default(), "an old row reads as not recorded: {v:?}");
        } else {
            assert_eq!(v.5.island, Some(0), "{v:?}");
        }
    }
    assert!(archive.integrity_check().unwrap().is_ok());
    assert!(vivarium::audit::verify_dir(&home.join("audit")).unwrap().ok);
}

/// A run whose proposals are refused, cut back to the middle (its last
/// generations' steps and variants removed, as a kill between generations
/// leaves it) and resumed, makes exactly the choices of the uninterrupted
/// run: the refusals counted in `hgm`'s clades come from the step ledger,
/// which keeps each refused step's parent.
#[test]
fn a_run_with_refused_proposals_resumes_to_the_same_parents() {
    let tmp = tempfile::tempdir().unwrap();
    // `stuck` (0.6, every proposal refused: it writes outside its tree) and
    // `open` (0.3), copies of variants/trap-python.
    for (name, genome, refused) in [("stuck", "000 000", true), ("open", "100 100", false)] {
        let src = root().join("variants/trap-python");
        let dst = tmp.path().join(name);
        std::fs::create_dir_all(dst.join("src")).unwrap();
        let manifest = std::fs::read_to_string(src.join("variant.toml")).unwrap();
        std::fs::write(dst.join("variant.toml"), manifest.replace("\"trap-python\"", &format!("\"{name}\""))).unwrap();
        let mut agent = std::fs::read_to_string(src.join("src/agent.py"))
            .unwrap()
            .replace("GENOME = \"100 100\"", &format!("GENOME = \"{genome}\""));
        if refused {
            agent = agent.replace("[source.write(SELF_PATH, text)]", "[source.write(\"../outside.py\", text)]");
        }
        std::fs::write(dst.join("src/agent.py"), agent).unwrap();
    }
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        "[run]\nname = \"crash\"\nsuite = \"trap\"\nseed = 5\ngenerations = 10\nchildren_per_generation = 1\n\
         selection = \"hgm\"\ninitial = [\"stuck\", \"open\"]\n",
    )
    .unwrap();
    let home = tmp.path().join("home");
    assert!(vivarium(&home, &tmp.path().join("first.log")).arg("evolve").arg(&run).status().unwrap().success());
    let expected = fingerprint(&home);
    let steps = 2 + 10;
    let expected_ledger = ledger(&home, steps);
    let refusals =
        |home: &Path| Archive::open(&home.join("archive")).unwrap().refused_children("crash", steps).unwrap();
    let expected_refused = refusals(&home);
    assert!(!expected_refused.is_empty(), "the run has refusals: {expected_ledger:?}");
    // Back to the end of generation 1 (steps 0–2).
    let conn = rusqlite::Connection::open(home.join("archive/index.sqlite")).unwrap();
    conn.execute_batch(
        "DELETE FROM results WHERE variant_id IN (SELECT id FROM variants WHERE generation > 1);
         DELETE FROM steps WHERE step >= 3;
         DELETE FROM variants WHERE generation > 1;
         UPDATE runs SET status = 'running', finished = NULL;",
    )
    .unwrap();
    drop(conn);
    assert_ne!(refusals(&home), expected_refused, "the cut removed refusals to redo");
    let log = tmp.path().join("resume.log");
    let status = vivarium(&home, &log).arg("evolve").arg(&run).arg("--resume").status().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(ledger(&home, steps), expected_ledger, "the same steps and outcomes");
    assert_eq!(refusals(&home), expected_refused, "the same refused parents");
    assert_eq!(fingerprint(&home), expected, "the same variants");
    let archive = Archive::open(&home.join("archive")).unwrap();
    assert!(archive.integrity_check().unwrap().is_ok());
    assert!(vivarium::audit::verify_dir(&home.join("audit")).unwrap().ok);
}
