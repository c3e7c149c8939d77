//! `vivarium __cluster-worker`: the worker side of a cluster evaluation.
//!
//! Reads one [`EvalRequest`] a line on stdin and answers one [`EvalReply`]
//! a line on stdout, until stdin closes. Each batch is graded exactly as a
//! local evaluation grades it — [`tasks::run_tasks`] over the same runtime,
//! limits and typed failures — under a session whose home is the worker's
//! own (set by the driver to a fresh directory). Each batch gets a fresh
//! audit log of its own, written without fsync (it is scratch: the
//! durable copy is the coordinator's), whose records go back to the
//! coordinator with the reply. Linked components are kept between requests
//! (by component and grant), so a worker stays warm.

use std::collections::HashMap;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use sha2::{Digest, Sha256};

use super::protocol::{EvalReply, EvalRequest, Graded, RemoteEvent};
use crate::audit::{AuditLog, Durability};
use crate::error::{Error, Result};
use crate::runtime::Prepared;
use crate::tasks;
use crate::variant::Session;

/// Linked components kept warm, at most.
const WARM: usize = 16;

/// Serve requests from `input` to `output` until `input` ends.
///
/// Errors: only when stdout cannot be written (the driver is gone); a
/// request that cannot be graded is answered with its reason.
pub async fn serve(
    session: &mut Session,
    input: impl AsyncBufRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> Result<()> {
    let mut warm: HashMap<(String, String), Prepared> = HashMap::new();
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await.map_err(|e| Error::io("reading a cluster request", e))? {
        if line.trim().is_empty() {
            continue;
        }
        let outcome = match serde_json::from_str::<EvalRequest>(&line) {
            Ok(req) => {
                let log = batch_log(session)?;
                let graded = grade(session, &mut warm, &req).await.map_err(|e| e.to_string());
                drop(log);
                graded
            }
            Err(e) => Err(format!("a malformed cluster request: {e}")),
        };
        let reply = EvalReply { outcome, node: Default::default() };
        let text = serde_json::to_string(&reply).map_err(|e| Error::Internal(e.into()))?;
        let written = async {
            output.write_all(text.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        };
        written.await.map_err(|e| Error::io("answering a request", e))?;
    }
    Ok(())
}

/// Point `session`'s audit log at a fresh directory for one batch; the
/// directory goes when the guard is dropped.
fn batch_log(session: &mut Session) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("batch-")
        .tempdir_in(session.home.root())
        .map_err(|e| Error::io("creating a batch's audit directory", e))?;
    session.audit = AuditLog::open_with(dir.path(), Durability::Flush)?;
    Ok(dir)
}

/// Grade one request.
async fn grade(session: &Session, warm: &mut HashMap<(String, String), Prepared>, req: &EvalRequest) -> Result<Graded> {
    let suite = tasks::suite(&req.suite)
        .ok_or_else(|| Error::invalid(format!("this worker's vivarium has no suite `{}`", req.suite)))?;
    let split = if req.held_out { &suite.held_out } else { &suite.visible };
    let selected =
        req.tasks
            .iter()
            .map(|id| {
                split.iter().find(|t| &t.task.id == id).cloned().ok_or_else(|| {
                    Error::invalid(format!("suite `{}` has no such task `{id}` in this split", req.suite))
                })
            })
            .collect::<Result<Vec<_>>>()?;
    let key = (req.component_sha256.clone(), req.grant.digest());
    if !warm.contains_key(&key) {
        let bytes =
            hex::decode(&req.component_hex).map_err(|e| Error::invalid(format!("the component is not hex: {e}")))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != req.component_sha256 {
            return Err(Error::invalid(format!(
                "the component's bytes hash to {sha}, not {}: refused",
                req.component_sha256
            )));
        }
        let loaded = session.runtime.load(&bytes).await?;
        let p = session.runtime.prepare(&loaded, req.grant.clone())?;
        if warm.len() >= WARM {
            warm.clear();
        }
        warm.insert(key.clone(), p);
    }
    let p = &warm[&key];
    let (results, spent) =
        tasks::run_tasks(session, p, &suite, &selected, req.held_out, &req.call.to_options()).await?;
    let events = session
        .audit
        .records()?
        .into_iter()
        .map(|r| RemoteEvent { variant: r.variant, event: r.event, details: r.details })
        .collect();
    Ok(Graded { results, spent, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{Grant, Limits};
    use crate::cluster::protocol::RemoteCall;

    /// A component whose `solve` answers "3" (right for `1+2` only), or
    /// counts to 2³² first when `spin` (far past any test's fuel).
    fn answers_three(spin: bool) -> Vec<u8> {
        let wat = include_str!("spinner.wat").replace("ANSWER", "3").replace("SPIN", if spin { "-1" } else { "1" });
        crate::componentize::from_core_module(wat.as_bytes(), true).unwrap()
    }

    fn request(component: &[u8], tasks: &[&str]) -> EvalRequest {
        let limits = Limits { fuel: 5_000_000, ..Limits::default() };
        EvalRequest {
            component_hex: hex::encode(component),
            component_sha256: hex::encode(Sha256::digest(component)),
            grant: Grant::minimal(limits),
            suite: "arith".into(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            held_out: false,
            call: RemoteCall::default(),
        }
    }

    async fn serve_lines(lines: &[String]) -> Vec<EvalReply> {
        let tmp = tempfile::tempdir().unwrap();
        let mut session = Session::open(crate::home::Home::at(tmp.path())).unwrap();
        let input = lines.join("\n") + "\n";
        let mut out = Vec::new();
        serve(&mut session, input.as_bytes(), &mut out).await.unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_batch_is_graded_as_locally_with_one_use_record_per_call() {
        let good = answers_three(false);
        let looping = answers_three(true);
        let mut wrong_sha = request(&good, &["arith-v-0"]);
        wrong_sha.component_sha256 = "0".repeat(64);
        let lines = [
            serde_json::to_string(&request(&good, &["arith-v-0", "arith-v-1"])).unwrap(),
            serde_json::to_string(&request(&looping, &["arith-v-0"])).unwrap(),
            serde_json::to_string(&wrong_sha).unwrap(),
            serde_json::to_string(&request(&good, &["arith-h-0"])).unwrap(),
            "{not json".to_string(),
        ];
        let replies = serve_lines(&lines).await;
        assert_eq!(replies.len(), 5, "one answer per request, the worker still serving after each");

        let g = replies[0].outcome.as_ref().unwrap();
        let scores: Vec<(&str, f64)> = g.results.iter().map(|r| (r.id.as_str(), r.score)).collect();
        assert_eq!(scores, [("arith-v-0", 1.0), ("arith-v-1", 0.0)]);
        assert_eq!(g.events.len(), 2, "one use record per call: {:?}", g.events);
        assert!(g.events.iter().all(|e| e.event == crate::audit::EventKind::Use));
        assert_eq!(g.spent.fuel, g.events.iter().map(|e| e.details["usage"]["fuel"].as_u64().unwrap()).sum::<u64>());

        // A guest that never returns is a typed limit hit and a zero score,
        // as on the coordinator; its batch's log has the limit-hit record.
        let g = replies[1].outcome.as_ref().unwrap();
        assert_eq!(g.results[0].score, 0.0);
        assert!(g.results[0].note.starts_with("out-of-fuel"), "{}", g.results[0].note);
        assert!(g.events.iter().any(|e| e.event == crate::audit::EventKind::LimitHit), "{:?}", g.events);

        let e = replies[2].outcome.as_ref().unwrap_err();
        assert!(e.contains("hash to") && e.contains("refused"), "{e}");
        // A visible task's id asked for as held-out (or the other way) is
        // not there: a worker grades only the split it is told.
        let e = replies[3].outcome.as_ref().unwrap_err();
        assert!(e.contains("no such task `arith-h-0`"), "{e}");
        let e = replies[4].outcome.as_ref().unwrap_err();
        assert!(e.starts_with("a malformed cluster request"), "{e}");
    }

    #[tokio::test]
    async fn a_variant_granted_a_coordinator_service_stays_on_the_coordinator() {
        let tmp = tempfile::tempdir().unwrap();
        let session = Session::open(crate::home::Home::at(tmp.path())).unwrap();
        let loaded = session.runtime.load(&answers_three(false)).await.unwrap();
        let plain = session.runtime.prepare(&loaded, Grant::minimal(Limits::default())).unwrap();
        assert_eq!(crate::cluster::stays_local(&plain), None, "graded on a worker");
        let memory = crate::caps::service::section(serde_json::json!({ "bytes": "1MiB" }));
        let granted = Grant { memory: Some(memory), ..Grant::minimal(Limits::default()) };
        let p = session.runtime.prepare(&loaded, granted).unwrap();
        assert!(crate::cluster::stays_local(&p).is_some_and(|why| why.contains("memory")));
    }

    #[test]
    fn batches_sent_together_split_what_is_left_of_the_budgets() {
        let call = RemoteCall { llm_tokens: Some(1000), sim_steps: Some(9), ..RemoteCall::default() };
        let shared = call.clone().share(4);
        assert_eq!((shared.llm_tokens, shared.sim_steps), (Some(250), Some(2)));
        assert_eq!(call.clone().share(0), call, "a share of one");
        assert_eq!(RemoteCall::default().share(3), RemoteCall::default(), "no budget, no limit");
    }
}
