//! `policy.toml`: the operator's defaults, ceilings and allowed capabilities.
//!
//! ```toml
//! [defaults]            # limits a manifest does not set (and all of a bare .wasm's)
//! fuel = 5_000_000_000
//! memory = "256MiB"
//! wall = "30s"
//!
//! [ceilings]            # the most any grant gets; requests above are cut down
//! fuel = 50_000_000_000
//! memory = "1GiB"
//! wall = "5m"
//!
//! [log]                 # the log service's caps, for every variant
//! max_message = "4KiB"
//! max_bytes_per_call = "64KiB"
//! max_messages_per_call = 1000
//!
//! [build]               # what a child built from proposed source may be
//! max_component = "64MiB"
//!
//! [capabilities]        # what may be granted at most; absent = never granted
//! llm       = { models = ["small", "large"], tokens = 1_000_000, max_request_bytes = "256KiB", requests_per_minute = 60, usd = 5.0 }   # usd: dollars at the host's prices
//! trainer   = { backends = ["embedded"], gpu_seconds = 3600 }
//! simulator = { envs = ["*"], steps = 10_000_000 }
//! memory    = { bytes = "16MiB" }
//! archive   = true
//! files     = 4                      # true (any number), false, or the most directories
//! files_quota = { default = "16MiB", max = "256MiB" }  # bytes per read-write directory
//! env_allow = ["LANG", "HF_TOKEN"]   # "*" = any name that does not look like a secret
//! sockets_allow = ["api.example.com:443", "*.example.org:443"]
//! deterministic = { allowed = true, forced = false, seed = 0 }
//! ```
//!
//! Keys in `[defaults]`, `[ceilings]` and `[log]` that a file leaves out
//! take the built-in values ([`Policy::default`]); a default above its
//! ceiling, written in the file, is an error, a built-in one is cut down.
//! **`[capabilities]` in a file is complete**: a capability it does not
//! name is not allowed, whatever the built-in policy allows (`deterministic`
//! excepted: it only takes powers away, so it is allowed unless the file
//! says otherwise).

use std::{fmt, net::IpAddr, path::Path, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::caps::service::{PolicyEntry, ServiceCaps};
use crate::services::Service;
use crate::{
    caps::{
        grant::{Limits, LogGrant},
        manifest::{self, error_at, parse_toml, LimitsSpec},
    },
    error::{Error, Result},
    units::{ByteSize, HumanDuration},
};

/// The operator's policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Limits used where a manifest says nothing, and for bare `.wasm` files.
    pub defaults: Limits,
    /// The most any grant may have.
    pub ceilings: Limits,
    /// The `log` service's caps, the same for every variant.
    pub log: LogGrant,
    /// What a child built from a proposal may be.
    pub build: BuildPolicy,
    /// What may be granted at most.
    pub capabilities: CapabilityPolicy,
}

/// `[build]` of a policy: checks on a child's built component before it can
/// run (its imports are checked against its grant as well).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildPolicy {
    /// The largest component a child may build to (default 64MiB, the most
    /// the runtime loads at all).
    #[serde(default = "default_max_component")]
    pub max_component: ByteSize,
}

fn default_max_component() -> ByteSize {
    ByteSize(64 << 20)
}

impl Default for BuildPolicy {
    fn default() -> Self {
        Self { max_component: default_max_component() }
    }
}

macro_rules! capability_policy {
    ([$($a:ident: $fa:ty,)*] [$($b:ident: $fb:ty,)*]) => {
        /// `[capabilities]` of a policy. [`Default`]: nothing allowed (what a
        /// file without the table means).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct CapabilityPolicy {
            $(
                #[doc = concat!("The `", stringify!($a), "` service; absent: never granted.")]
                #[serde(default, skip_serializing_if = "PolicyEntry::is_unset")]
                pub $a: ServicePolicy<$fa>,
            )*
            /// File grants (scratch directories).
            #[serde(default)]
            pub files: FilesPolicy,
            /// The byte quota of a read-write file grant.
            #[serde(default)]
            pub files_quota: FilesQuotaPolicy,
            /// Environment variable names that may be passed. `"*"` allows any name
            /// that does not look like a secret; a secret-looking name
            /// ([`secret_marker`]) passes only when listed here exactly.
            #[serde(default, deserialize_with = "de_env_allow")]
            pub env_allow: Vec<String>,
            /// `host:port` patterns the guest may connect to: `host` is a name, an IP
            /// address, `*.domain` (any subdomain) or `*`; `port` a number or `*`.
            /// Private and loopback addresses ([`is_internal_ip`], `localhost`,
            /// `*.local`, `*.internal`) pass only when listed as the exact pair.
            #[serde(default, deserialize_with = "de_sockets_allow")]
            pub sockets_allow: Vec<String>,
            /// Deterministic mode.
            #[serde(default)]
            pub deterministic: DeterministicPolicy,
            // The services added since 0.1.0 come after the keys above, so
            // the order of keys (in written policies and errors) holds.
            $(
                #[doc = concat!("The `", stringify!($b), "` service; absent: never granted.")]
                #[serde(default, skip_serializing_if = "PolicyEntry::is_unset")]
                pub $b: ServicePolicy<$fb>,
            )*
        }

        impl CapabilityPolicy {
            /// Every service as the built-in policy allows it
            /// ([`ServiceCaps::builtin_policy`]), and nothing else.
            fn builtin_services() -> Self {
                Self {
                    $($a: <<$fa as Service>::Grant as ServiceCaps>::builtin_policy(),)*
                    $($b: <<$fb as Service>::Grant as ServiceCaps>::builtin_policy(),)*
                    ..Self::default()
                }
            }
        }
    };
}

crate::services::registry!(capability_policy);

/// Service `S`'s key under a policy's `[capabilities]`
/// ([`ServiceCaps::PolicyEntry`]).
pub type ServicePolicy<S> = <<S as Service>::Grant as ServiceCaps>::PolicyEntry;

/// The byte quota of each read-write file grant: `default` where the
/// manifest sets none, requests above `max` are cut down to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesQuotaPolicy {
    /// The quota of a read-write grant whose manifest sets none.
    #[serde(default = "default_files_quota")]
    pub default: ByteSize,
    /// The largest quota a grant may have.
    #[serde(default = "max_files_quota")]
    pub max: ByteSize,
}

fn default_files_quota() -> ByteSize {
    ByteSize(16 << 20)
}

fn max_files_quota() -> ByteSize {
    ByteSize(256 << 20)
}

impl Default for FilesQuotaPolicy {
    /// 16 MiB by default, 256 MiB at most.
    fn default() -> Self {
        Self { default: default_files_quota(), max: max_files_quota() }
    }
}

/// How many file grants (scratch directories) a variant may have.
/// Written `false`, `true` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilesPolicy {
    /// `false`: none.
    #[default]
    Denied,
    /// `N`: at most N directories (the first N the manifest lists).
    AtMost(u32),
    /// `true`: any number.
    Unlimited,
}

impl FilesPolicy {
    /// The most directories allowed (`None`: no limit).
    pub fn max(self) -> Option<u32> {
        match self {
            FilesPolicy::Denied => Some(0),
            FilesPolicy::AtMost(n) => Some(n),
            FilesPolicy::Unlimited => None,
        }
    }
}

impl Serialize for FilesPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FilesPolicy::Denied => s.serialize_bool(false),
            FilesPolicy::Unlimited => s.serialize_bool(true),
            FilesPolicy::AtMost(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for FilesPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = FilesPolicy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or the most file grants allowed")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FilesPolicy, E> {
                Ok(if v { FilesPolicy::Unlimited } else { FilesPolicy::Denied })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FilesPolicy, E> {
                u32::try_from(v)
                    .map(FilesPolicy::AtMost)
                    .map_err(|_| E::custom("the number of file grants must be 0 to 4294967295"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FilesPolicy, E> {
                u32::try_from(v)
                    .map(FilesPolicy::AtMost)
                    .map_err(|_| E::custom("the number of file grants must be 0 to 4294967295"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether deterministic mode may be asked for, and whether it is imposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterministicPolicy {
    /// A manifest may ask for it (default true).
    #[serde(default = "yes")]
    pub allowed: bool,
    /// Every grant gets it, with the manifest's seed or `seed` (default false).
    #[serde(default)]
    pub forced: bool,
    /// The seed when forced and the manifest gives none (default 0).
    #[serde(default)]
    pub seed: u64,
}

fn yes() -> bool {
    true
}

impl Default for DeterministicPolicy {
    fn default() -> Self {
        Self { allowed: true, forced: false, seed: 0 }
    }
}

/// The built-in ceilings.
pub fn builtin_ceilings() -> Limits {
    Limits {
        fuel: 50_000_000_000,
        memory: ByteSize(1 << 30),
        wall: HumanDuration(Duration::from_secs(300)),
        stack: ByteSize(8 << 20),
        table_elements: 1_000_000,
        instances: 256,
        output: ByteSize(16 << 20),
    }
}

impl Default for Policy {
    /// The built-in policy, used when no `policy.toml` is given.
    ///
    /// Limits: [`Limits::default`] as defaults, [`builtin_ceilings`] as
    /// ceilings. Capabilities: what stays on this machine and is bounded by a
    /// budget the host meters is allowed with modest budgets — `simulator`
    /// (any embedded env, 10M steps), `trainer` (the `embedded` backend, 600
    /// s), `memory` (16MiB), `archive`, `clock`, up to 4 scratch
    /// directories, deterministic mode. What leaves the machine, costs money or reveals
    /// the host is not: no `llm`, no sockets, no environment variables.
    fn default() -> Self {
        Policy {
            defaults: Limits::default(),
            ceilings: builtin_ceilings(),
            log: LogGrant::default(),
            build: BuildPolicy::default(),
            capabilities: CapabilityPolicy { files: FilesPolicy::AtMost(4), ..CapabilityPolicy::builtin_services() },
        }
    }
}

/// `[log]` of a policy file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    max_message: Option<ByteSize>,
    max_bytes_per_call: Option<ByteSize>,
    max_messages_per_call: Option<u32>,
}

/// A policy file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    defaults: LimitsSpec,
    #[serde(default)]
    ceilings: LimitsSpec,
    #[serde(default)]
    log: LogSpec,
    #[serde(default)]
    build: BuildPolicy,
    #[serde(default = "nothing_allowed")]
    capabilities: CapabilityPolicy,
}

fn nothing_allowed() -> CapabilityPolicy {
    CapabilityPolicy::default()
}

/// `base` with the keys `spec` sets replaced.
pub(crate) fn fill(spec: &LimitsSpec, base: &Limits) -> Limits {
    Limits {
        fuel: spec.fuel.unwrap_or(base.fuel),
        memory: spec.memory.unwrap_or(base.memory),
        wall: spec.wall.unwrap_or(base.wall),
        stack: spec.stack.unwrap_or(base.stack),
        table_elements: spec.table_elements.unwrap_or(base.table_elements),
        instances: spec.instances.unwrap_or(base.instances),
        output: spec.output.unwrap_or(base.output),
    }
}

impl Policy {
    /// Read and validate a policy file. Errors: [`Error::Invalid`] (exit 2)
    /// when it cannot be read (the operator named a file that is not
    /// there) or naming `path:line:col` and the key when it is wrong.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!(
                "cannot read the policy file {}: {e}; give the path of an operator policy, \
                 or leave it out for the built-in policy",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The policy as a `policy.toml` that [`Policy::parse`] reads back to
    /// the same policy (`vivarium` can print the built-in one this way).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("policy serializes")
    }

    /// Parse and validate policy text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Policy> {
        let file: PolicyFile = parse_toml(text, origin)?;
        let builtin = Policy::default();
        let ceilings = fill(&file.ceilings, &builtin.ceilings);
        let d = &file.defaults;
        let over = |set: bool, field: &str, value: String, ceiling: String| -> Result<()> {
            if set {
                return Err(error_at(
                    text,
                    origin,
                    &format!("defaults.{field}"),
                    &format!("the default {value} is above the ceiling {ceiling}; lower it or raise ceilings.{field}"),
                ));
            }
            Ok(())
        };
        let raw = fill(d, &builtin.defaults);
        let c = &ceilings;
        if raw.fuel > c.fuel {
            over(d.fuel.is_some(), "fuel", raw.fuel.to_string(), c.fuel.to_string())?;
        }
        if raw.memory > c.memory {
            over(d.memory.is_some(), "memory", raw.memory.to_string(), c.memory.to_string())?;
        }
        if raw.wall > c.wall {
            over(d.wall.is_some(), "wall", raw.wall.to_string(), c.wall.to_string())?;
        }
        if raw.stack > c.stack {
            over(d.stack.is_some(), "stack", raw.stack.to_string(), c.stack.to_string())?;
        }
        if raw.table_elements > c.table_elements {
            over(
                d.table_elements.is_some(),
                "table_elements",
                raw.table_elements.to_string(),
                c.table_elements.to_string(),
            )?;
        }
        if raw.instances > c.instances {
            over(d.instances.is_some(), "instances", raw.instances.to_string(), c.instances.to_string())?;
        }
        if raw.output > c.output {
            over(d.output.is_some(), "output", raw.output.to_string(), c.output.to_string())?;
        }
        let det = &file.capabilities.deterministic;
        if det.forced && !det.allowed {
            return Err(error_at(text, origin, "capabilities.deterministic", "`forced = true` needs `allowed = true`"));
        }
        let log = LogGrant {
            max_message: file.log.max_message.unwrap_or(builtin.log.max_message),
            max_bytes_per_call: file.log.max_bytes_per_call.unwrap_or(builtin.log.max_bytes_per_call),
            max_messages_per_call: file.log.max_messages_per_call.unwrap_or(builtin.log.max_messages_per_call),
        };
        if file.build.max_component.0 == 0 {
            return Err(error_at(text, origin, "build.max_component", "must be above 0"));
        }
        Ok(Policy {
            defaults: raw.tightened(&ceilings),
            ceilings,
            log,
            build: file.build,
            capabilities: file.capabilities,
        })
    }
}

// ---------------------------------------------------------------------------
// Environment variables.

/// The markers that make an environment variable name look like a secret,
/// matched case-insensitively anywhere in the name.
pub const SECRET_MARKERS: [&str; 10] =
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "AUTH", "COOKIE", "SESSION"];

/// The first [`SECRET_MARKERS`] entry `name` contains (case-insensitive), if any.
pub fn secret_marker(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.into_iter().find(|m| upper.contains(m))
}

fn de_env_allow<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    manifest::check_items(&v, "name", |s| if s == "*" { Ok(()) } else { manifest::validate_env_name(s) })?;
    Ok(v)
}

// ---------------------------------------------------------------------------
// Sockets.

/// The host part of a `sockets_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.domain`: any name ending in `.domain` (not `domain` itself).
    Subdomains(String),
    /// One host name (lowercase) or IP address (canonical text).
    Exact(String),
}

/// A parsed `sockets_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPattern {
    /// Which hosts.
    pub host: HostPattern,
    /// Which port; `None`: any.
    pub port: Option<u16>,
}

impl SocketPattern {
    /// Parse `host:port` where host may be `*` or `*.domain` and port `*`.
    pub fn parse(s: &str) -> Result<SocketPattern, String> {
        let shown = manifest::shown(s);
        let (host, port) =
            manifest::split_host_port(s).ok_or_else(|| format!("socket pattern `{shown}` is not `host:port`"))?;
        let port = match port {
            "*" => None,
            p => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("socket pattern `{shown}`: port must be 1 to 65535 or `*`")),
            },
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            let domain = domain.to_ascii_lowercase();
            manifest::validate_hostname(&domain).map_err(|why| format!("socket pattern `{shown}`: {why}"))?;
            HostPattern::Subdomains(domain)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Exact(ip.to_string())
        } else {
            let h = host.to_ascii_lowercase();
            manifest::validate_hostname(&h).map_err(|why| format!("socket pattern `{shown}`: {why}"))?;
            HostPattern::Exact(h)
        };
        Ok(SocketPattern { host, port })
    }

    /// Whether the pattern names exactly this one pair (no wildcard).
    pub fn is_exact(&self, socket: &manifest::SocketSpec) -> bool {
        matches!(&self.host, HostPattern::Exact(h) if *h == socket.host) && self.port == Some(socket.port)
    }

    /// Whether the pattern covers the pair.
    pub fn matches(&self, socket: &manifest::SocketSpec) -> bool {
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomains(d) => socket.ip.is_none() && socket.host.ends_with(&format!(".{d}")),
            HostPattern::Exact(h) => *h == socket.host,
        };
        host_ok && self.port.is_none_or(|p| p == socket.port)
    }
}

fn de_sockets_allow<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    manifest::check_items(&v, "socket pattern", |s| SocketPattern::parse(s).map(drop))?;
    Ok(v)
}

/// Whether `ip` is not a public unicast address: loopback (127/8, ::1),
/// private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16,
/// fe80::/10, which holds cloud metadata endpoints), unspecified (0/8, ::),
/// carrier-grade NAT (100.64/10), multicast and broadcast; IPv4 addresses
/// mapped into IPv6 (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`) are judged as
/// the IPv4 address. The runtime should apply this to resolved addresses too.
pub fn is_internal_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_ip(&IpAddr::V4(v4));
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return is_internal_ip(&IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether the socket's host is internal: an [`is_internal_ip`] address, or
/// a name for this machine or the local network (`localhost`,
/// `*.localhost`, `*.local`, `*.internal`, `*.home.arpa`).
pub fn is_internal_host(socket: &manifest::SocketSpec) -> bool {
    match &socket.ip {
        Some(ip) => is_internal_ip(ip),
        None => {
            let h = socket.host.as_str();
            h == "localhost" || [".localhost", ".local", ".internal", ".home.arpa"].iter().any(|s| h.ends_with(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::manifest::parse_socket;
    use crate::caps::service::section;
    use serde_json::json;

    pub(crate) const EXAMPLE: &str = r#"[defaults]
fuel = 5_000_000_000
memory = "256MiB"
wall = "30s"

[ceilings]
fuel = 50_000_000_000
memory = "1GiB"
wall = "5m"

[log]
max_message = "4KiB"
max_bytes_per_call = "64KiB"
max_messages_per_call = 1000

[capabilities]
llm       = { models = ["small", "large"], tokens = 1_000_000, max_request_bytes = "256KiB", requests_per_minute = 60 }
trainer   = { backends = ["cpu"], gpu_seconds = 3600 }
simulator = { envs = ["*"], steps = 10_000_000 }
memory    = { bytes = "16MiB" }
archive   = true
files     = 4
env_allow = ["LANG", "HF_TOKEN"]
sockets_allow = ["api.example.com:443", "*.example.org:443"]
deterministic = { allowed = true, forced = false, seed = 0 }
"#;

    fn err(text: &str) -> String {
        match Policy::parse(text, "policy.toml") {
            Err(Error::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_builtin_policy() {
        let p = Policy::default();
        assert_eq!(p.defaults, Limits::default());
        assert_eq!(
            p.ceilings,
            Limits {
                fuel: 50_000_000_000,
                memory: ByteSize(1 << 30),
                wall: HumanDuration(Duration::from_secs(300)),
                stack: ByteSize(8 << 20),
                table_elements: 1_000_000,
                instances: 256,
                output: ByteSize(16 << 20),
            }
        );
        assert_eq!(p.log, LogGrant::default());
        let c = &p.capabilities;
        assert_eq!(c.llm, None);
        assert_eq!(c.trainer, Some(section(json!({ "backends": ["embedded"], "gpu_seconds": 600 }))));
        assert_eq!(c.simulator, Some(section(json!({ "envs": ["*"], "steps": 10_000_000 }))));
        assert_eq!(c.memory, Some(section(json!({ "bytes": "16MiB" }))));
        assert!(c.archive);
        assert_eq!(
            c.workbench,
            Some(section(json!({ "tries": 8, "tasks": 20, "build_seconds": 60, "fuel": 20_000_000_000u64 })))
        );
        assert!(c.clock);
        assert_eq!(c.files, FilesPolicy::AtMost(4));
        assert!(c.env_allow.is_empty());
        assert!(c.sockets_allow.is_empty());
        assert_eq!(c.deterministic, DeterministicPolicy { allowed: true, forced: false, seed: 0 });
    }

    #[test]
    fn the_builtin_policy_round_trips_as_a_file() {
        let text = Policy::default().to_toml();
        assert_eq!(Policy::parse(&text, "builtin.toml").unwrap(), Policy::default());
        let example = Policy::parse(EXAMPLE, "p").unwrap();
        assert_eq!(Policy::parse(&example.to_toml(), "again").unwrap(), example);
    }

    #[test]
    fn parses_the_example() {
        let p = Policy::parse(EXAMPLE, "policy.toml").unwrap();
        assert_eq!(p.defaults, Limits::default());
        assert_eq!(p.ceilings, builtin_ceilings());
        assert_eq!(p.log, LogGrant::default());
        assert_eq!(
            p.capabilities,
            CapabilityPolicy {
                llm: Some(section(json!({
                    "models": ["small", "large"],
                    "tokens": 1_000_000,
                    "max_request_bytes": "256KiB",
                    "requests_per_minute": 60,
                }))),
                trainer: Some(section(json!({ "backends": ["cpu"], "gpu_seconds": 3600 }))),
                simulator: Some(section(json!({ "envs": ["*"], "steps": 10_000_000 }))),
                memory: Some(section(json!({ "bytes": "16MiB" }))),
                archive: true,
                files: FilesPolicy::AtMost(4),
                files_quota: FilesQuotaPolicy::default(),
                env_allow: s(&["LANG", "HF_TOKEN"]),
                sockets_allow: s(&["api.example.com:443", "*.example.org:443"]),
                deterministic: DeterministicPolicy::default(),
                workbench: None,
                clock: false,
            }
        );
    }

    #[test]
    fn a_file_lists_every_capability_it_allows() {
        let p = Policy::parse("[defaults]\nfuel = 1000\n", "p.toml").unwrap();
        assert_eq!(p.defaults, Limits { fuel: 1000, ..Limits::default() });
        assert_eq!(p.ceilings, builtin_ceilings());
        assert_eq!(p.capabilities, nothing_allowed());
        assert_eq!(Policy::parse("", "p.toml").unwrap().capabilities, nothing_allowed());
        // Omitted service fields take their defaults.
        let p = Policy::parse(
            "[capabilities]\nllm = { tokens = 10 }\ntrainer = { gpu_seconds = 5 }\nsimulator = { steps = 9 }\n",
            "p",
        )
        .unwrap();
        assert_eq!(
            p.capabilities.llm,
            Some(section(json!({
                "models": ["*"],
                "tokens": 10,
                "max_request_bytes": "256KiB",
                "requests_per_minute": 60,
            })))
        );
        assert_eq!(p.capabilities.trainer, Some(section(json!({ "backends": ["*"], "gpu_seconds": 5 }))));
        assert_eq!(p.capabilities.simulator, Some(section(json!({ "envs": ["*"], "steps": 9 }))));
    }

    #[test]
    fn defaults_and_ceilings() {
        assert_eq!(
            err("[defaults]\nmemory = \"2GiB\"\n\n[ceilings]\nmemory = \"1GiB\"\n"),
            "policy.toml:2:10: defaults.memory: the default 2GiB is above the ceiling 1GiB; lower it or raise ceilings.memory"
        );
        assert_eq!(
            err("[defaults]\nfuel = 60_000_000_000\n"),
            "policy.toml:2:8: defaults.fuel: the default 60000000000 is above the ceiling 50000000000; lower it or raise \
             ceilings.fuel"
        );
        // A built-in default above a written ceiling is cut to it.
        let p = Policy::parse("[ceilings]\nmemory = \"64MiB\"\nwall = \"10s\"\n", "p").unwrap();
        assert_eq!(
            p.defaults,
            Limits { memory: ByteSize(64 << 20), wall: HumanDuration(Duration::from_secs(10)), ..Limits::default() }
        );
        assert_eq!(
            p.ceilings,
            Limits { memory: ByteSize(64 << 20), wall: HumanDuration(Duration::from_secs(10)), ..builtin_ceilings() }
        );
    }

    #[test]
    fn log_caps() {
        let p = Policy::parse("[log]\nmax_message = \"1KiB\"\n", "p").unwrap();
        assert_eq!(p.log, LogGrant { max_message: ByteSize(1024), ..LogGrant::default() });
    }

    #[test]
    fn invalid_policies() {
        assert_eq!(
            err("[capabilities]\nnetwork = true\n"),
            "policy.toml:2:1: capabilities.network: unknown field `network`, expected one of `llm`, `trainer`, \
             `simulator`, `memory`, `archive`, `files`, `files_quota`, `env_allow`, `sockets_allow`, `deterministic`, \
             `workbench`, `clock`; \
             fix the key or remove it"
        );
        assert_eq!(
            err("[ceilings]\nwall = \"forever\"\n"),
            "policy.toml:2:8: ceilings.wall: `forever` is not a duration; write e.g. `30s`, `500ms`, `2m` or `1h`"
        );
        assert_eq!(
            err("[capabilities]\nfiles = -1\n"),
            "policy.toml:2:9: capabilities.files: the number of file grants must be 0 to 4294967295"
        );
        assert_eq!(
            err("[capabilities]\nfiles = \"many\"\n"),
            "policy.toml:2:9: capabilities.files: invalid type: string \"many\", expected true, false or the most file \
             grants allowed"
        );
        assert_eq!(
            err("[capabilities]\nenv_allow = [\"LANG\", \"BAD NAME\"]\n"),
            "policy.toml:2:22: capabilities.env_allow[1]: `BAD NAME` is not a valid environment variable name; use \
             letters, digits and `_`, not starting with a digit"
        );
        assert_eq!(
            err("[capabilities]\nsockets_allow = [\"example.com:http\"]\n"),
            "policy.toml:2:18: capabilities.sockets_allow[0]: socket pattern `example.com:http`: port must be 1 to \
             65535 or `*`"
        );
        assert_eq!(
            err("[capabilities]\ndeterministic = { allowed = false, forced = true }\n"),
            "policy.toml:2:17: capabilities.deterministic: `forced = true` needs `allowed = true`"
        );
        assert_eq!(
            err("[capabilities]\nllm = { models = [\"a\"] }\n"),
            "policy.toml:2:7: capabilities.llm: missing field `tokens`; add it"
        );
    }

    #[test]
    fn files_policy_spellings() {
        let files = |v: &str| Policy::parse(&format!("[capabilities]\nfiles = {v}\n"), "p").unwrap().capabilities.files;
        assert_eq!(files("true"), FilesPolicy::Unlimited);
        assert_eq!(files("false"), FilesPolicy::Denied);
        assert_eq!(files("0"), FilesPolicy::AtMost(0));
        assert_eq!(files("3"), FilesPolicy::AtMost(3));
        assert_eq!(FilesPolicy::Unlimited.max(), None);
        assert_eq!(FilesPolicy::Denied.max(), Some(0));
        assert_eq!(serde_json::to_string(&FilesPolicy::AtMost(3)).unwrap(), "3");
        assert_eq!(serde_json::to_string(&FilesPolicy::Unlimited).unwrap(), "true");
    }

    #[test]
    fn secret_markers() {
        assert_eq!(secret_marker("OPENAI_API_KEY"), Some("KEY"));
        assert_eq!(secret_marker("github_token"), Some("TOKEN"));
        assert_eq!(secret_marker("AwsSecretAccess"), Some("SECRET"));
        assert_eq!(secret_marker("DB_PASSWORD"), Some("PASSWORD"));
        assert_eq!(secret_marker("PGPASSWD"), Some("PASSWD"));
        assert_eq!(secret_marker("GOOGLE_APPLICATION_CREDENTIALS"), Some("CREDENTIAL"));
        assert_eq!(secret_marker("HTTP_AUTHORIZATION"), Some("AUTH"));
        assert_eq!(secret_marker("LANG"), None);
        assert_eq!(secret_marker("HOME"), None);
        assert_eq!(secret_marker("MONKEY"), Some("KEY"));
    }

    #[test]
    fn internal_addresses() {
        let internal = [
            "127.0.0.1",
            "127.5.5.5",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for ip in internal {
            assert!(is_internal_ip(&ip.parse().unwrap()), "{ip} should be internal");
        }
        let public =
            ["8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"];
        for ip in public {
            assert!(!is_internal_ip(&ip.parse().unwrap()), "{ip} should be public");
        }
        for host in [
            "localhost:80",
            "foo.localhost:80",
            "printer.local:631",
            "metadata.google.internal:80",
            "nas.home.arpa:443",
        ] {
            assert!(is_internal_host(&parse_socket(host).unwrap()), "{host}");
        }
        assert!(!is_internal_host(&parse_socket("api.example.com:443").unwrap()));
    }

    #[test]
    fn socket_patterns() {
        let pat = |p: &str| SocketPattern::parse(p).unwrap();
        let sock = |s: &str| parse_socket(s).unwrap();
        assert!(pat("api.example.com:443").is_exact(&sock("API.example.com:443")));
        assert!(!pat("api.example.com:443").matches(&sock("api.example.com:80")));
        assert!(pat("*.example.org:443").matches(&sock("a.b.example.org:443")));
        assert!(!pat("*.example.org:443").matches(&sock("example.org:443")));
        assert!(!pat("*.example.org:443").matches(&sock("badexample.org:443")));
        assert!(pat("api.example.com:*").matches(&sock("api.example.com:8443")));
        assert!(!pat("api.example.com:*").is_exact(&sock("api.example.com:8443")));
        assert!(pat("*:*").matches(&sock("10.0.0.1:22")));
        assert!(pat("[::1]:8080").is_exact(&sock("[0:0:0:0:0:0:0:1]:8080")));
        assert!(pat("*:443").matches(&sock("[2606:4700::1111]:443")));
        assert_eq!(SocketPattern::parse("*.*:1").unwrap_err(), "socket pattern `*.*:1`: `*` is not a valid host name");
        assert_eq!(SocketPattern::parse("nope").unwrap_err(), "socket pattern `nope` is not `host:port`");
    }
}
