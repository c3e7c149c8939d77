//! Escalation requests: `escalation.toml`, capability monotonicity, and the
//! store of requests waiting for a person (`$VIVARIUM_HOME/approvals/`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::now_rfc3339;
use crate::caps::grant::{is_within, Grant};
use crate::caps::manifest::{parse_toml, Capabilities, LimitsSpec, Manifest};
use crate::error::{Error, Result};

/// The name of the escalation request at the root of a proposal's tree.
pub const ESCALATION_FILE: &str = "escalation.toml";

/// The largest `escalation.toml` accepted, in bytes.
pub const MAX_ESCALATION_BYTES: usize = 64 << 10;

/// The longest `reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// Length of a request id, in hex digits.
const ID_LEN: usize = 16;

/// A parsed `escalation.toml`: the child's requested `[capabilities]` (and
/// optionally `[limits]`), with the variant's reason. See the
/// [module docs](super) for the file's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Why the variant asks, in its own words (shown to the approver).
    pub reason: String,
    /// The child's whole `[capabilities]` table.
    pub capabilities: Capabilities,
    /// The child's whole `[limits]` table, when it asks for other limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

impl Escalation {
    /// Parse and validate the text of an `escalation.toml`; `origin` names
    /// the file in messages (`origin:line:col: key: message`).
    pub fn parse(text: &str, origin: &str) -> Result<Escalation> {
        let e: Escalation = parse_toml(text, origin)?;
        validate_reason(&e.reason).map_err(|why| Error::invalid(format!("{origin}: reason: {why}")))?;
        Ok(e)
    }

    /// The child's manifest: `base` (the child tree's own `variant.toml`)
    /// with `[capabilities]` replaced by the request's, and `[limits]` too
    /// when the request has them.
    pub fn child_manifest(&self, base: &Manifest) -> Manifest {
        let mut m = base.clone();
        m.capabilities = self.capabilities.clone();
        if let Some(limits) = &self.limits {
            m.limits = limits.clone();
        }
        m
    }
}

fn validate_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        Err("is empty; say why the child needs more".into())
    } else if reason.len() > MAX_REASON_BYTES {
        Err(format!("is {} bytes; at most {MAX_REASON_BYTES}", reason.len()))
    } else if reason.chars().any(|c| c != '\n' && c != '\t' && crate::text::is_hidden(c)) {
        Err("contains a control character, or one that is invisible or reorders text".into())
    } else {
        Ok(())
    }
}

/// Capability monotonicity: `Ok(())` when the child's requested grant is
/// within its parent's ([`is_within`]), else every way it exceeds it, one
/// line each (`llm: not granted to the parent`).
pub fn check_escalation(parent_grant: &Grant, requested_child_grant: &Grant) -> Result<(), Vec<String>> {
    is_within(requested_child_grant, parent_grant)
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Waiting for a person.
    Pending,
    /// Granted by `vivarium approve`.
    Approved,
    /// Refused by a person.
    Denied,
}

impl Status {
    /// `pending`, `approved` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller knows when a child asks for more than its parent has.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The parent variant's id (its sha256 / archive id).
    pub parent_variant: String,
    /// Where the child's tree is (or will be) written.
    pub child_tree: PathBuf,
    /// The proposal's [`proposal_digest`](super::proposal_digest), when there is one.
    pub proposal_digest: Option<String>,
    /// The request itself.
    pub escalation: Escalation,
    /// The parent's grant.
    pub parent_grant: Grant,
    /// The grant the child would get: its requested manifest resolved against the policy.
    pub requested_grant: Grant,
    /// What the policy in force refused of the request (`Denial` lines):
    /// shown to the approver, and never granted by an approval.
    pub denied: Vec<String>,
}

/// A stored escalation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// 16 hex digits of the sha256 of the request's content.
    pub id: String,
    /// Pending, approved or denied.
    pub status: Status,
    /// The parent variant's id.
    pub parent_variant: String,
    /// The child's tree.
    pub child_tree: String,
    /// The proposal's digest, when known.
    pub proposal_digest: Option<String>,
    /// The variant's reason.
    pub reason: String,
    /// The requested `[capabilities]`, as the variant wrote them.
    pub capabilities: Capabilities,
    /// The requested `[limits]`, when the variant asked for other limits.
    pub limits: Option<LimitsSpec>,
    /// The parent's grant.
    pub parent_grant: Grant,
    /// The grant the child would get if approved.
    pub requested_grant: Grant,
    /// Every way the requested grant exceeds the parent's ([`is_within`]'s lines).
    pub exceeding: Vec<String>,
    /// What the policy in force when the request was made refused of it;
    /// an approval grants [`Request::requested_grant`], never these.
    #[serde(default)]
    pub denied: Vec<String>,
    /// When the request was made (RFC 3339, UTC).
    pub created_at: String,
    /// When it was approved or denied.
    pub decided_at: Option<String>,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
}

/// The directory of escalation requests (`$VIVARIUM_HOME/approvals`).
///
/// # Layout
///
/// One file per request, `<id>.json` (pretty JSON of a [`Request`]), where
/// `<id>` is the first 16 hex digits of the sha256 of the request's content
/// (parent, child tree, proposal digest, reason, requested tables and both
/// grants' digests — not the timestamps), so asking twice for the same
/// thing gives the same id.
///
/// # Atomicity
///
/// Every state change (create, approve, deny) holds an exclusive lock on
/// `.lock` in the directory (across threads and processes), writes
/// `.<id>.json.tmp`, fsyncs it, renames it over `<id>.json` and fsyncs the
/// directory: a reader never sees a half-written request, and a crash leaves
/// the old state or the new one. Only `pending` requests change state, and
/// only once; ids given by a person are checked to be 16 lowercase hex
/// digits before any path is built from them.
#[derive(Debug, Clone)]
pub struct EscalationStore {
    dir: PathBuf,
}

impl EscalationStore {
    /// Open (creating it if needed) the store at `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {} (check $VIVARIUM_HOME)", dir.display()), e))?;
        Ok(Self { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record a pending request and return it (for the audit log). The
    /// exceeding lines are computed here with [`check_escalation`]; a
    /// request within the parent's grant needs no approval and is refused
    /// ([`Error::Invalid`]). The same request made again returns the stored
    /// one, whatever its status, without writing.
    pub fn create(&self, req: &NewRequest) -> Result<Request> {
        validate_reason(&req.escalation.reason).map_err(|why| Error::invalid(format!("escalation reason {why}")))?;
        let exceeding = match check_escalation(&req.parent_grant, &req.requested_grant) {
            Ok(()) => {
                return Err(Error::invalid(
                    "the requested grant is within the parent's; it needs no approval".to_string(),
                ))
            }
            Err(lines) => lines,
        };
        let child_tree = req.child_tree.to_string_lossy().into_owned();
        let id = request_id(req, &child_tree);
        let _lock = self.lock()?;
        if let Some(existing) = self.read(&id)? {
            return Ok(existing);
        }
        let request = Request {
            id,
            status: Status::Pending,
            parent_variant: req.parent_variant.clone(),
            child_tree,
            proposal_digest: req.proposal_digest.clone(),
            reason: req.escalation.reason.clone(),
            capabilities: req.escalation.capabilities.clone(),
            limits: req.escalation.limits.clone(),
            parent_grant: req.parent_grant.clone(),
            requested_grant: req.requested_grant.clone(),
            exceeding,
            denied: req.denied.clone(),
            created_at: now_rfc3339(),
            decided_at: None,
            decided_by: None,
        };
        self.write(&request)?;
        Ok(request)
    }

    /// Every stored request, oldest first (by creation time, then id).
    pub fn list(&self) -> Result<Vec<Request>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if valid_id(id) {
                if let Some(r) = self.read(id)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The pending requests, oldest first.
    pub fn pending(&self) -> Result<Vec<Request>> {
        Ok(self.list()?.into_iter().filter(|r| r.status == Status::Pending).collect())
    }

    /// The request `id` ([`Error::Invalid`] when the id is malformed or unknown).
    pub fn get(&self, id: &str) -> Result<Request> {
        check_id(id)?;
        self.read(id)?.ok_or_else(|| unknown(id, &self.dir))
    }

    /// Approve the pending request `id` on behalf of `who`; returns the
    /// approved request (for the audit log).
    pub fn approve(&self, id: &str, who: &str) -> Result<Request> {
        self.decide(id, who, Status::Approved)
    }

    /// Deny the pending request `id` on behalf of `who`; returns the denied request.
    pub fn deny(&self, id: &str, who: &str) -> Result<Request> {
        self.decide(id, who, Status::Denied)
    }

    /// The pending request `id`'s child now lives at `child_tree` (the
    /// evolution loop moves a child out of its staging directory once it is
    /// archived); an approval then writes the manifest there. A decided
    /// request is left as it is.
    pub fn relocate(&self, id: &str, child_tree: &Path) -> Result<()> {
        check_id(id)?;
        let _lock = self.lock()?;
        let mut r = self.read(id)?.ok_or_else(|| unknown(id, &self.dir))?;
        if r.status == Status::Pending {
            r.child_tree = child_tree.to_string_lossy().into_owned();
            self.write(&r)?;
        }
        Ok(())
    }

    fn decide(&self, id: &str, who: &str, status: Status) -> Result<Request> {
        check_id(id)?;
        if who.trim().is_empty() || who.len() > 128 || who.chars().any(char::is_control) {
            return Err(Error::invalid("the approver's name must be 1-128 printable characters"));
        }
        let _lock = self.lock()?;
        let mut r = self.read(id)?.ok_or_else(|| unknown(id, &self.dir))?;
        if r.status != Status::Pending {
            return Err(Error::invalid(format!(
                "request {id} is already {} (by {} at {})",
                r.status,
                r.decided_by.as_deref().unwrap_or("?"),
                r.decided_at.as_deref().unwrap_or("?")
            )));
        }
        r.status = status;
        r.decided_at = Some(now_rfc3339());
        r.decided_by = Some(who.to_string());
        self.write(&r)?;
        Ok(r)
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read(&self, id: &str) -> Result<Option<Request>> {
        let path = self.path_of(id);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let r: Request = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: not an escalation request: {e}", path.display())))?;
        if r.id != id {
            return Err(Error::invalid(format!("{}: holds request {}, not {id}", path.display(), r.id)));
        }
        Ok(Some(r))
    }

    /// Write `r` atomically: temp file, fsync, rename, fsync the directory.
    fn write(&self, r: &Request) -> Result<()> {
        let path = self.path_of(&r.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", r.id));
        let mut text = serde_json::to_string_pretty(r).expect("request serializes");
        text.push('\n');
        let io_err = |what: &Path| {
            let what = what.display().to_string();
            move |e| Error::io(format!("writing {what}"), e)
        };
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        Ok(())
    }

    /// An exclusive lock on the store, held until the guard drops.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        f.lock().map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
        Ok(f)
    }
}

fn request_id(req: &NewRequest, child_tree: &str) -> String {
    #[derive(Serialize)]
    struct Content<'a> {
        v: u32,
        parent_variant: &'a str,
        child_tree: &'a str,
        proposal_digest: Option<&'a str>,
        reason: &'a str,
        capabilities: &'a Capabilities,
        limits: Option<&'a LimitsSpec>,
        parent_grant: String,
        requested_grant: String,
    }
    let content = Content {
        v: 1,
        parent_variant: &req.parent_variant,
        child_tree,
        proposal_digest: req.proposal_digest.as_deref(),
        reason: &req.escalation.reason,
        capabilities: &req.escalation.capabilities,
        limits: req.escalation.limits.as_ref(),
        parent_grant: req.parent_grant.digest(),
        requested_grant: req.requested_grant.digest(),
    };
    let bytes = serde_json::to_vec(&content).expect("request content serializes");
    hex::encode(Sha256::digest(&bytes))[..ID_LEN].to_string()
}

fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_id(id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{}` is not a request id; ids are {ID_LEN} lowercase hex digits (see `vivarium approve --list`)",
            super::shown_path(id)
        )))
    }
}

fn unknown(id: &str, dir: &Path) -> Error {
    Error::invalid(format!("no escalation request `{id}` in {} (see `vivarium approve --list`)", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::service::section;
    use serde_json::json;

    const REQUEST: &str = r#"
reason = "answers need a model"

[capabilities]
llm = { models = ["small"], tokens = 5000 }
memory = { bytes = "1MiB" }
"#;

    fn grants() -> (Grant, Grant) {
        let parent = Grant { memory: Some(section(json!({ "bytes": "1MiB" }))), ..Grant::default() };
        let mut child = parent.clone();
        child.llm = Some(section(json!({
            "models": ["small"],
            "tokens": 5000,
            "max_request_bytes": "64KiB",
            "requests_per_minute": 60,
        })));
        (parent, child)
    }

    fn new_request(child_tree: &str) -> NewRequest {
        let (parent_grant, requested_grant) = grants();
        NewRequest {
            parent_variant: "abc123".into(),
            child_tree: PathBuf::from(child_tree),
            proposal_digest: Some("d".repeat(64)),
            escalation: Escalation::parse(REQUEST, "escalation.toml").unwrap(),
            parent_grant,
            requested_grant,
            denied: Vec::new(),
        }
    }

    #[test]
    fn parses_the_documented_shape() {
        let e = Escalation::parse(REQUEST, "escalation.toml").unwrap();
        assert_eq!(e.reason, "answers need a model");
        assert_eq!(e.capabilities.llm.as_ref().unwrap().models, vec!["small".to_string()]);
        assert_eq!(e.limits, None);
        let with_limits = format!("{REQUEST}\n[limits]\nfuel = 10\n");
        assert_eq!(Escalation::parse(&with_limits, "e").unwrap().limits.unwrap().fuel, Some(10));
        let base = Manifest::parse("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\nfuel = 3\n", "v").unwrap();
        let child = e.child_manifest(&base);
        assert_eq!(child.capabilities, e.capabilities);
        assert_eq!(child.limits.fuel, Some(3));
        assert_eq!(child.variant, base.variant);
    }

    #[test]
    fn refuses_malformed_requests() {
        let err = |t: &str| Escalation::parse(t, "escalation.toml").unwrap_err().to_string();
        assert!(err("[capabilities]\n").contains("missing field `reason`"), "{}", err("[capabilities]\n"));
        assert!(err("reason = \"x\"\n").contains("missing field `capabilities`"));
        assert!(err("reason = \"x\"\nplease = 1\n[capabilities]\n").contains("unknown field `please`"));
        assert!(err("reason = \"x\"\n[capabilities]\ngpu = 1\n").contains("capabilities.gpu"));
        assert!(err("reason = \"  \"\n[capabilities]\n").contains("reason: is empty"));
        assert!(err("reason = \"a\\u001bb\"\n[capabilities]\n").contains("control character"));
        let long = format!("reason = \"{}\"\n[capabilities]\n", "x".repeat(MAX_REASON_BYTES + 1));
        assert!(err(&long).contains("at most 4096"));
        assert!(Escalation::parse("reason = \"two\\nlines\"\n[capabilities]\n", "e").is_ok());
    }

    #[test]
    fn check_escalation_uses_is_within() {
        let (parent, child) = grants();
        assert_eq!(check_escalation(&parent, &parent), Ok(()));
        assert_eq!(check_escalation(&child, &parent), Ok(()));
        assert_eq!(check_escalation(&parent, &child), Err(vec!["llm: not granted to the parent".to_string()]));
    }

    #[test]
    fn a_moved_child_is_found_where_it_went() {
        let tmp = tempfile::tempdir().unwrap();
        let store = EscalationStore::open(tmp.path().join("approvals")).unwrap();
        let created = store.create(&new_request("/runs/r/staging/step-3")).unwrap();
        store.relocate(&created.id, Path::new("/runs/r/variants/abc")).unwrap();
        let moved = store.get(&created.id).unwrap();
        assert_eq!(moved.child_tree, "/runs/r/variants/abc");
        assert_eq!((moved.id, moved.status), (created.id.clone(), Status::Pending), "the same request");
        store.deny(&created.id, "alice").unwrap();
        store.relocate(&created.id, Path::new("/elsewhere")).unwrap();
        assert_eq!(store.get(&created.id).unwrap().child_tree, "/runs/r/variants/abc", "decided: left as it is");
    }

    #[test]
    fn lifecycle_pending_approved() {
        let dir = tempfile::tempdir().unwrap();
        let store = EscalationStore::open(dir.path().join("approvals")).unwrap();
        assert_eq!(store.list().unwrap(), vec![]);
        let req = new_request("/runs/child-1");
        let created = store.create(&req).unwrap();
        assert_eq!(created.status, Status::Pending);
        assert_eq!(created.id.len(), 16);
        assert_eq!(created.exceeding, vec!["llm: not granted to the parent".to_string()]);
        assert_eq!(created.child_tree, "/runs/child-1");
        assert_eq!(created.reason, "answers need a model");
        assert!(created.created_at.ends_with('Z'));
        assert_eq!((created.decided_at.as_ref(), created.decided_by.as_ref()), (None, None));
        assert!(store.dir().join(format!("{}.json", created.id)).is_file());

        // Same content, same id; nothing rewritten.
        assert_eq!(store.create(&req).unwrap(), created);
        // Different content, different id.
        let other = store.create(&new_request("/runs/child-2")).unwrap();
        assert_ne!(other.id, created.id);
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.pending().unwrap().len(), 2);
        assert_eq!(store.get(&created.id).unwrap(), created);

        let approved = store.approve(&created.id, "alice").unwrap();
        assert_eq!(approved.status, Status::Approved);
        assert_eq!(approved.decided_by.as_deref(), Some("alice"));
        assert!(approved.decided_at.is_some());
        assert_eq!(store.get(&created.id).unwrap(), approved);
        // A fresh handle sees the same state.
        let again = EscalationStore::open(store.dir()).unwrap();
        assert_eq!(again.get(&created.id).unwrap(), approved);
        assert_eq!(again.pending().unwrap().iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![other.id.clone()]);

        // Decided requests stay decided.
        let e = store.deny(&created.id, "bob").unwrap_err().to_string();
        assert!(e.contains("already approved (by alice"), "{e}");
        assert!(store.approve(&created.id, "alice").is_err());
        // Creating it again returns it as it stands.
        assert_eq!(store.create(&req).unwrap().status, Status::Approved);

        let denied = store.deny(&other.id, "bob").unwrap();
        assert_eq!(denied.status, Status::Denied);
        assert!(store.pending().unwrap().is_empty());
        // No temp files left behind.
        let names: Vec<String> =
            fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn refuses_bad_ids_approvers_and_needless_requests() {
        let dir = tempfile::tempdir().unwrap();
        let store = EscalationStore::open(dir.path()).unwrap();
        for id in ["../../etc/passwd", "", "ABCDEF0123456789", "0123456789abcdeg", "0123456789abcde"] {
            assert!(matches!(store.get(id), Err(Error::Invalid(_))), "{id}");
            assert!(matches!(store.approve(id, "alice"), Err(Error::Invalid(_))), "{id}");
        }
        let e = store.get("0123456789abcdef").unwrap_err().to_string();
        assert!(e.starts_with("no escalation request `0123456789abcdef`"), "{e}");
        let created = store.create(&new_request("c")).unwrap();
        for who in ["", "  ", "a\nb"] {
            assert!(matches!(store.approve(&created.id, who), Err(Error::Invalid(_))), "{who:?}");
        }
        assert_eq!(store.get(&created.id).unwrap().status, Status::Pending);
        let mut within = new_request("c");
        within.requested_grant = within.parent_grant.clone();
        assert!(store.create(&within).unwrap_err().to_string().contains("needs no approval"));
        // A corrupt file is reported, naming it.
        fs::write(store.dir().join("00000000000000ff.json"), "{").unwrap();
        assert!(store.list().unwrap_err().to_string().contains("00000000000000ff.json"));
    }
}
