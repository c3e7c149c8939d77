//! Crash safety: `vivarium evolve` killed with SIGKILL at several moments,
//! each followed by `--resume`, ends with the same archive as an
//! uninterrupted run — nothing lost, nothing duplicated — an archive that
//! passes its integrity check and an audit log that verifies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vivarium::archive::Archive;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn vivarium(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vivarium"));
    c.env("VIVARIUM_HOME", home)
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn fingerprint(home: &Path) -> Vec<(String, Option<String>, u32, Option<f64>, Option<f64>)> {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some("crash"))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.held_out_score))
        .collect()
}

#[test]
fn resume_after_kill_9_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"crash\"\nsuite = \"arith\"\nseed = 5\ngenerations = 2\nchildren_per_generation = 2\ninitial = [\"{}\"]\n",
            root().join("variants/arith").display()
        ),
    )
    .unwrap();

    // The reference: one uninterrupted run.
    let clean = tmp.path().join("clean");
    let out = vivarium(&clean).arg("evolve").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = fingerprint(&clean);

    // Killed at several moments (the first while the baseline is built and
    // evaluated, later ones during improve, child builds and archive
    // writes), resumed each time.
    let home = tmp.path().join("crashy");
    let mut first = true;
    for delay_ms in [700u64, 1500, 2500, 3500, 5000] {
        let mut cmd = vivarium(&home);
        cmd.arg("evolve").arg(&run);
        if !first {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
        }
        child.wait().unwrap();
        if home.join("archive").exists() {
            first = false;
        }
        if finished {
            break;
        }
    }
    let out = vivarium(&home).args(["evolve", "--resume"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(fingerprint(&home), expected, "same variants, none lost, none duplicated");
    let archive = Archive::open(&home.join("archive")).unwrap();
    let integrity = archive.integrity_check().unwrap();
    assert!(integrity.is_ok(), "{integrity:?}");
    let verify = vivarium::audit::verify_dir(&home.join("audit")).unwrap();
    // A kill can tear the audit log's last line; the next append repairs it
    // and records a `recovery` event, after which the chain verifies.
    assert!(verify.ok, "{verify:?}");
}
