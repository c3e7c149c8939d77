//! The grant: the effective powers and limits of one variant.
//!
//! A [`Grant`] is computed once per variant from its manifest and the
//! operator's policy ([`crate::caps::resolve()`]); it is what the linker and the
//! services consult, what the audit log records, and what capability
//! monotonicity ([`is_within`]) compares between a parent and its child.
//!
//! Lists of names (`models`, `backends`, `envs`) may hold the single wildcard
//! `"*"`, meaning "any name the host offers"; no other patterns exist.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::caps::service::{show_list, Section, ServiceCaps};
use crate::services::Service;
use crate::units::{ByteSize, HumanDuration};

/// Per-call resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory across all of the call's memories.
    pub memory: ByteSize,
    /// Wall-clock time per call, host calls included.
    pub wall: HumanDuration,
    /// Wasm stack per call.
    pub stack: ByteSize,
    /// Table elements across all tables.
    pub table_elements: u64,
    /// Core and component instances one call may create.
    pub instances: u32,
    /// The most bytes the guest may hand back as its result.
    pub output: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 5_000_000_000,
            memory: ByteSize(256 << 20),
            wall: HumanDuration(Duration::from_secs(30)),
            stack: ByteSize(1 << 20),
            table_elements: 100_000,
            instances: 64,
            output: ByteSize(1 << 20),
        }
    }
}

impl Limits {
    /// The tighter of `self` and `other`, field by field: limits can only be
    /// tightened, never widened.
    pub fn tightened(&self, other: &Limits) -> Limits {
        Limits {
            fuel: self.fuel.min(other.fuel),
            memory: self.memory.min(other.memory),
            wall: self.wall.min(other.wall),
            stack: self.stack.min(other.stack),
            table_elements: self.table_elements.min(other.table_elements),
            instances: self.instances.min(other.instances),
            output: self.output.min(other.output),
        }
    }
}

/// The `log` service's caps (every variant gets `log`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGrant {
    /// Longest single message kept (longer ones are truncated).
    pub max_message: ByteSize,
    /// Bytes of log (and captured stdout/stderr) kept per call.
    pub max_bytes_per_call: ByteSize,
    /// Messages kept per call.
    pub max_messages_per_call: u32,
}

impl Default for LogGrant {
    fn default() -> Self {
        Self { max_message: ByteSize(4096), max_bytes_per_call: ByteSize(64 << 10), max_messages_per_call: 1000 }
    }
}

/// Read-only or read-write access for a file grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read files and list directories.
    ReadOnly,
    /// Also create, write and remove.
    ReadWrite,
}

/// A directory preopened inside the run's scratch area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Relative name of the directory inside the scratch area; also the name
    /// the guest sees it under.
    pub path: String,
    /// What the guest may do there.
    pub access: Access,
    /// Read-write grants: the most bytes the directory's tree may hold, every
    /// file, directory and link counted at its length (or allocated size, if
    /// larger) and at least [`QUOTA_ENTRY_BYTES`]. In a manifest, the request
    /// (absent: the policy's default); in a grant, the enforced value
    /// (`runtime::quota`). Always `None` on a read-only grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<ByteSize>,
}

/// The least one entry (file, directory, link) of a read-write grant counts
/// against its quota, so a flood of empty files fills the quota too, and
/// measuring a tree walks at most quota / 4 KiB entries.
pub const QUOTA_ENTRY_BYTES: u64 = 4096;

impl Access {
    /// The manifest spelling: `read-only` or `read-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FileGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota {
            Some(q) => write!(f, "{} ({}, quota {q})", self.path, self.access),
            None => write!(f, "{} ({})", self.path, self.access),
        }
    }
}

/// The wildcard that stands for any name in `models`, `backends` and `envs`.
pub const ANY: &str = "*";

/// Whether `list` allows `name`: it holds `name` itself or the wildcard.
pub fn list_allows(list: &[String], name: &str) -> bool {
    list.iter().any(|m| m == ANY || m == name)
}

macro_rules! grant_struct {
    ([$($a:ident: $fa:ty,)*] [$($b:ident: $fb:ty,)*]) => {
        grant_struct! { @all $($a: $fa,)* $($b: $fb,)* }
    };
    (@all $($field:ident: $factor:ty,)*) => {
        /// The effective powers and limits of a variant.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub struct Grant {
            /// Per-call limits.
            pub limits: Limits,
            /// Caps of the always-granted `log` service.
            pub log: LogGrant,
            /// Preopened scratch directories.
            #[serde(default)]
            pub files: Vec<FileGrant>,
            /// Environment variables passed through, by name.
            #[serde(default)]
            pub env: Vec<String>,
            /// `host:port` pairs the guest may connect to.
            #[serde(default)]
            pub sockets: Vec<String>,
            /// Seed for deterministic mode: seeded randomness and a virtual clock.
            #[serde(default)]
            pub deterministic: Option<u64>,
            // Every service of the registry, when granted; left out when
            // not, so adding a service keeps the digests of grants without it.
            $(
                #[doc = concat!("The `", stringify!($field), "` service, when granted.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<<$factor as Service>::Grant>,
            )*
        }

        /// The service sections of a grant in grant field order: each
        /// service's name and, when granted, its section.
        fn sections(g: &Grant) -> Vec<(&'static str, Option<&dyn Section>)> {
            fn one<S: ServiceCaps>(s: &Option<S>) -> (&'static str, Option<&dyn Section>) {
                (S::NAME, s.as_ref().map(|s| s as &dyn Section))
            }
            vec![$(one(&g.$field),)*]
        }

        /// Every service section's name lists, to put them in normal form.
        fn name_lists_mut(g: &mut Grant) -> Vec<&mut Vec<String>> {
            let mut lists = Vec::new();
            $(lists.extend(g.$field.iter_mut().flat_map(ServiceCaps::name_lists_mut));)*
            lists
        }

        /// Each granted service's request into `caps`.
        fn service_requests(g: &Grant, caps: &mut crate::caps::manifest::Capabilities) {
            $(caps.$field = g.$field.as_ref().map(ServiceCaps::as_request);)*
        }
    };
}

crate::services::registry!(grant_struct);

/// The host services a grant can name, `log` first (it is always granted).
pub const SERVICES: &[&str] = crate::services::IMPLEMENTED;

impl Grant {
    /// This grant written as a manifest's `[capabilities]` and `[limits]`:
    /// the request that, resolved under any policy, yields at most this
    /// grant (a policy can only cut a request down). What an approved
    /// escalation writes into the child's `variant.toml`, so the child gets
    /// what the approver saw and nothing a later, broader policy would add.
    pub fn as_request(&self) -> (crate::caps::manifest::Capabilities, crate::caps::manifest::LimitsSpec) {
        use crate::caps::manifest::*;
        let mut caps = Capabilities {
            files: self.files.clone(),
            env: self.env.clone(),
            sockets: self.sockets.clone(),
            deterministic: self.deterministic.map(|seed| DeterministicRequest { seed }),
            ..Capabilities::default()
        };
        service_requests(self, &mut caps);
        let l = &self.limits;
        let limits = LimitsSpec {
            fuel: Some(l.fuel),
            memory: Some(l.memory),
            wall: Some(l.wall),
            stack: Some(l.stack),
            table_elements: Some(l.table_elements),
            instances: Some(l.instances),
            output: Some(l.output),
        };
        (caps, limits)
    }

    /// Every power of this grant, one line each (`llm: models …, tokens …`,
    /// `env: A, B`, `limits: fuel …`): what a person approving it reads.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut out: Vec<String> =
            service_lines(self).into_iter().filter_map(|(name, line)| Some(format!("{name}: {}", line?))).collect();
        for f in &self.files {
            out.push(format!("files: `{}` {:?}", f.path, f.access).to_lowercase());
        }
        if !self.env.is_empty() {
            out.push(format!("env: {}", self.env.join(", ")));
        }
        if !self.sockets.is_empty() {
            out.push(format!("sockets: {}", self.sockets.join(", ")));
        }
        let l = &self.limits;
        out.push(format!("limits: fuel {}, memory {}, wall {}", l.fuel, l.memory, l.wall));
        out
    }

    /// The grant a bare `.wasm`/`.wat` file gets: `log` only, with `limits`.
    pub fn minimal(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Whether the host service interface `name` (`llm`, `trainer`,
    /// `simulator`, `memory`, `archive`) is granted. `log` always is.
    /// Unknown names are never granted.
    pub fn service_granted(&self, name: &str) -> bool {
        name == "log" || sections(self).iter().any(|(n, s)| *n == name && s.is_some())
    }

    /// The names of the granted services, in [`SERVICES`] order (`log` first).
    pub fn services(&self) -> Vec<&'static str> {
        SERVICES.iter().copied().filter(|s| self.service_granted(s)).collect()
    }

    /// The same grant with every set-like list sorted and deduplicated
    /// (files by path, env, sockets, models, backends, envs), and a list
    /// holding the wildcard reduced to `["*"]`. Two grants with the same
    /// powers have the same normal form.
    pub fn normalized(&self) -> Grant {
        fn names(list: &[String]) -> Vec<String> {
            if list.iter().any(|m| m == ANY) {
                return vec![ANY.to_string()];
            }
            let mut v = list.to_vec();
            v.sort();
            v.dedup();
            v
        }
        let mut g = self.clone();
        g.files.sort_by(|a, b| a.path.cmp(&b.path).then((a.access as u8).cmp(&(b.access as u8))));
        g.files.dedup();
        g.env.sort();
        g.env.dedup();
        g.sockets.sort();
        g.sockets.dedup();
        for list in name_lists_mut(&mut g) {
            *list = names(list);
        }
        g
    }

    /// The grant's canonical JSON: the [`normalized`](Self::normalized) grant
    /// with object keys sorted at every level, no whitespace, absent services
    /// left out (so adding a service kind later does not change the digest of
    /// grants without it).
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self.normalized()).expect("grant serializes");
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// sha256 of the grant's canonical JSON form ([`canonical_json`](Self::canonical_json)), hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// One-line summary of a service grant, for human lines.
fn service_lines(g: &Grant) -> Vec<(&'static str, Option<String>)> {
    sections(g).into_iter().map(|(name, s)| (name, s.map(ToString::to_string))).collect()
}

/// The scalar limits of a grant (per-call limits, then log caps) as
/// `(field, value, display)`, in declaration order.
fn scalar_limits(g: &Grant) -> Vec<(&'static str, u128, String)> {
    let l = &g.limits;
    let log = &g.log;
    vec![
        ("limits.fuel", l.fuel as u128, l.fuel.to_string()),
        ("limits.memory", l.memory.0 as u128, l.memory.to_string()),
        ("limits.wall", l.wall.0.as_nanos(), l.wall.to_string()),
        ("limits.stack", l.stack.0 as u128, l.stack.to_string()),
        ("limits.table_elements", l.table_elements as u128, l.table_elements.to_string()),
        ("limits.instances", l.instances as u128, l.instances.to_string()),
        ("limits.output", l.output.0 as u128, l.output.to_string()),
        ("log.max_message", log.max_message.0 as u128, log.max_message.to_string()),
        ("log.max_bytes_per_call", log.max_bytes_per_call.0 as u128, log.max_bytes_per_call.to_string()),
        ("log.max_messages_per_call", log.max_messages_per_call as u128, log.max_messages_per_call.to_string()),
    ]
}

/// The budgets inside the services both grants hold, as
/// `(field, value a, value b, display a, display b)`.
fn service_budgets(a: &Grant, b: &Grant) -> Vec<(&'static str, u128, u128, String, String)> {
    let mut v = Vec::new();
    for ((_, x), (_, y)) in sections(a).into_iter().zip(sections(b)) {
        if let (Some(x), Some(y)) = (x, y) {
            for ((field, va, da), (_, vb, db)) in x.budgets().into_iter().zip(y.budgets()) {
                v.push((field, va, vb, da, db));
            }
        }
    }
    v
}

/// The name lists inside the services both grants hold.
fn service_name_lists<'a>(a: &'a Grant, b: &'a Grant) -> Vec<(&'static str, &'a [String], &'a [String])> {
    let mut v = Vec::new();
    for ((_, x), (_, y)) in sections(a).into_iter().zip(sections(b)) {
        if let (Some(x), Some(y)) = (x, y) {
            for ((field, xs), (_, ys)) in x.name_lists().into_iter().zip(y.name_lists()) {
                v.push((field, xs, ys));
            }
        }
    }
    v
}

fn show_seed(seed: Option<u64>) -> String {
    match seed {
        Some(s) => format!("seed {s}"),
        None => "off".to_string(),
    }
}

/// What changes from grant `a` to grant `b`, one human line per difference,
/// in grant field order (limits, log, files, env, sockets, deterministic,
/// then each service):
///
/// * `~ field: A -> B` — a value both have, changed;
/// * `- field: X` — something only `a` has (a file, env name, socket,
///   model, … or a whole service, summarised);
/// * `+ field: X` — something only `b` has.
///
/// Both grants are [`normalized`](Grant::normalized) first, so list order
/// and duplicates do not count. Equal grants give no lines.
pub fn diff(a: &Grant, b: &Grant) -> Vec<String> {
    let (a, b) = (a.normalized(), b.normalized());
    let mut out = Vec::new();
    for ((field, va, sa), (_, vb, sb)) in scalar_limits(&a).into_iter().zip(scalar_limits(&b)) {
        if va != vb {
            out.push(format!("~ {field}: {sa} -> {sb}"));
        }
    }
    let set = |out: &mut Vec<String>, field: &str, xs: Vec<String>, ys: Vec<String>| {
        for x in xs.iter().filter(|x| !ys.contains(x)) {
            out.push(format!("- {field}: {x}"));
        }
        for y in ys.iter().filter(|y| !xs.contains(y)) {
            out.push(format!("+ {field}: {y}"));
        }
    };
    set(
        &mut out,
        "files",
        a.files.iter().map(ToString::to_string).collect(),
        b.files.iter().map(ToString::to_string).collect(),
    );
    set(&mut out, "env", a.env.clone(), b.env.clone());
    set(&mut out, "sockets", a.sockets.clone(), b.sockets.clone());
    match (a.deterministic, b.deterministic) {
        (Some(x), Some(y)) if x != y => out.push(format!("~ deterministic: seed {x} -> seed {y}")),
        (Some(_), None) | (None, Some(_)) => {
            out.push(format!("~ deterministic: {} -> {}", show_seed(a.deterministic), show_seed(b.deterministic)))
        }
        _ => {}
    }
    let lists = service_name_lists(&a, &b);
    let budgets = service_budgets(&a, &b);
    for ((name, sa), (_, sb)) in service_lines(&a).into_iter().zip(service_lines(&b)) {
        match (sa, sb) {
            (Some(x), None) => out.push(format!("- {name}: {x}")),
            (None, Some(y)) => out.push(format!("+ {name}: {y}")),
            (Some(_), Some(_)) => {
                for (field, xs, ys) in lists.iter().filter(|l| l.0.split('.').next() == Some(name)) {
                    set(&mut out, field, xs.to_vec(), ys.to_vec());
                }
                for (field, va, vb, da, db) in budgets.iter().filter(|l| l.0.split('.').next() == Some(name)) {
                    if va != vb {
                        out.push(format!("~ {field}: {da} -> {db}"));
                    }
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Capability monotonicity: `Ok(())` when `child` has no power, limit or
/// budget beyond `parent`'s, else every way it exceeds the parent, one human
/// line each, in grant field order.
///
/// * a limit, log cap or service budget above the parent's;
/// * a file directory not inside one of the parent's (a subdirectory of a
///   granted directory is within it), or read-write where the parent has
///   read-only;
/// * an env name or socket the parent lacks;
/// * leaving deterministic mode the parent runs in (a different seed is not
///   an escalation);
/// * a service the parent lacks, or a model/backend/env name the parent's
///   list does not allow (the wildcard `*` is within only a wildcard).
pub fn is_within(child: &Grant, parent: &Grant) -> Result<(), Vec<String>> {
    let (c, p) = (child.normalized(), parent.normalized());
    let mut out = Vec::new();
    for ((field, vc, sc), (_, vp, sp)) in scalar_limits(&c).into_iter().zip(scalar_limits(&p)) {
        if vc > vp {
            out.push(format!("{field}: {sc} exceeds the parent's {sp}"));
        }
    }
    for f in &c.files {
        let inside: Vec<&FileGrant> =
            p.files.iter().filter(|q| f.path == q.path || f.path.starts_with(&format!("{}/", q.path))).collect();
        if inside.is_empty() {
            out.push(format!("files: `{}` is not granted to the parent", f.path));
        } else if f.access == Access::ReadWrite && inside.iter().all(|q| q.access == Access::ReadOnly) {
            out.push(format!("files: `{}` is read-write; the parent has it read-only", f.path));
        } else if f.access == Access::ReadWrite {
            // A bigger quota is a widening; no quota is the widest.
            let widest = inside
                .iter()
                .filter(|q| q.access == Access::ReadWrite)
                .map(|q| q.quota.map_or(u64::MAX, |b| b.0))
                .max()
                .unwrap_or(0);
            let mine = f.quota.map_or(u64::MAX, |b| b.0);
            if mine > widest {
                let show =
                    |q: u64| if q == u64::MAX { "no quota".to_string() } else { format!("quota {}", ByteSize(q)) };
                out.push(format!("files: `{}` has {}, more than the parent's {}", f.path, show(mine), show(widest)));
            }
        }
    }
    for e in c.env.iter().filter(|e| !p.env.contains(e)) {
        out.push(format!("env: `{e}` is not granted to the parent"));
    }
    for s in c.sockets.iter().filter(|s| !p.sockets.contains(s)) {
        out.push(format!("sockets: `{s}` is not granted to the parent"));
    }
    if let (None, Some(seed)) = (c.deterministic, p.deterministic) {
        out.push(format!("deterministic: off, but the parent runs deterministic (seed {seed})"));
    }
    let lists = service_name_lists(&c, &p);
    let budgets = service_budgets(&c, &p);
    for ((name, sc), (_, sp)) in service_lines(&c).into_iter().zip(service_lines(&p)) {
        match (sc, sp) {
            (Some(_), None) => out.push(format!("{name}: not granted to the parent")),
            (Some(_), Some(_)) => {
                for (field, xs, ys) in lists.iter().filter(|l| l.0.split('.').next() == Some(name)) {
                    if list_allows(ys, ANY) {
                        continue;
                    }
                    for x in xs.iter().filter(|x| !ys.contains(x)) {
                        if x == ANY {
                            out.push(format!("{field}: `*` (any) exceeds the parent's {}", show_list(ys)));
                        } else {
                            out.push(format!("{field}: `{x}` is not granted to the parent"));
                        }
                    }
                }
                for (field, vc, vp, dc, dp) in budgets.iter().filter(|l| l.0.split('.').next() == Some(name)) {
                    if vc > vp {
                        out.push(format!("{field}: {dc} exceeds the parent's {dp}"));
                    }
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::service::section;
    use crate::units::Usd;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn file(path: &str, access: Access) -> FileGrant {
        let quota = (access == Access::ReadWrite).then_some(ByteSize(16 << 20));
        FileGrant { path: path.into(), access, quota }
    }

    /// A grant with every kind of power.
    fn rich() -> Grant {
        Grant {
            limits: Limits::default(),
            log: LogGrant::default(),
            files: vec![file("scratch", Access::ReadWrite), file("data", Access::ReadOnly)],
            env: s(&["LANG"]),
            sockets: s(&["api.example.com:443"]),
            deterministic: None,
            llm: Some(section(json!({
                "models": ["small", "large"],
                "tokens": 1000,
                "max_request_bytes": "1KiB",
                "requests_per_minute": 10,
            }))),
            trainer: Some(section(json!({ "backends": ["cpu"], "gpu_seconds": 60 }))),
            simulator: Some(section(json!({ "envs": ["*"], "steps": 100 }))),
            memory: Some(section(json!({ "bytes": "1MiB" }))),
            archive: Some(section(json!({}))),
            workbench: Some(section(json!({ "tries": 3, "tasks": 5, "build_seconds": 30, "fuel": 1_000_000 }))),
            clock: Some(section(json!({}))),
        }
    }

    #[test]
    fn services_granted() {
        let g = Grant::minimal(Limits::default());
        assert_eq!(g.services(), vec!["log"]);
        for name in ["llm", "trainer", "simulator", "memory", "archive", "network", ""] {
            assert!(!g.service_granted(name), "{name}");
        }
        assert!(g.service_granted("log"));
        let g = rich();
        assert_eq!(g.services(), SERVICES.to_vec());
        let only_memory = Grant { memory: Some(section(json!({ "bytes": 1 }))), ..Grant::default() };
        assert_eq!(only_memory.services(), vec!["log", "memory"]);
    }

    #[test]
    fn name_lists_and_the_wildcard() {
        let g = rich();
        assert!(g.llm.as_ref().unwrap().allows_model("small"));
        assert!(!g.llm.as_ref().unwrap().allows_model("huge"));
        assert!(g.trainer.as_ref().unwrap().allows_backend("cpu"));
        assert!(!g.trainer.as_ref().unwrap().allows_backend("cuda"));
        assert!(g.simulator.as_ref().unwrap().allows_env("cartpole"));
    }

    #[test]
    fn canonical_json_is_pinned() {
        let g = Grant::minimal(Limits::default());
        assert_eq!(
            g.canonical_json(),
            r#"{"deterministic":null,"env":[],"files":[],"limits":{"fuel":5000000000,"instances":64,"memory":"256MiB","output":"1MiB","stack":"1MiB","table_elements":100000,"wall":"30s"},"log":{"max_bytes_per_call":"64KiB","max_message":"4KiB","max_messages_per_call":1000},"sockets":[]}"#
        );
        assert_eq!(g.digest(), hex::encode(Sha256::digest(g.canonical_json().as_bytes())));
        assert_eq!(g.digest().len(), 64);
        let mut shuffled = rich();
        shuffled.files.reverse();
        shuffled.llm.as_mut().unwrap().models.reverse();
        shuffled.env.push("LANG".into());
        assert_ne!(shuffled, rich());
        assert_eq!(shuffled.digest(), rich().digest());
        assert_eq!(shuffled.normalized(), rich().normalized());
        let mut other = rich();
        other.memory = None;
        assert_ne!(other.digest(), rich().digest());
        assert!(rich().canonical_json().contains(r#""archive":{}"#));
        assert!(!other.canonical_json().contains("memory\":{"));
    }

    /// The grant's JSON keeps its field order (the fixed fields, then the
    /// services in registry order), as grants written before the registry.
    #[test]
    fn the_serialized_grant_keeps_its_field_order() {
        let json = serde_json::to_string(&rich()).unwrap();
        let keys = [
            "limits",
            "log",
            "files",
            "env",
            "sockets",
            "deterministic",
            "llm",
            "trainer",
            "simulator",
            "memory",
            "archive",
            "workbench",
            "clock",
        ];
        // The last `"key":` is the top-level one (`limits` has a `memory` too).
        let at: Vec<usize> = keys.iter().map(|k| json.rfind(&format!("\"{k}\":")).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert_eq!(SERVICES, ["log", "llm", "trainer", "simulator", "memory", "archive", "workbench", "clock"]);
    }

    #[test]
    fn serde_round_trip() {
        let g = rich().normalized();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
        let bare = serde_json::to_value(Grant::default()).unwrap();
        assert!(bare.get("llm").is_none());
        assert_eq!(serde_json::from_value::<Grant>(bare).unwrap(), Grant::default());
    }

    #[test]
    fn diff_of_equal_grants_is_empty() {
        assert_eq!(diff(&rich(), &rich()), Vec::<String>::new());
        let mut reordered = rich();
        reordered.files.reverse();
        assert_eq!(diff(&rich(), &reordered), Vec::<String>::new());
    }

    #[test]
    fn diff_names_every_difference() {
        let a = rich();
        let mut b = rich();
        b.limits.fuel = 1000;
        b.limits.memory = ByteSize(64 << 20);
        b.log.max_messages_per_call = 10;
        b.files =
            vec![file("scratch", Access::ReadOnly), file("data", Access::ReadOnly), file("out", Access::ReadWrite)];
        b.env = s(&["LANG", "TZ"]);
        b.sockets = vec![];
        b.deterministic = Some(7);
        b.llm.as_mut().unwrap().models = s(&["small", "medium"]);
        b.llm.as_mut().unwrap().tokens = 500;
        b.trainer = None;
        b.memory.as_mut().unwrap().bytes = ByteSize(2 << 20);
        b.archive = None;
        assert_eq!(
            diff(&a, &b),
            s(&[
                "~ limits.fuel: 5000000000 -> 1000",
                "~ limits.memory: 256MiB -> 64MiB",
                "~ log.max_messages_per_call: 1000 -> 10",
                "- files: scratch (read-write, quota 16MiB)",
                "+ files: out (read-write, quota 16MiB)",
                "+ files: scratch (read-only)",
                "+ env: TZ",
                "- sockets: api.example.com:443",
                "~ deterministic: off -> seed 7",
                "- llm.models: large",
                "+ llm.models: medium",
                "~ llm.tokens: 1000 -> 500",
                "- trainer: backends [cpu], gpu_seconds 60",
                "~ memory.bytes: 1MiB -> 2MiB",
                "- archive: read-only view",
            ])
        );
        assert_eq!(
            diff(&Grant::minimal(Limits::default()), &a),
            s(&[
                "+ files: data (read-only)",
                "+ files: scratch (read-write, quota 16MiB)",
                "+ env: LANG",
                "+ sockets: api.example.com:443",
                "+ llm: models [large, small], tokens 1000, max_request_bytes 1KiB, requests_per_minute 10",
                "+ trainer: backends [cpu], gpu_seconds 60",
                "+ simulator: envs [*], steps 100",
                "+ memory: bytes 1MiB",
                "+ archive: read-only view",
                "+ workbench: tries 3, tasks 5, build_seconds 30, fuel 1000000",
                "+ clock: the call's elapsed and remaining time",
            ])
        );
        let mut c = a.clone();
        c.deterministic = Some(1);
        let mut d = a.clone();
        d.deterministic = Some(2);
        assert_eq!(diff(&c, &d), s(&["~ deterministic: seed 1 -> seed 2"]));
        assert_eq!(diff(&c, &a), s(&["~ deterministic: seed 1 -> off"]));
    }

    #[test]
    fn within_itself_and_anything_smaller() {
        let parent = rich();
        assert_eq!(is_within(&parent, &parent), Ok(()));
        assert_eq!(is_within(&Grant::minimal(Limits::default()), &parent), Ok(()));
        let mut child = rich();
        child.limits = Limits { fuel: 1, ..Limits::default() };
        child.files = vec![file("scratch/sub", Access::ReadWrite), file("data/x", Access::ReadOnly)];
        child.llm.as_mut().unwrap().models = s(&["small"]);
        child.simulator.as_mut().unwrap().envs = s(&["cartpole"]);
        child.deterministic = Some(3);
        child.trainer = None;
        assert_eq!(is_within(&child, &parent), Ok(()));
        // A different seed is no escalation.
        let mut seeded = parent.clone();
        seeded.deterministic = Some(1);
        let mut reseeded = parent.clone();
        reseeded.deterministic = Some(2);
        assert_eq!(is_within(&reseeded, &seeded), Ok(()));
    }

    #[test]
    fn every_escalation_is_named() {
        let mut parent = rich();
        parent.deterministic = Some(9);
        parent.llm.as_mut().unwrap().usd = Some(Usd::from_dollars(1.0).unwrap());
        let mut child = rich();
        child.limits.wall = HumanDuration(Duration::from_secs(31));
        child.limits.instances = 65;
        child.log.max_message = ByteSize(8192);
        child.files = vec![
            file("scratch/sub", Access::ReadWrite),
            file("data", Access::ReadWrite),
            file("data/deeper", Access::ReadWrite),
            file("elsewhere", Access::ReadOnly),
            file("scratchy", Access::ReadOnly),
        ];
        child.env = s(&["LANG", "HOME"]);
        child.sockets = s(&["api.example.com:443", "evil.example.com:443"]);
        child.deterministic = None;
        // No dollar cap (no `usd`) is more than the parent's $1.00.
        child.llm = Some(section(json!({
            "models": ["*"],
            "tokens": 1001,
            "max_request_bytes": "2KiB",
            "requests_per_minute": 10,
        })));
        child.trainer = Some(section(json!({ "backends": ["cpu", "cuda"], "gpu_seconds": 61 })));
        child.simulator = Some(section(json!({ "envs": ["*"], "steps": 101 })));
        child.memory = Some(section(json!({ "bytes": "2MiB" })));
        assert_eq!(
            is_within(&child, &parent),
            Err(s(&[
                "limits.wall: 31s exceeds the parent's 30s",
                "limits.instances: 65 exceeds the parent's 64",
                "log.max_message: 8KiB exceeds the parent's 4KiB",
                "files: `data` is read-write; the parent has it read-only",
                "files: `data/deeper` is read-write; the parent has it read-only",
                "files: `elsewhere` is not granted to the parent",
                "files: `scratchy` is not granted to the parent",
                "env: `HOME` is not granted to the parent",
                "sockets: `evil.example.com:443` is not granted to the parent",
                "deterministic: off, but the parent runs deterministic (seed 9)",
                "llm.models: `*` (any) exceeds the parent's [large, small]",
                "llm.tokens: 1001 exceeds the parent's 1000",
                "llm.max_request_bytes: 2KiB exceeds the parent's 1KiB",
                "llm.usd: none exceeds the parent's $1.00",
                "trainer.backends: `cuda` is not granted to the parent",
                "trainer.gpu_seconds: 61 exceeds the parent's 60",
                "simulator.steps: 101 exceeds the parent's 100",
                "memory.bytes: 2MiB exceeds the parent's 1MiB",
            ]))
        );
        let bare = Grant::minimal(Limits::default());
        assert_eq!(
            is_within(&rich(), &bare),
            Err(s(&[
                "files: `data` is not granted to the parent",
                "files: `scratch` is not granted to the parent",
                "env: `LANG` is not granted to the parent",
                "sockets: `api.example.com:443` is not granted to the parent",
                "llm: not granted to the parent",
                "trainer: not granted to the parent",
                "simulator: not granted to the parent",
                "memory: not granted to the parent",
                "archive: not granted to the parent",
                "workbench: not granted to the parent",
                "clock: not granted to the parent",
            ]))
        );
    }

    #[test]
    fn a_bigger_file_quota_is_a_widening() {
        let with = |q: Option<u64>| Grant {
            files: vec![FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: q.map(ByteSize) }],
            ..Grant::minimal(Limits::default())
        };
        assert_eq!(is_within(&with(Some(1 << 20)), &with(Some(16 << 20))), Ok(()));
        assert_eq!(is_within(&with(Some(16 << 20)), &with(Some(16 << 20))), Ok(()));
        assert_eq!(
            is_within(&with(Some(32 << 20)), &with(Some(16 << 20))),
            Err(s(&["files: `scratch` has quota 32MiB, more than the parent's quota 16MiB"]))
        );
        assert_eq!(
            is_within(&with(None), &with(Some(16 << 20))),
            Err(s(&["files: `scratch` has no quota, more than the parent's quota 16MiB"]))
        );
        assert_eq!(is_within(&with(Some(1 << 30)), &with(None)), Ok(()));
        assert_eq!(with(Some(16 << 20)).files[0].to_string(), "scratch (read-write, quota 16MiB)");
    }

    #[test]
    fn tightened_takes_the_smaller_of_each() {
        let a = Limits { fuel: 10, memory: ByteSize(100), ..Limits::default() };
        let b = Limits { fuel: 20, memory: ByteSize(50), ..Limits::default() };
        assert_eq!(a.tightened(&b), Limits { fuel: 10, memory: ByteSize(50), ..Limits::default() });
    }
}
