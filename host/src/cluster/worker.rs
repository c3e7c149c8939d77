//! `vivarium __cluster-worker`: the worker side of a cluster evaluation.
//!
//! Reads one [`EvalRequest`] a line on stdin and answers one [`EvalReply`]
//! a line on stdout, until stdin closes. Each batch is graded exactly as a
//! local evaluation grades it — [`tasks::run_tasks`] over the same runtime,
//! limits and typed failures — under a session whose home is the worker's
//! own (set by the driver to a fresh directory): its audit log only
//! collects the records of this worker's calls, which go back to the
//! coordinator with the reply. Linked components are kept between requests
//! (by component and grant), so a worker stays warm.

use std::collections::HashMap;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use sha2::{Digest, Sha256};

use super::protocol::{EvalReply, EvalRequest, Graded, RemoteEvent};
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
    session: &Session,
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
            Ok(req) => grade(session, &mut warm, &req).await.map_err(|e| e.to_string()),
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
    let before = session.audit.head()?.map(|h| h.seq + 1).unwrap_or(0);
    let (results, spent) =
        tasks::run_tasks(session, p, &suite, &selected, req.held_out, &req.call.to_options()).await?;
    let events = session
        .audit
        .query(&crate::audit::Filter::new().since(before))?
        .into_iter()
        .map(|r| RemoteEvent { variant: r.variant, event: r.event, details: r.details })
        .collect();
    Ok(Graded { results, spent, events })
}
