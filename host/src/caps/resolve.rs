//! Manifest + policy + CLI flags → [`Grant`], with where each value came
//! from ([`ProvenanceLine`]) and what was refused ([`Denial`]).
//!
//! Rules:
//!
//! * **Limits**: the manifest's value, else the policy's default; above the
//!   policy's ceiling it is cut to the ceiling (`policy-ceiling`, with a
//!   note). A flag (`--fuel`, `--memory`, `--wall`) below that value wins
//!   (`flag`); a flag at or above it is **ignored, not an error**: the flags
//!   can only tighten, so a loosening flag leaves the value and its source
//!   as they were and adds a note saying so ([`Resolution::notes`]).
//! * **Services** (`llm`, `trainer`, `simulator`, `memory`, `archive`): a
//!   service the policy does not allow is left out with a [`Denial`]. A
//!   budget above the policy's is cut to it (`policy-ceiling`); a budget the
//!   manifest leaves out (`max_request_bytes`, `requests_per_minute`) is the
//!   policy's (`policy-default`). Names (`models`, `backends`, `envs`): `*`
//!   gets the policy's list; a name the policy's list lacks is denied on
//!   its own; when no name is left, the whole service is denied.
//! * **Files**: denied when the policy says `false`; past the policy's count,
//!   the later entries are denied.
//! * **Env**: a name passes when the policy's `env_allow` lists it or holds
//!   `*`; a name that looks like a secret ([`secret_marker`]) passes only
//!   when listed exactly.
//! * **Sockets**: a pair passes when a `sockets_allow` pattern covers it; an
//!   internal address ([`is_internal_host`]) only when the policy lists the
//!   exact pair.
//! * **Deterministic**: the manifest's seed when the policy allows it; the
//!   policy's seed when the policy forces it and the manifest gives none
//!   (`policy-forced`).
//!
//! Lists in the grant are sorted ([`Grant::normalized`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    caps::{
        grant::{Access, FileGrant, Grant, Limits, ANY},
        manifest::{parse_socket, validate_env_name, validate_rel_path, Capabilities, LimitsSpec, Manifest},
        policy::{is_internal_host, secret_marker, CapabilityPolicy, FilesQuotaPolicy, Policy, SocketPattern},
        service::{self, PolicyEntry},
    },
    error::Error,
    units::{ByteSize, HumanDuration},
};

/// CLI flags that may tighten the limits (`run --fuel N --memory SIZE --wall DURATION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--fuel N`.
    pub fuel: Option<u64>,
    /// `--memory SIZE`.
    pub memory: Option<ByteSize>,
    /// `--wall DURATION`.
    pub wall: Option<HumanDuration>,
}

/// Where a value of the grant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The variant's manifest asked for it.
    Manifest,
    /// The policy's default (the manifest did not say).
    PolicyDefault,
    /// The request (or default) was above the policy's ceiling and was cut to it.
    PolicyCeiling,
    /// The policy imposes it (deterministic mode when forced).
    PolicyForced,
    /// A CLI flag tightened it.
    Flag,
}

impl Source {
    /// `manifest`, `policy-default`, `policy-ceiling`, `policy-forced` or `flag`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Manifest => "manifest",
            Source::PolicyDefault => "policy-default",
            Source::PolicyCeiling => "policy-ceiling",
            Source::PolicyForced => "policy-forced",
            Source::Flag => "flag",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one field of the grant came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceLine {
    /// The grant field, dotted (`limits.memory`, `llm.tokens`, `env`, …).
    pub field: String,
    /// Its value in the grant, as text.
    pub value: String,
    /// Where the value came from.
    pub source: Source,
    /// What else happened: a cut request, an ignored flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl fmt::Display for ProvenanceLine {
    /// `limits.memory = 512MiB (policy-ceiling: manifest asked 1GiB; ceiling 512MiB)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {} ({}", self.field, self.value, self.source)?;
        if let Some(note) = &self.note {
            write!(f, ": {note}")?;
        }
        f.write_str(")")
    }
}

/// Something the manifest asked for that the policy does not allow at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The capability (`llm`, `llm.models`, `env`, `sockets`, `files`, …).
    pub capability: String,
    /// What was asked for (a name, a pair, a summary of the request).
    pub requested: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for Denial {
    /// `env `AWS_SECRET_KEY` denied: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}` denied: {}", self.capability, self.requested, self.reason)
    }
}

/// The grant and how it came to be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    /// The effective grant.
    pub grant: Grant,
    /// One line per grant field: limits, log caps, then each granted capability.
    pub provenance: Vec<ProvenanceLine>,
    /// Requests refused by the policy, in field order.
    pub denials: Vec<Denial>,
}

impl Resolution {
    /// The provenance line of `field`, if the grant has it.
    pub fn provenance_of(&self, field: &str) -> Option<&ProvenanceLine> {
        self.provenance.iter().find(|p| p.field == field)
    }

    /// Lines worth showing a person: every provenance line with a note (cut
    /// to a ceiling, flag ignored) and every denial.
    pub fn notes(&self) -> Vec<String> {
        let notes = self.provenance.iter().filter(|p| p.note.is_some()).map(ToString::to_string);
        notes.chain(self.denials.iter().map(ToString::to_string)).collect()
    }

    /// [`Error::Refused`] (exit 3) naming every denied capability, for a
    /// caller that wants "all or nothing"; `None` when nothing was denied.
    pub fn refusal(&self) -> Option<Error> {
        if self.denials.is_empty() {
            return None;
        }
        let mut what: Vec<String> = Vec::new();
        for d in &self.denials {
            if !what.contains(&d.capability) {
                what.push(d.capability.clone());
            }
        }
        let detail = self.denials.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        Some(Error::Refused { what, detail })
    }
}

/// Compute the grant of a variant: its manifest cut down to the policy,
/// then tightened by the CLI flags. See the module documentation.
pub fn resolve(manifest: &Manifest, policy: &Policy, overrides: &Overrides) -> Resolution {
    resolve_request(&manifest.limits, &manifest.capabilities, policy, overrides)
}

/// The grant of a bare `.wasm`/`.wat` file: the policy's default limits
/// (tightened by the flags), `log` only — plus deterministic mode when the
/// policy forces it.
pub fn resolve_bare(policy: &Policy, overrides: &Overrides) -> Resolution {
    resolve_request(&LimitsSpec::default(), &Capabilities::default(), policy, overrides)
}

/// The grant being built: every value's provenance line and every
/// denial, in the order they are decided. Services write their sections
/// through it ([`crate::caps::service::ServiceCaps::grant`]).
pub struct Builder {
    provenance: Vec<ProvenanceLine>,
    denials: Vec<Denial>,
}

impl Builder {
    pub(crate) fn line(&mut self, field: &str, value: impl fmt::Display, source: Source, note: Option<String>) {
        self.provenance.push(ProvenanceLine { field: field.to_string(), value: value.to_string(), source, note });
    }

    pub(crate) fn deny(&mut self, capability: &str, requested: impl fmt::Display, reason: impl Into<String>) {
        self.denials.push(Denial {
            capability: capability.to_string(),
            requested: requested.to_string(),
            reason: reason.into(),
        });
    }

    /// One limit: request or default, cut to the ceiling, then the flag.
    fn limit<T: Ord + Copy + fmt::Display>(
        &mut self,
        field: &str,
        requested: Option<T>,
        default: T,
        ceiling: T,
        flag: Option<(&str, T)>,
    ) -> T {
        let (mut value, mut source, mut note) = match requested {
            Some(r) if r > ceiling => {
                (ceiling, Source::PolicyCeiling, Some(format!("manifest asked {r}; ceiling {ceiling}")))
            }
            Some(r) => (r, Source::Manifest, None),
            None if default > ceiling => (
                ceiling,
                Source::PolicyCeiling,
                Some(format!("policy default {default} is above the ceiling {ceiling}")),
            ),
            None => (default, Source::PolicyDefault, None),
        };
        if let Some((name, f)) = flag {
            if f < value {
                let was = format!("{name} {f} tightened {value} ({source})");
                note = Some(match note {
                    Some(n) => format!("{was}; {n}"),
                    None => was,
                });
                value = f;
                source = Source::Flag;
            } else if f > value {
                let ignored = format!("{name} {f} ignored: flags can only tighten");
                note = Some(match note {
                    Some(n) => format!("{n}; {ignored}"),
                    None => ignored,
                });
            }
        }
        self.line(field, value, source, note);
        value
    }

    /// The quota of the read-write file grant `f`: its request or the
    /// policy's default, cut to the policy's maximum (a note says so).
    fn file_quota(&mut self, f: &FileGrant, policy: &FilesQuotaPolicy) -> ByteSize {
        let field = format!("files.{}.quota", f.path);
        match f.quota {
            Some(r) if r > policy.max => {
                let note = format!("manifest asked {r}; ceiling {}", policy.max);
                self.line(&field, policy.max, Source::PolicyCeiling, Some(note));
                policy.max
            }
            Some(r) => r,
            None if policy.default > policy.max => {
                let note = format!("policy default {} is above the ceiling {}", policy.default, policy.max);
                self.line(&field, policy.max, Source::PolicyCeiling, Some(note));
                policy.max
            }
            None => policy.default,
        }
    }

    /// A budget: the request cut to the policy's maximum.
    pub(crate) fn budget<T: Ord + Copy + fmt::Display>(&mut self, field: &str, requested: T, max: T) -> T {
        if requested > max {
            self.line(field, max, Source::PolicyCeiling, Some(format!("manifest asked {requested}; ceiling {max}")));
            max
        } else {
            self.line(field, requested, Source::Manifest, None);
            requested
        }
    }

    /// An optional budget: the request cut to the policy's value, or the policy's value.
    pub(crate) fn optional_budget<T: Ord + Copy + fmt::Display>(
        &mut self,
        field: &str,
        requested: Option<T>,
        policy: T,
    ) -> T {
        match requested {
            Some(r) => self.budget(field, r, policy),
            None => {
                self.line(field, policy, Source::PolicyDefault, None);
                policy
            }
        }
    }

    /// Names (`models`, `backends`, `envs`) within the policy's list; the
    /// names the policy lacks are denied one by one.
    pub(crate) fn names(&mut self, field: &str, requested: &[String], allowed: &[String]) -> Vec<String> {
        let policy_any = allowed.iter().any(|a| a == ANY);
        let mut allowed_sorted = allowed.to_vec();
        allowed_sorted.sort();
        allowed_sorted.dedup();
        let shown_allowed = format!("[{}]", allowed_sorted.join(", "));
        if requested.iter().any(|r| r == ANY) {
            if policy_any {
                self.line(field, "[*]", Source::Manifest, None);
                return vec![ANY.to_string()];
            }
            self.line(
                field,
                &shown_allowed,
                Source::PolicyCeiling,
                Some(format!("manifest asked [*]; policy allows {shown_allowed}")),
            );
            return allowed_sorted;
        }
        let mut granted: Vec<String> = Vec::new();
        for r in requested {
            if policy_any || allowed.contains(r) {
                granted.push(r.clone());
            } else {
                self.deny(field, r, format!("not in the policy's list {shown_allowed}"));
            }
        }
        granted.sort();
        granted.dedup();
        if !granted.is_empty() {
            self.line(field, format!("[{}]", granted.join(", ")), Source::Manifest, None);
        }
        granted
    }
}

fn resolve_request(limits: &LimitsSpec, caps: &Capabilities, policy: &Policy, overrides: &Overrides) -> Resolution {
    let mut b = Builder { provenance: Vec::new(), denials: Vec::new() };
    let (d, c) = (&policy.defaults, &policy.ceilings);
    let mut grant = Grant::minimal(Limits {
        fuel: b.limit("limits.fuel", limits.fuel, d.fuel, c.fuel, overrides.fuel.map(|f| ("--fuel", f))),
        memory: b.limit("limits.memory", limits.memory, d.memory, c.memory, overrides.memory.map(|f| ("--memory", f))),
        wall: b.limit("limits.wall", limits.wall, d.wall, c.wall, overrides.wall.map(|f| ("--wall", f))),
        stack: b.limit("limits.stack", limits.stack, d.stack, c.stack, None),
        table_elements: b.limit(
            "limits.table_elements",
            limits.table_elements,
            d.table_elements,
            c.table_elements,
            None,
        ),
        instances: b.limit("limits.instances", limits.instances, d.instances, c.instances, None),
        output: b.limit("limits.output", limits.output, d.output, c.output, None),
    });

    grant.log = policy.log.clone();
    b.line("log.max_message", grant.log.max_message, Source::PolicyDefault, None);
    b.line("log.max_bytes_per_call", grant.log.max_bytes_per_call, Source::PolicyDefault, None);
    b.line("log.max_messages_per_call", grant.log.max_messages_per_call, Source::PolicyDefault, None);

    let pc = &policy.capabilities;

    // Files.
    // A manifest built in code skips the checks of `Manifest::parse`; the
    // grant never holds an unsafe path or name, whatever the caller did.
    for f in &caps.files {
        if let Err(why) = validate_rel_path(&f.path) {
            b.deny("files", f, why);
            continue;
        }
        if grant.files.iter().any(|g| g.path == f.path) {
            b.deny("files", f, "the path is listed twice");
            continue;
        }
        match pc.files.max() {
            Some(0) => b.deny("files", f, "the policy allows no file grants"),
            Some(n) if grant.files.len() >= n as usize => {
                b.deny("files", f, format!("the policy allows at most {n} file grants"))
            }
            _ => {
                let mut g = f.clone();
                g.quota = match f.access {
                    Access::ReadOnly => None,
                    Access::ReadWrite => Some(b.file_quota(f, &pc.files_quota)),
                };
                grant.files.push(g);
            }
        }
    }
    grant.files.sort_by(|x, y| x.path.cmp(&y.path));
    if !grant.files.is_empty() {
        let shown: Vec<String> = grant.files.iter().map(ToString::to_string).collect();
        b.line("files", shown.join(", "), Source::Manifest, None);
    }

    // Environment variables.
    for name in &caps.env {
        if let Err(why) = validate_env_name(name) {
            b.deny("env", name, why);
            continue;
        }
        let listed = pc.env_allow.iter().any(|a| a == name);
        if let Some(marker) = secret_marker(name) {
            if listed {
                grant.env.push(name.clone());
            } else {
                b.deny(
                    "env",
                    name,
                    format!("looks like a secret (contains `{marker}`); only an exact entry in the policy's env_allow passes it"),
                );
            }
        } else if listed || pc.env_allow.iter().any(|a| a == ANY) {
            grant.env.push(name.clone());
        } else {
            b.deny("env", name, "not in the policy's env_allow");
        }
    }
    grant.env.sort();
    grant.env.dedup();
    if !grant.env.is_empty() {
        b.line("env", grant.env.join(", "), Source::Manifest, None);
    }

    // Sockets.
    let patterns: Vec<SocketPattern> = pc.sockets_allow.iter().filter_map(|p| SocketPattern::parse(p).ok()).collect();
    for s in &caps.sockets {
        let spec = match parse_socket(s) {
            Ok(spec) => spec,
            Err(why) => {
                b.deny("sockets", s, why);
                continue;
            }
        };
        if patterns.iter().any(|p| p.is_exact(&spec)) {
            grant.sockets.push(spec.canonical());
        } else if patterns.iter().any(|p| p.matches(&spec)) {
            if is_internal_host(&spec) {
                b.deny("sockets", s, "a private or loopback address; the policy must list this exact pair");
            } else {
                grant.sockets.push(spec.canonical());
            }
        } else {
            b.deny("sockets", s, "not in the policy's sockets_allow");
        }
    }
    grant.sockets.sort();
    grant.sockets.dedup();
    if !grant.sockets.is_empty() {
        b.line("sockets", grant.sockets.join(", "), Source::Manifest, None);
    }

    // Deterministic mode.
    let det = &pc.deterministic;
    match &caps.deterministic {
        Some(r) if !det.allowed => {
            b.deny("deterministic", format!("seed {}", r.seed), "the policy does not allow deterministic mode")
        }
        Some(r) => {
            grant.deterministic = Some(r.seed);
            b.line("deterministic", format!("seed {}", r.seed), Source::Manifest, None);
        }
        None if det.forced => {
            grant.deterministic = Some(det.seed);
            b.line("deterministic", format!("seed {}", det.seed), Source::PolicyForced, None);
        }
        None => {}
    }

    // The services, in grant field order (the provenance lines follow it).
    resolve_services(&mut grant, caps, pc, &mut b);

    Resolution { grant: grant.normalized(), provenance: b.provenance, denials: b.denials }
}

macro_rules! resolve_services {
    ([$($a:ident: $fa:ty,)*] [$($b:ident: $fb:ty,)*]) => {
        /// Every service of the registry: its request (if any) under the
        /// policy's entry ([`service::resolve`]).
        fn resolve_services(grant: &mut Grant, caps: &Capabilities, pc: &CapabilityPolicy, b: &mut Builder) {
            $(grant.$a = service::resolve(caps.$a.as_ref(), pc.$a.allowed(), b);)*
            $(grant.$b = service::resolve(caps.$b.as_ref(), pc.$b.allowed(), b);)*
        }
    };
}

crate::services::registry!(resolve_services);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::caps::service::section;
    use crate::caps::{
        grant::{Access, FileGrant, LogGrant},
        policy::builtin_ceilings,
    };
    use serde_json::json;

    const POLICY: &str = r#"
[defaults]
fuel = 1_000_000_000
memory = "128MiB"
wall = "10s"

[ceilings]
fuel = 10_000_000_000
memory = "512MiB"
wall = "60s"

[capabilities]
llm = { models = ["small", "large"], tokens = 100_000, max_request_bytes = "128KiB", requests_per_minute = 30 }
trainer = { backends = ["cpu"], gpu_seconds = 300 }
simulator = { envs = ["*"], steps = 1_000_000 }
memory = { bytes = "4MiB" }
archive = true
files = 2
env_allow = ["LANG", "HF_TOKEN"]
sockets_allow = ["api.example.com:443", "*.example.org:443", "10.0.0.5:8080", "*:8443", "localhost:9000"]
"#;

    fn policy() -> Policy {
        Policy::parse(POLICY, "policy.toml").unwrap()
    }

    fn manifest(body: &str) -> Manifest {
        Manifest::parse(&format!("[variant]\nname = \"v\"\nlanguage = \"rust\"\n{body}"), "variant.toml").unwrap()
    }

    fn caps(body: &str) -> Manifest {
        manifest(&format!("[capabilities]\n{body}\n"))
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn line(field: &str, value: &str, source: Source, note: Option<&str>) -> ProvenanceLine {
        ProvenanceLine { field: field.into(), value: value.into(), source, note: note.map(Into::into) }
    }

    fn denial(capability: &str, requested: &str, reason: &str) -> Denial {
        Denial { capability: capability.into(), requested: requested.into(), reason: reason.into() }
    }

    fn secs(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n))
    }

    /// The provenance lines of the limits and log when the manifest says nothing.
    fn default_limit_lines() -> Vec<ProvenanceLine> {
        vec![
            line("limits.fuel", "1000000000", Source::PolicyDefault, None),
            line("limits.memory", "128MiB", Source::PolicyDefault, None),
            line("limits.wall", "10s", Source::PolicyDefault, None),
            line("limits.stack", "1MiB", Source::PolicyDefault, None),
            line("limits.table_elements", "100000", Source::PolicyDefault, None),
            line("limits.instances", "64", Source::PolicyDefault, None),
            line("limits.output", "1MiB", Source::PolicyDefault, None),
            line("log.max_message", "4KiB", Source::PolicyDefault, None),
            line("log.max_bytes_per_call", "64KiB", Source::PolicyDefault, None),
            line("log.max_messages_per_call", "1000", Source::PolicyDefault, None),
        ]
    }

    fn default_limits() -> Limits {
        Limits { fuel: 1_000_000_000, memory: ByteSize(128 << 20), wall: secs(10), ..Limits::default() }
    }

    /// The provenance lines after the limits and log.
    fn rest(r: &Resolution) -> Vec<ProvenanceLine> {
        r.provenance[10..].to_vec()
    }

    #[test]
    fn a_dollar_budget_is_cut_to_the_policys_and_defaults_to_it() {
        use crate::units::Usd;
        let d = |x: f64| Some(Usd::from_dollars(x).unwrap());
        let with_usd = |p: &str| Policy::parse(&POLICY.replace("requests_per_minute = 30", p), "policy.toml").unwrap();
        let usd_line = |r: &Resolution| r.provenance.iter().find(|l| l.field == "llm.usd").cloned();
        // The policy's ceiling cuts the request, and says so.
        let r = resolve(&caps("llm = { tokens = 5, usd = 5 }"), &with_usd("usd = 2"), &Overrides::default());
        assert_eq!(r.grant.llm.as_ref().unwrap().usd, d(2.0));
        assert_eq!(
            usd_line(&r),
            Some(line("llm.usd", "$2.00", Source::PolicyCeiling, Some("manifest asked $5.00; ceiling $2.00")))
        );
        // A manifest that does not ask gets the policy's; one under no
        // dollar policy keeps its own; neither: no dollar cap.
        let r = resolve(&caps("llm = { tokens = 5 }"), &with_usd("usd = 2"), &Overrides::default());
        assert_eq!((r.grant.llm.as_ref().unwrap().usd, usd_line(&r).unwrap().source), (d(2.0), Source::PolicyDefault));
        let r = resolve(&caps("llm = { tokens = 5, usd = 0.25 }"), &policy(), &Overrides::default());
        assert_eq!(r.grant.llm.as_ref().unwrap().usd, d(0.25));
        assert_eq!(r.grant.llm.as_ref().unwrap().to_string().rsplit(", ").next(), Some("usd $0.25"));
        let r = resolve(&caps("llm = { tokens = 5 }"), &policy(), &Overrides::default());
        assert_eq!((r.grant.llm.as_ref().unwrap().usd, usd_line(&r)), (None, None));
        // A grant without dollars serializes as before (its digest is unchanged).
        assert!(!serde_json::to_string(&r.grant).unwrap().contains("usd"));
    }

    #[test]
    fn nothing_requested_nothing_granted() {
        let r = resolve(&manifest(""), &policy(), &Overrides::default());
        assert_eq!(r.grant, Grant::minimal(default_limits()));
        assert_eq!(r.provenance, default_limit_lines());
        assert_eq!(r.denials, vec![]);
        assert_eq!(r.grant.services(), vec!["log"]);
        assert!(r.refusal().is_none());
        assert_eq!(r.notes(), Vec::<String>::new());
    }

    #[test]
    fn every_capability_granted_as_asked() {
        let m = manifest(
            r#"
[limits]
fuel = 2_000_000_000
memory = "256MiB"
wall = "20s"
stack = "512KiB"
output = "64KiB"

[capabilities]
llm = { models = ["small"], tokens = 50_000, max_request_bytes = "64KiB", requests_per_minute = 10 }
trainer = { backends = ["cpu"], gpu_seconds = 100 }
simulator = { envs = ["cartpole", "acrobot"], steps = 500_000 }
memory = { bytes = "1MiB" }
archive = {}
files = [{ path = "scratch", access = "read-write" }, { path = "data" }]
env = ["LANG"]
sockets = ["api.example.com:443"]
deterministic = { seed = 7 }
"#,
        );
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(
            r.grant,
            Grant {
                limits: Limits {
                    fuel: 2_000_000_000,
                    memory: ByteSize(256 << 20),
                    wall: secs(20),
                    stack: ByteSize(512 << 10),
                    table_elements: 100_000,
                    instances: 64,
                    output: ByteSize(64 << 10),
                },
                log: LogGrant::default(),
                files: vec![
                    FileGrant { path: "data".into(), access: Access::ReadOnly, quota: None },
                    FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: Some(ByteSize(16 << 20)) },
                ],
                env: s(&["LANG"]),
                sockets: s(&["api.example.com:443"]),
                deterministic: Some(7),
                llm: Some(section(json!({
                    "models": ["small"],
                    "tokens": 50_000,
                    "max_request_bytes": "64KiB",
                    "requests_per_minute": 10,
                }))),
                trainer: Some(section(json!({ "backends": ["cpu"], "gpu_seconds": 100 }))),
                simulator: Some(section(json!({ "envs": ["acrobot", "cartpole"], "steps": 500_000 }))),
                memory: Some(section(json!({ "bytes": "1MiB" }))),
                archive: Some(section(json!({}))),
                workbench: None,
                clock: None,
            }
        );
        assert_eq!(
            r.provenance,
            vec![
                line("limits.fuel", "2000000000", Source::Manifest, None),
                line("limits.memory", "256MiB", Source::Manifest, None),
                line("limits.wall", "20s", Source::Manifest, None),
                line("limits.stack", "512KiB", Source::Manifest, None),
                line("limits.table_elements", "100000", Source::PolicyDefault, None),
                line("limits.instances", "64", Source::PolicyDefault, None),
                line("limits.output", "64KiB", Source::Manifest, None),
                line("log.max_message", "4KiB", Source::PolicyDefault, None),
                line("log.max_bytes_per_call", "64KiB", Source::PolicyDefault, None),
                line("log.max_messages_per_call", "1000", Source::PolicyDefault, None),
                line("files", "data (read-only), scratch (read-write, quota 16MiB)", Source::Manifest, None),
                line("env", "LANG", Source::Manifest, None),
                line("sockets", "api.example.com:443", Source::Manifest, None),
                line("deterministic", "seed 7", Source::Manifest, None),
                line("llm.models", "[small]", Source::Manifest, None),
                line("llm.tokens", "50000", Source::Manifest, None),
                line("llm.max_request_bytes", "64KiB", Source::Manifest, None),
                line("llm.requests_per_minute", "10", Source::Manifest, None),
                line("trainer.backends", "[cpu]", Source::Manifest, None),
                line("trainer.gpu_seconds", "100", Source::Manifest, None),
                line("simulator.envs", "[acrobot, cartpole]", Source::Manifest, None),
                line("simulator.steps", "500000", Source::Manifest, None),
                line("memory.bytes", "1MiB", Source::Manifest, None),
                line("archive", "read-only view", Source::Manifest, None),
            ]
        );
        assert_eq!(r.denials, vec![]);
        assert_eq!(r.grant.services(), vec!["log", "llm", "trainer", "simulator", "memory", "archive"]);
        for name in ["log", "llm", "trainer", "simulator", "memory", "archive"] {
            assert!(r.grant.service_granted(name), "{name}");
        }
        assert!(!r.grant.service_granted("network"));
    }

    #[test]
    fn requests_above_ceilings_are_cut() {
        let m = manifest(
            r#"
[limits]
fuel = 99_000_000_000
memory = "2GiB"
wall = "10m"

[capabilities]
llm = { models = ["*"], tokens = 1_000_000, max_request_bytes = "1MiB", requests_per_minute = 1000 }
trainer = { gpu_seconds = 9999 }
simulator = { envs = ["cartpole"], steps = 2_000_000 }
memory = { bytes = "1GiB" }
"#,
        );
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(
            r.grant.limits,
            Limits { fuel: 10_000_000_000, memory: ByteSize(512 << 20), wall: secs(60), ..Limits::default() }
        );
        assert_eq!(
            r.grant.llm,
            Some(section(json!({
                "models": ["large", "small"],
                "tokens": 100_000,
                "max_request_bytes": "128KiB",
                "requests_per_minute": 30,
            })))
        );
        assert_eq!(r.grant.trainer, Some(section(json!({ "backends": ["cpu"], "gpu_seconds": 300 }))));
        assert_eq!(r.grant.simulator, Some(section(json!({ "envs": ["cartpole"], "steps": 1_000_000 }))));
        assert_eq!(r.grant.memory, Some(section(json!({ "bytes": "4MiB" }))));
        assert_eq!(
            r.provenance[..3],
            [
                line(
                    "limits.fuel",
                    "10000000000",
                    Source::PolicyCeiling,
                    Some("manifest asked 99000000000; ceiling 10000000000")
                ),
                line("limits.memory", "512MiB", Source::PolicyCeiling, Some("manifest asked 2GiB; ceiling 512MiB")),
                line("limits.wall", "60s", Source::PolicyCeiling, Some("manifest asked 600s; ceiling 60s")),
            ]
        );
        assert_eq!(
            rest(&r),
            vec![
                line(
                    "llm.models",
                    "[large, small]",
                    Source::PolicyCeiling,
                    Some("manifest asked [*]; policy allows [large, small]")
                ),
                line("llm.tokens", "100000", Source::PolicyCeiling, Some("manifest asked 1000000; ceiling 100000")),
                line(
                    "llm.max_request_bytes",
                    "128KiB",
                    Source::PolicyCeiling,
                    Some("manifest asked 1MiB; ceiling 128KiB")
                ),
                line("llm.requests_per_minute", "30", Source::PolicyCeiling, Some("manifest asked 1000; ceiling 30")),
                line(
                    "trainer.backends",
                    "[cpu]",
                    Source::PolicyCeiling,
                    Some("manifest asked [*]; policy allows [cpu]")
                ),
                line("trainer.gpu_seconds", "300", Source::PolicyCeiling, Some("manifest asked 9999; ceiling 300")),
                line("simulator.envs", "[cartpole]", Source::Manifest, None),
                line(
                    "simulator.steps",
                    "1000000",
                    Source::PolicyCeiling,
                    Some("manifest asked 2000000; ceiling 1000000")
                ),
                line("memory.bytes", "4MiB", Source::PolicyCeiling, Some("manifest asked 1GiB; ceiling 4MiB")),
            ]
        );
        assert_eq!(r.denials, vec![]);
        let expected: Vec<String> =
            r.provenance.iter().filter(|p| p.source == Source::PolicyCeiling).map(ToString::to_string).collect();
        assert_eq!(r.notes(), expected);
        assert_eq!(expected.len(), 11);
        assert_eq!(expected[1], "limits.memory = 512MiB (policy-ceiling: manifest asked 2GiB; ceiling 512MiB)");
    }

    #[test]
    fn optional_llm_fields_default_to_the_policy() {
        let r = resolve(&caps("llm = { tokens = 10 }"), &policy(), &Overrides::default());
        assert_eq!(
            rest(&r),
            vec![
                line(
                    "llm.models",
                    "[large, small]",
                    Source::PolicyCeiling,
                    Some("manifest asked [*]; policy allows [large, small]")
                ),
                line("llm.tokens", "10", Source::Manifest, None),
                line("llm.max_request_bytes", "128KiB", Source::PolicyDefault, None),
                line("llm.requests_per_minute", "30", Source::PolicyDefault, None),
            ]
        );
    }

    #[test]
    fn everything_denied_by_a_policy_that_allows_nothing() {
        let m = caps(
            r#"llm = { models = ["*"], tokens = 200_000 }
trainer = { gpu_seconds = 600 }
simulator = { envs = ["cartpole"], steps = 2_000_000 }
memory = { bytes = "1MiB" }
archive = {}
files = [{ path = "scratch", access = "read-write" }]
env = ["LANG"]
sockets = ["api.example.com:443"]
deterministic = { seed = 7 }"#,
        );
        let nothing = Policy::parse("[capabilities]\ndeterministic = { allowed = false }\n", "p.toml").unwrap();
        let r = resolve(&m, &nothing, &Overrides::default());
        assert_eq!(r.grant, Grant::minimal(Limits::default()));
        assert_eq!(
            r.denials,
            vec![
                denial("files", "scratch (read-write)", "the policy allows no file grants"),
                denial("env", "LANG", "not in the policy's env_allow"),
                denial("sockets", "api.example.com:443", "not in the policy's sockets_allow"),
                denial("deterministic", "seed 7", "the policy does not allow deterministic mode"),
                denial("llm", "models [*], tokens 200000", "the policy does not allow the llm service"),
                denial("trainer", "backends [*], gpu_seconds 600", "the policy does not allow the trainer service"),
                denial(
                    "simulator",
                    "envs [cartpole], steps 2000000",
                    "the policy does not allow the simulator service"
                ),
                denial("memory", "bytes 1MiB", "the policy does not allow the memory service"),
                denial("archive", "read-only view", "the policy does not allow the archive service"),
            ]
        );
        assert_eq!(r.provenance.len(), 10);
        match r.refusal() {
            Some(Error::Refused { what, detail }) => {
                assert_eq!(
                    what,
                    s(&[
                        "files",
                        "env",
                        "sockets",
                        "deterministic",
                        "llm",
                        "trainer",
                        "simulator",
                        "memory",
                        "archive"
                    ])
                );
                assert!(detail.starts_with(
                    "files `scratch (read-write)` denied: the policy allows no file grants; env `LANG` denied: not in the policy's env_allow; "
                ), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builtin_policy_denies_llm_sockets_env() {
        let m = caps(
            r#"llm = { tokens = 1 }
trainer = { backends = ["cuda"], gpu_seconds = 60 }
simulator = { envs = ["cartpole"], steps = 1000 }
memory = { bytes = "1MiB" }
archive = {}
env = ["LANG"]
sockets = ["api.example.com:443"]"#,
        );
        let r = resolve(&m, &Policy::default(), &Overrides::default());
        assert_eq!(r.grant.services(), vec!["log", "simulator", "memory", "archive"]);
        assert_eq!(
            r.denials,
            vec![
                denial("env", "LANG", "not in the policy's env_allow"),
                denial("sockets", "api.example.com:443", "not in the policy's sockets_allow"),
                denial("llm", "models [*], tokens 1", "the policy does not allow the llm service"),
                denial("trainer.backends", "cuda", "not in the policy's list [embedded]"),
                denial("trainer", "backends [cuda], gpu_seconds 60", "none of the requested backends is allowed"),
            ]
        );
    }

    #[test]
    fn names_outside_the_policy_are_denied_one_by_one() {
        let r = resolve(&caps(r#"llm = { models = ["small", "huge"], tokens = 5 }"#), &policy(), &Overrides::default());
        assert_eq!(r.grant.llm.as_ref().unwrap().models, s(&["small"]));
        assert_eq!(r.denials, vec![denial("llm.models", "huge", "not in the policy's list [large, small]")]);
        assert!(r.grant.llm.as_ref().unwrap().allows_model("small"));
        assert!(!r.grant.llm.as_ref().unwrap().allows_model("large"));

        let r = resolve(&caps(r#"llm = { models = ["huge"], tokens = 5 }"#), &policy(), &Overrides::default());
        assert_eq!(r.grant.llm, None);
        assert_eq!(
            r.denials,
            vec![
                denial("llm.models", "huge", "not in the policy's list [large, small]"),
                denial("llm", "models [huge], tokens 5", "none of the requested models is allowed"),
            ]
        );
        assert_eq!(rest(&r), vec![]);

        // A wildcard in the policy passes any name, and `*` asks for it.
        let r = resolve(&caps(r#"simulator = { steps = 5 }"#), &policy(), &Overrides::default());
        assert_eq!(r.grant.simulator, Some(section(json!({ "envs": ["*"], "steps": 5 }))));
        assert_eq!(rest(&r)[0], line("simulator.envs", "[*]", Source::Manifest, None));
        assert!(r.grant.simulator.as_ref().unwrap().allows_env("anything"));
    }

    #[test]
    fn files_past_the_policy_count_are_denied() {
        let m = caps(r#"files = [{ path = "c" }, { path = "a", access = "read-write" }, { path = "b" }]"#);
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(
            r.grant.files,
            vec![
                FileGrant { path: "a".into(), access: Access::ReadWrite, quota: Some(ByteSize(16 << 20)) },
                FileGrant { path: "c".into(), access: Access::ReadOnly, quota: None }
            ]
        );
        assert_eq!(r.denials, vec![denial("files", "b (read-only)", "the policy allows at most 2 file grants")]);
        let unlimited = Policy::parse("[capabilities]\nfiles = true\n", "p").unwrap();
        assert_eq!(resolve(&m, &unlimited, &Overrides::default()).grant.files.len(), 3);
    }

    #[test]
    fn secret_looking_env_needs_an_exact_entry() {
        let m = caps(r#"env = ["LANG", "HF_TOKEN", "OPENAI_API_KEY", "db_password", "HOME", "MyAuthHeader"]"#);
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(r.grant.env, s(&["HF_TOKEN", "LANG"]));
        let secret = |name: &str, marker: &str| {
            denial("env", name, &format!("looks like a secret (contains `{marker}`); only an exact entry in the policy's env_allow passes it"))
        };
        assert_eq!(
            r.denials,
            vec![
                secret("OPENAI_API_KEY", "KEY"),
                secret("db_password", "PASSWORD"),
                denial("env", "HOME", "not in the policy's env_allow"),
                secret("MyAuthHeader", "AUTH"),
            ]
        );

        // `*` passes any name that does not look like a secret, never a secret.
        let star = Policy::parse("[capabilities]\nenv_allow = [\"*\", \"HF_TOKEN\"]\n", "p").unwrap();
        let r = resolve(&m, &star, &Overrides::default());
        assert_eq!(r.grant.env, s(&["HF_TOKEN", "HOME", "LANG"]));
        assert_eq!(
            r.denials,
            vec![secret("OPENAI_API_KEY", "KEY"), secret("db_password", "PASSWORD"), secret("MyAuthHeader", "AUTH")]
        );

        // The exact entry is case-sensitive.
        let lower = Policy::parse("[capabilities]\nenv_allow = [\"hf_token\"]\n", "p").unwrap();
        let r = resolve(&caps(r#"env = ["HF_TOKEN"]"#), &lower, &Overrides::default());
        assert_eq!(r.grant.env, Vec::<String>::new());
        assert_eq!(r.denials, vec![secret("HF_TOKEN", "TOKEN")]);
    }

    #[test]
    fn sockets_private_and_loopback_need_the_exact_pair() {
        let m = caps(
            r#"sockets = ["api.example.com:443", "a.example.org:443", "10.0.0.5:8080", "10.0.0.6:8080",
 "cdn.example.net:8443", "127.0.0.1:8443", "[::1]:8443", "[fd00::1]:8443", "169.254.169.254:8443",
 "localhost:9000", "localhost:8443", "api.example.com:80", "evil.example.com:443"]"#,
        );
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(
            r.grant.sockets,
            s(&["10.0.0.5:8080", "a.example.org:443", "api.example.com:443", "cdn.example.net:8443", "localhost:9000"])
        );
        let private =
            |s: &str| denial("sockets", s, "a private or loopback address; the policy must list this exact pair");
        let unlisted = |s: &str| denial("sockets", s, "not in the policy's sockets_allow");
        assert_eq!(
            r.denials,
            vec![
                unlisted("10.0.0.6:8080"),
                private("127.0.0.1:8443"),
                private("[::1]:8443"),
                private("[fd00::1]:8443"),
                private("169.254.169.254:8443"),
                private("localhost:8443"),
                unlisted("api.example.com:80"),
                unlisted("evil.example.com:443"),
            ]
        );
        assert_eq!(
            rest(&r),
            vec![line(
                "sockets",
                "10.0.0.5:8080, a.example.org:443, api.example.com:443, cdn.example.net:8443, localhost:9000",
                Source::Manifest,
                None
            )]
        );
    }

    #[test]
    fn a_read_write_grant_gets_a_quota_cut_to_the_policy() {
        let p =
            Policy::parse("[capabilities]\nfiles = true\nfiles_quota = { default = \"8MiB\", max = \"64MiB\" }\n", "p")
                .unwrap();
        let m = caps(
            r#"files = [{ path = "a", access = "read-write" }, { path = "b", access = "read-write", quota = "1GiB" },
                        { path = "c", access = "read-write", quota = "1MiB" }, { path = "d" }]"#,
        );
        let r = resolve(&m, &p, &Overrides::default());
        let quotas: Vec<Option<ByteSize>> = r.grant.files.iter().map(|f| f.quota).collect();
        assert_eq!(quotas, [Some(ByteSize(8 << 20)), Some(ByteSize(64 << 20)), Some(ByteSize(1 << 20)), None]);
        assert_eq!(
            r.provenance_of("files.b.quota"),
            Some(&line("files.b.quota", "64MiB", Source::PolicyCeiling, Some("manifest asked 1GiB; ceiling 64MiB")))
        );
        // A quota on a read-only grant is a mistake in the manifest.
        let err = Manifest::parse(
            "[variant]\nname = \"v\"\nlanguage = \"wat\"\n[capabilities]\nfiles = [{ path = \"d\", quota = \"1MiB\" }]\n",
            "variant.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("a quota applies to read-write grants only"), "{err}");
    }

    #[test]
    fn a_manifest_built_in_code_is_checked_too() {
        let mut m = manifest("");
        m.capabilities.files = vec![
            FileGrant { path: "../etc".into(), access: Access::ReadWrite, quota: None },
            FileGrant { path: "ok".into(), access: Access::ReadOnly, quota: None },
            FileGrant { path: "ok".into(), access: Access::ReadWrite, quota: None },
        ];
        m.capabilities.env = s(&["LANG", "BAD=NAME"]);
        m.capabilities.sockets = s(&["no-port"]);
        let r = resolve(&m, &policy(), &Overrides::default());
        assert_eq!(r.grant.files, vec![FileGrant { path: "ok".into(), access: Access::ReadOnly, quota: None }]);
        assert_eq!(r.grant.env, s(&["LANG"]));
        assert_eq!(r.grant.sockets, Vec::<String>::new());
        assert_eq!(
            r.denials,
            vec![
                denial("files", "../etc (read-write)", "file path `../etc` contains `..`"),
                denial("files", "ok (read-write)", "the path is listed twice"),
                denial(
                    "env",
                    "BAD=NAME",
                    "`BAD=NAME` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit"
                ),
                denial("sockets", "no-port", "socket `no-port` is not `host:port`"),
            ]
        );
    }

    #[test]
    fn flags_tighten_but_never_loosen() {
        let m = manifest("[limits]\nfuel = 2_000_000_000\nmemory = \"2GiB\"\n");
        let tighten = Overrides { fuel: Some(1000), memory: Some(ByteSize(64 << 20)), wall: Some(secs(5)) };
        let r = resolve(&m, &policy(), &tighten);
        assert_eq!(
            r.grant.limits,
            Limits { fuel: 1000, memory: ByteSize(64 << 20), wall: secs(5), ..Limits::default() }
        );
        assert_eq!(
            r.provenance[..3],
            [
                line("limits.fuel", "1000", Source::Flag, Some("--fuel 1000 tightened 2000000000 (manifest)")),
                line(
                    "limits.memory",
                    "64MiB",
                    Source::Flag,
                    Some("--memory 64MiB tightened 512MiB (policy-ceiling); manifest asked 2GiB; ceiling 512MiB")
                ),
                line("limits.wall", "5s", Source::Flag, Some("--wall 5s tightened 10s (policy-default)")),
            ]
        );

        let loosen = Overrides { fuel: Some(3_000_000_000), memory: Some(ByteSize(1 << 30)), wall: Some(secs(60)) };
        let r = resolve(&m, &policy(), &loosen);
        assert_eq!(
            r.grant.limits,
            Limits { fuel: 2_000_000_000, memory: ByteSize(512 << 20), wall: secs(10), ..Limits::default() }
        );
        assert_eq!(
            r.provenance[..3],
            [
                line(
                    "limits.fuel",
                    "2000000000",
                    Source::Manifest,
                    Some("--fuel 3000000000 ignored: flags can only tighten")
                ),
                line(
                    "limits.memory",
                    "512MiB",
                    Source::PolicyCeiling,
                    Some("manifest asked 2GiB; ceiling 512MiB; --memory 1GiB ignored: flags can only tighten")
                ),
                line("limits.wall", "10s", Source::PolicyDefault, Some("--wall 60s ignored: flags can only tighten")),
            ]
        );

        // A flag equal to the value changes nothing.
        let same = Overrides { fuel: Some(2_000_000_000), memory: None, wall: None };
        assert_eq!(
            resolve(&m, &policy(), &same).provenance[0],
            line("limits.fuel", "2000000000", Source::Manifest, None)
        );
    }

    #[test]
    fn bare_files_get_the_defaults_and_log_only() {
        let r = resolve_bare(&policy(), &Overrides::default());
        assert_eq!(r.grant, Grant::minimal(default_limits()));
        assert_eq!(r.provenance, default_limit_lines());
        assert_eq!(r.denials, vec![]);

        let r = resolve_bare(&policy(), &Overrides { fuel: Some(5), ..Overrides::default() });
        assert_eq!(r.grant, Grant::minimal(Limits { fuel: 5, ..default_limits() }));

        let r = resolve_bare(&Policy::default(), &Overrides::default());
        assert_eq!(r.grant, Grant::minimal(Limits::default()));
    }

    #[test]
    fn builtin_defaults_above_a_programmatic_ceiling_are_cut() {
        let p = Policy { ceilings: Limits { memory: ByteSize(16 << 20), ..builtin_ceilings() }, ..Policy::default() };
        let r = resolve_bare(&p, &Overrides::default());
        assert_eq!(r.grant.limits.memory, ByteSize(16 << 20));
        assert_eq!(
            r.provenance[1],
            line(
                "limits.memory",
                "16MiB",
                Source::PolicyCeiling,
                Some("policy default 256MiB is above the ceiling 16MiB")
            )
        );
    }

    #[test]
    fn forced_deterministic_mode() {
        let forced = Policy::parse("[capabilities]\ndeterministic = { forced = true, seed = 42 }\n", "p").unwrap();
        let r = resolve(&manifest(""), &forced, &Overrides::default());
        assert_eq!(r.grant.deterministic, Some(42));
        assert_eq!(rest(&r), vec![line("deterministic", "seed 42", Source::PolicyForced, None)]);
        let r = resolve(&caps("deterministic = { seed = 7 }"), &forced, &Overrides::default());
        assert_eq!(r.grant.deterministic, Some(7));
        assert_eq!(rest(&r), vec![line("deterministic", "seed 7", Source::Manifest, None)]);
        assert_eq!(resolve_bare(&forced, &Overrides::default()).grant.deterministic, Some(42));
    }

    #[test]
    fn provenance_serializes_for_the_audit_log() {
        let r = resolve(&caps("memory = { bytes = \"1GiB\" }"), &policy(), &Overrides::default());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["provenance"][10],
            serde_json::json!({"field": "memory.bytes", "value": "4MiB", "source": "policy-ceiling", "note": "manifest asked 1GiB; ceiling 4MiB"})
        );
        assert_eq!(
            json["provenance"][0],
            serde_json::json!({"field": "limits.fuel", "value": "1000000000", "source": "policy-default"})
        );
        assert_eq!(r.provenance_of("memory.bytes").unwrap().source, Source::PolicyCeiling);
        assert_eq!(
            r.provenance_of("memory.bytes").unwrap().to_string(),
            "memory.bytes = 4MiB (policy-ceiling: manifest asked 1GiB; ceiling 4MiB)"
        );
        assert!(r.provenance_of("llm.tokens").is_none());
    }

    #[test]
    fn the_same_request_gives_the_same_digest() {
        let a = resolve(
            &caps(
                r#"env = ["LANG", "HF_TOKEN"]
sockets = ["api.example.com:443", "a.example.org:443"]"#,
            ),
            &policy(),
            &Overrides::default(),
        );
        let b = resolve(
            &caps(
                r#"env = ["HF_TOKEN", "LANG"]
sockets = ["a.example.org:443", "API.example.com:443"]"#,
            ),
            &policy(),
            &Overrides::default(),
        );
        assert_eq!(a.grant, b.grant);
        assert_eq!(a.grant.digest(), b.grant.digest());
    }
}
