//! Live updates: one watcher per server turns changes on disk into events,
//! and `GET /api/events` streams them to each page (server-sent events).
//!
//! The watcher wakes twice a second and looks, cheaply, at what can change:
//!
//! - the audit log's length: new bytes since the last offset are read and
//!   each new record becomes an `audit` event (its seq, time, variant and
//!   kind; the page fetches details when shown);
//! - the approvals directory's file names, sizes and mtimes: on a change,
//!   one `approvals` event with the number pending;
//! - the archive index's (and its WAL's) size and mtime, each run's writer
//!   and stop file: on a change, the runs are read again, and each run whose
//!   summary changed becomes a `run` event (the whole summary), each new or
//!   changed variant a `variant` event.
//!
//! Nothing is read when nothing changed. Events go through one bounded
//! broadcast channel; a page that falls behind gets `resync` and reloads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::api::{self, AppState};
use crate::archive::INDEX_FILE;
use crate::audit::{Record, LOG_FILE};

/// How often the watcher looks.
pub const TICK: Duration = Duration::from_millis(500);
/// The most audit bytes read in one tick (the rest waits for the next).
const MAX_AUDIT_READ: u64 = 4 << 20;

/// One event: its SSE `event:` name and its JSON `data:`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `run`, `variant`, `approvals`, `audit`, `hello` or `resync`.
    pub kind: &'static str,
    /// The event's data.
    pub data: Value,
}

/// Start the watcher of `state`'s home; it ends with the runtime.
pub(crate) fn spawn_watcher(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut watcher = Watcher::default();
        // The first look takes a snapshot; only later changes are events.
        let mut first = true;
        loop {
            let s = state.clone();
            let (w, events) = match tokio::task::spawn_blocking(move || {
                let ev = watcher.scan(&s);
                (watcher, ev)
            })
            .await
            {
                Ok(r) => r,
                Err(_) => return,
            };
            watcher = w;
            if !first {
                for e in events {
                    let _ = state.events.send(e);
                }
            }
            first = false;
            tokio::time::sleep(TICK).await;
        }
    });
}

/// File size and mtime: what changes when a file is written.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[derive(Default)]
struct Watcher {
    audit_offset: Option<u64>,
    approvals: Vec<(String, Stamp)>,
    runs_stamp: Vec<(String, Stamp)>,
    runs: HashMap<String, Value>,
    variants: HashMap<String, Value>,
}

impl Watcher {
    fn scan(&mut self, s: &AppState) -> Vec<Event> {
        let mut out = Vec::new();
        self.scan_audit(s, &mut out);
        self.scan_approvals(s, &mut out);
        if let Err(e) = self.scan_runs(s, &mut out) {
            tracing::warn!("serve: reading the runs: {e}");
        }
        out
    }

    fn scan_audit(&mut self, s: &AppState, out: &mut Vec<Event>) {
        let path = s.home.audit_dir().join(LOG_FILE);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let Some(offset) = self.audit_offset else {
            self.audit_offset = Some(len);
            return;
        };
        if len < offset {
            // Truncated or replaced: start again from its end.
            self.audit_offset = Some(len);
            out.push(Event { kind: "resync", data: json!({ "why": "the audit log shrank" }) });
            return;
        }
        if len == offset {
            return;
        }
        let mut buf = Vec::new();
        let read = std::fs::File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.take((len - offset).min(MAX_AUDIT_READ)).read_to_end(&mut buf)
        });
        if read.is_err() {
            return;
        }
        // Only whole lines; a line being appended is read next time.
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return };
        for line in buf[..end].split(|&b| b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                out.push(Event {
                    kind: "audit",
                    data: json!({ "seq": r.seq, "time": r.time, "variant": r.variant, "event": r.event }),
                });
            }
        }
        self.audit_offset = Some(offset + end as u64 + 1);
    }

    fn scan_approvals(&mut self, s: &AppState, out: &mut Vec<Event>) {
        let dir = s.home.approvals_dir();
        let mut now: Vec<(String, Stamp)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        name.ends_with(".json").then(|| (name, stamp(&e.path())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        now.sort();
        if now != self.approvals {
            self.approvals = now;
            let pending = crate::guard::EscalationStore::open(&dir).and_then(|st| st.pending()).map_or(0, |p| p.len());
            out.push(Event { kind: "approvals", data: json!({ "pending": pending }) });
        }
    }

    fn scan_runs(&mut self, s: &AppState, out: &mut Vec<Event>) -> crate::Result<()> {
        let archive_dir = s.home.archive_dir();
        let mut now = vec![
            ("index".to_string(), stamp(&archive_dir.join(INDEX_FILE))),
            ("wal".to_string(), stamp(&archive_dir.join(format!("{INDEX_FILE}-wal")))),
        ];
        if let Ok(entries) = std::fs::read_dir(s.home.root().join("runs")) {
            for e in entries.flatten() {
                let dir = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let writer = api::writer_alive(&dir).map(|p| (u64::from(p), SystemTime::UNIX_EPOCH));
                now.push((format!("{name}/writer"), writer));
                now.push((format!("{name}/stop"), stamp(&dir.join(crate::evolve::STOP_FILE))));
                now.push((format!("{name}/spent"), stamp(&dir.join("spent.json"))));
            }
        }
        now.sort();
        if now == self.runs_stamp {
            return Ok(());
        }
        self.runs_stamp = now;
        let Some(archive) = s.archive()? else { return Ok(()) };
        for run in archive.list_runs()? {
            let rows = archive.list(Some(&run.id))?;
            let summary = api::run_json(s, &run, &rows, &archive.step_outcomes(&run.id)?);
            if self.runs.get(&run.id) == Some(&summary) {
                continue;
            }
            for v in &rows {
                let data = json!({
                    "run": v.run_id, "id": v.id, "parent": v.parent, "generation": v.generation,
                    "status": v.status.as_str(), "visible": v.visible_score, "held_out": v.held_out_score,
                });
                if self.variants.get(&v.id.0) != Some(&data) {
                    self.variants.insert(v.id.0.clone(), data.clone());
                    out.push(Event { kind: "variant", data });
                }
            }
            self.runs.insert(run.id.clone(), summary.clone());
            out.push(Event { kind: "run", data: summary });
        }
        Ok(())
    }
}

fn sse(e: &Event) -> axum::response::sse::Event {
    axum::response::sse::Event::default().event(e.kind).data(e.data.to_string())
}

/// `GET /api/events`: the event stream (`text/event-stream`), starting
/// with `hello`; 503 past [`super::Limits::max_streams`] open streams.
pub async fn stream(State(s): State<Arc<AppState>>) -> Response {
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return super::auth::refuse(StatusCode::SERVICE_UNAVAILABLE, "too many event streams are open");
    };
    let rx = s.events.subscribe();
    let hello = Event { kind: "hello", data: json!({ "actor": s.token.actor() }) };
    let events = futures::stream::unfold((rx, Some(hello), permit), |(mut rx, first, permit)| async move {
        if let Some(h) = first {
            return Some((Ok::<_, Infallible>(sse(&h)), (rx, None, permit)));
        }
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => Event { kind: "resync", data: json!({ "missed": n }) },
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(sse(&e)), (rx, None, permit)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
