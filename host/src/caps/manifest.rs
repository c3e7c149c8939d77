//! `variant.toml`: what a variant is and what it asks for.
//!
//! ```toml
//! [variant]
//! name = "baseline"                # a safe identifier: letters, digits, `-`, `_`
//! language = "rust"                # rust | python | javascript | c | wat
//! builder = "cargo"                # optional; the build module's default per language
//! target = "wasm32-wasip2"         # optional
//! description = "echoes the task"  # optional
//!
//! [limits]                         # every key optional; the policy's defaults fill gaps
//! fuel = 5_000_000_000             # per call
//! memory = "256MiB"
//! wall = "30s"                     # per call, host calls included
//! stack = "1MiB"
//! output = "1MiB"                  # the largest result the guest may hand back
//!
//! [capabilities]                   # every key optional; absent = not requested
//! llm       = { models = ["*"], tokens = 200_000 }   # + max_request_bytes, requests_per_minute, usd
//! trainer   = { backends = ["embedded"], gpu_seconds = 600 }
//! simulator = { envs = ["cartpole"], steps = 2_000_000 }
//! memory    = { bytes = "1MiB" }
//! archive   = {}
//! files     = [{ path = "scratch", access = "read-write", quota = "16MiB" }]
//!                                  # access defaults to read-only; quota (read-write
//!                                  # only) to the policy's files_quota.default
//! env       = []                   # names of environment variables; secrets never
//! sockets   = ["api.example.com:443"]
//! deterministic = { seed = 7 }
//! ```
//!
//! Name lists (`models`, `backends`, `envs`) default to `["*"]`: any name
//! the policy allows. Every table rejects unknown keys. Every error names the file, the line
//! and column, and the key (`variants/x/variant.toml:7:1: capabilities.gpu:
//! unknown field `gpu`, expected one of …; fix the key or remove it`).
//! Validation of single values (names, paths, sockets) happens while the
//! file is read, so those errors carry the position of the offending value.

use std::{fmt, net::IpAddr, ops::Range, path::Path};

use serde::{de, de::DeserializeOwned, Deserialize, Deserializer, Serialize};

use crate::caps::service::ServiceCaps;
use crate::services::Service;
use crate::{
    caps::grant::{Access, FileGrant},
    error::{Error, Result},
    units::{ByteSize, HumanDuration},
};

/// The manifest's file name at the root of a variant tree: the one place
/// it is spelled (re-exported as [`crate::variant::MANIFEST`] and
/// [`crate::guard::MANIFEST_FILE`]).
pub const MANIFEST_FILE: &str = "variant.toml";

/// A variant's `variant.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Who the variant is.
    pub variant: VariantInfo,
    /// Requested per-call limits; absent keys take the policy's defaults.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Requested capabilities; absent keys are not requested.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// The `[variant]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantInfo {
    /// A safe identifier: 1–64 ASCII letters, digits, `-` or `_`, starting
    /// with a letter or digit.
    #[serde(deserialize_with = "de_name")]
    pub name: String,
    /// The source language.
    pub language: Language,
    /// The builder to use instead of the language's default (a plain token).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_token")]
    pub builder: Option<String>,
    /// The build target (e.g. `wasm32-wasip2`; a plain token).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_token")]
    pub target: Option<String>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A variant's source language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust, built with cargo for a wasm target.
    Rust,
    /// Python, via componentize-py.
    Python,
    /// JavaScript, via componentize-js.
    Javascript,
    /// C, via clang + wit-component.
    C,
    /// The component text format, parsed in process.
    Wat,
}

impl Language {
    /// All languages, in manifest spelling order.
    pub const ALL: [Language; 5] = [Language::Rust, Language::Python, Language::Javascript, Language::C, Language::Wat];

    /// The manifest spelling (`rust`, `python`, `javascript`, `c`, `wat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::C => "c",
            Language::Wat => "wat",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Language::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown language `{s}`; use rust, python, javascript, c or wat"))
    }
}

/// A partial set of limits: the manifest's `[limits]`, and the policy's
/// `[defaults]` and `[ceilings]` before the built-in values fill the gaps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Fuel per call (zero is refused: no call could run).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_fuel")]
    pub fuel: Option<u64>,
    /// Linear memory per call (zero is refused).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_memory")]
    pub memory: Option<ByteSize>,
    /// Wall-clock time per call (zero is refused).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_wall")]
    pub wall: Option<HumanDuration>,
    /// Wasm stack per call (zero is refused).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_opt_stack")]
    pub stack: Option<ByteSize>,
    /// Table elements across all tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_elements: Option<u64>,
    /// Core and component instances per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// The largest result the guest may hand back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
}

macro_rules! capabilities {
    ([$($a:ident: $fa:ty,)*] [$($b:ident: $fb:ty,)*]) => {
        /// The `[capabilities]` table: what the variant asks for.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Capabilities {
            $(
                #[doc = concat!("The `", stringify!($a), "` service.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $a: Option<ServiceRequest<$fa>>,
            )*
            /// Scratch directories; paths relative, unique and not nested in each other.
            #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_files")]
            pub files: Vec<FileGrant>,
            /// Environment variable names (identifiers), unique.
            #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_env")]
            pub env: Vec<String>,
            /// `host:port` pairs, unique; hosts are kept lowercase.
            #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_sockets")]
            pub sockets: Vec<String>,
            /// Deterministic mode: seeded randomness and a virtual clock.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub deterministic: Option<DeterministicRequest>,
            // The services added since 0.1.0 come after the keys above, so
            // the order of keys (in written manifests and errors) holds.
            $(
                #[doc = concat!("The `", stringify!($b), "` service.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $b: Option<ServiceRequest<$fb>>,
            )*
        }
    };
}

crate::services::registry!(capabilities);

/// What service `S`'s key under `[capabilities]` asks for.
pub type ServiceRequest<S> = <<S as Service>::Grant as ServiceCaps>::Request;

/// `deterministic = { seed = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterministicRequest {
    /// The seed of the guest's randomness.
    pub seed: u64,
}

impl Manifest {
    /// Read and validate `path`. Errors: [`Error::Io`] when it cannot be
    /// read, [`Error::Invalid`] (exit 2) naming `path:line:col` and the key.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate manifest text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        parse_toml(text, origin)
    }

    /// The manifest in TOML (what `vivarium init` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("manifest serializes")
    }
}

// ---------------------------------------------------------------------------
// Validation of single values. Each runs inside deserialization, so its
// error carries the value's position.

/// Whether `name` is a safe variant name: 1–64 ASCII letters, digits, `-`
/// or `_`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a safe name; use 1-64 letters, digits, `-` or `_`, starting with a letter or digit",
            shown(name)
        ))
    }
}

/// Whether `path` is a safe file-grant path: relative, `/`-separated, no
/// empty, `.` or `..` component, no backslash, NUL or control character,
/// at most 255 bytes.
pub fn validate_rel_path(path: &str) -> Result<(), String> {
    let display = shown(path);
    let why = if path.is_empty() {
        Some("is empty")
    } else if path.len() > 255 {
        Some("is longer than 255 bytes")
    } else if path.contains('\0') {
        Some("contains NUL")
    } else if path.chars().any(char::is_control) {
        Some("contains a control character")
    } else if path.contains('\\') {
        Some("contains a backslash; separate components with `/`")
    } else if path.starts_with('/') || Path::new(path).is_absolute() || path.as_bytes().get(1) == Some(&b':') {
        Some("is absolute; give a path relative to the run's scratch area")
    } else if path.split('/').any(|c| c == "..") {
        Some("contains `..`")
    } else if path.split('/').any(|c| c == ".") {
        Some("contains a `.` component")
    } else if path.split('/').any(str::is_empty) {
        Some("has an empty component (`//` or a trailing `/`)")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!("file path `{display}` {why}")),
    }
}

/// Whether `name` is a valid environment variable name: an identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn validate_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit",
            shown(name)
        ))
    }
}

/// A parsed `host:port` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// The host: a lowercase DNS name, or an IP address (IPv6 without brackets).
    pub host: String,
    /// The IP address when the host is one.
    pub ip: Option<IpAddr>,
    /// The port, 1–65535.
    pub port: u16,
}

impl SocketSpec {
    /// The canonical `host:port` form (`[v6]:port` for IPv6, host lowercase).
    pub fn canonical(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Some(ip) => format!("{ip}:{}", self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Parse a manifest socket: `host:port` or `[v6]:port`, exact (no
/// wildcards). Hosts are DNS names (labels of letters, digits and `-`) whose
/// last label is not numeric, or IP literals; numeric forms some resolvers
/// accept (`127.1`, `2130706433`, `0x7f000001`) are refused as ambiguous.
pub fn parse_socket(s: &str) -> Result<SocketSpec, String> {
    let display = shown(s);
    let (host, port) = split_host_port(s).ok_or_else(|| format!("socket `{display}` is not `host:port`"))?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("socket `{display}`: port `{}` is not a number from 1 to 65535", shown(port))),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketSpec { host: ip.to_string(), ip: Some(ip), port });
    }
    let host = host.to_ascii_lowercase();
    validate_hostname(&host).map_err(|why| format!("socket `{display}`: {why}"))?;
    Ok(SocketSpec { host, ip: None, port })
}

/// Split `host:port` / `[v6]:port`; `None` when there is no port.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Whether `host` (lowercase) is a plausible DNS name.
pub(crate) fn validate_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 253 {
        return Err("host must be 1-253 characters".into());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!("`{}` is not a valid host name", shown(host)));
        }
    }
    let last = host.rsplit('.').next().unwrap_or_default();
    let hex = last.strip_prefix("0x").is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    if last.chars().all(|c| c.is_ascii_digit()) || hex {
        return Err(format!("`{}` is an ambiguous numeric address; write the IP address in dotted form", shown(host)));
    }
    Ok(())
}

/// Whether `name` is a valid model, backend or environment name, or the wildcard.
fn validate_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_graphic())
        && (name == "*" || !name.contains('*'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name; use printable characters without spaces, or `*` alone for any",
            shown(name)
        ))
    }
}

pub(crate) fn any() -> Vec<String> {
    vec!["*".to_string()]
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    validate_name(&s).map_err(de::Error::custom)?;
    Ok(s)
}

// A limit of zero loads, then fails every call: refuse it where it is
// written, with the key's position.

fn de_opt_fuel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("zero fuel lets no call run; give a positive number, e.g. 500_000_000")),
        n => Ok(Some(n)),
    }
}

fn de_opt_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    match ByteSize::deserialize(d)? {
        ByteSize(0) => Err(de::Error::custom("zero memory lets no call run; give a size, e.g. \"16MiB\"")),
        m => Ok(Some(m)),
    }
}

fn de_opt_stack<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    match ByteSize::deserialize(d)? {
        ByteSize(0) => Err(de::Error::custom("a zero stack lets no call run; give a size, e.g. \"1MiB\"")),
        m => Ok(Some(m)),
    }
}

fn de_opt_wall<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    let w = HumanDuration::deserialize(d)?;
    if w.0.is_zero() {
        return Err(de::Error::custom("a zero wall-clock limit lets no call run; give a duration, e.g. \"5s\""));
    }
    Ok(Some(w))
}

fn de_opt_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(de::Error::custom(format!(
            "`{}` is not a plain token; use letters, digits, `-`, `_` and `.`",
            shown(&s)
        )));
    }
    Ok(Some(s))
}

/// Validate each item of a list; an error names the item as `#index: `,
/// which [`describe_toml_error`] turns into the item's own key and position.
pub(crate) fn check_items<E: de::Error>(
    items: &[String],
    what: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), E> {
    for (i, x) in items.iter().enumerate() {
        check(x).map_err(|why| E::custom(format!("#{i}: {why}")))?;
        if items[..i].contains(x) {
            return Err(E::custom(format!("#{i}: {what} `{}` is listed twice", shown(x))));
        }
    }
    Ok(())
}

/// `s` with control characters escaped, for messages.
pub(crate) fn shown(s: &str) -> String {
    crate::text::one_line(s)
}

/// Model, backend or environment names: non-empty, valid, unique.
pub(crate) fn de_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(de::Error::custom("the list is empty; name at least one, or `*` for any"));
    }
    check_items(&v, "name", validate_service_name)?;
    Ok(v)
}

fn de_env<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    check_items(&v, "environment variable", validate_env_name)?;
    Ok(v)
}

fn de_sockets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    let mut canonical = Vec::with_capacity(v.len());
    for (i, s) in v.iter().enumerate() {
        let c = parse_socket(s).map_err(|why| de::Error::custom(format!("#{i}: {why}")))?.canonical();
        if canonical.contains(&c) {
            return Err(de::Error::custom(format!("#{i}: socket `{c}` is listed twice")));
        }
        canonical.push(c);
    }
    Ok(canonical)
}

fn de_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileGrant>, D::Error> {
    fn read_only() -> Access {
        Access::ReadOnly
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileSpec {
        path: String,
        #[serde(default = "read_only")]
        access: Access,
        #[serde(default)]
        quota: Option<ByteSize>,
    }
    let specs = Vec::<FileSpec>::deserialize(d)?;
    let v: Vec<FileGrant> =
        specs.into_iter().map(|f| FileGrant { path: f.path, access: f.access, quota: f.quota }).collect();
    for (i, a) in v.iter().enumerate() {
        validate_rel_path(&a.path).map_err(|why| de::Error::custom(format!("#{i}: {why}")))?;
        if a.access == Access::ReadOnly && a.quota.is_some() {
            return Err(de::Error::custom(format!(
                "#{i}: file path `{}` is read-only; a quota applies to read-write grants only (drop `quota`, or set access = \"read-write\")",
                a.path
            )));
        }
        for b in &v[..i] {
            if a.path == b.path {
                return Err(de::Error::custom(format!("#{i}: file path `{}` is listed twice", a.path)));
            }
            let (outer, inner) = if a.path.len() < b.path.len() { (a, b) } else { (b, a) };
            if inner.path.starts_with(&format!("{}/", outer.path)) {
                return Err(de::Error::custom(format!(
                    "#{i}: file path `{}` is inside `{}`; grant one directory or the other",
                    inner.path, outer.path
                )));
            }
        }
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// TOML errors with file:line:col and the key.

/// Deserialize `text` as `T`; an error becomes [`Error::Invalid`] naming
/// `origin:line:col`, the dotted key and a hint.
pub(crate) fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::Invalid(describe_toml_error(&e, text, origin)))
}

/// `origin:line:col: key: message; hint` for a TOML error.
///
/// A message `#N: …` from a list check ([`check_items`]) points at the
/// list's N-th item: the key becomes `list[N]`, the position the item's.
pub(crate) fn describe_toml_error(e: &toml::de::Error, text: &str, origin: &str) -> String {
    let mut msg = e.message().trim_end();
    let mut item = None;
    if let Some((n, rest)) = msg.strip_prefix('#').and_then(|m| m.split_once(": ")) {
        if let Ok(n) = n.parse::<usize>() {
            item = Some(n);
            msg = rest;
        }
    }
    let hint = if msg.starts_with("unknown field") {
        "; fix the key or remove it"
    } else if msg.starts_with("unknown variant") {
        "; use one of the listed values"
    } else if msg.starts_with("missing field") {
        "; add it"
    } else {
        ""
    };
    let span = match e.span() {
        Some(span) if span != (0..0) => span,
        _ => return format!("{origin}: {msg}{hint}"),
    };
    let mut at = span.start;
    let mut key = key_at(text, &span);
    if let (Some(n), Some(list)) = (item, &key) {
        let item_key = format!("{list}[{n}]");
        if let Some((_, s)) = spans(text).into_iter().find(|(p, _)| *p == item_key) {
            at = s.start;
            key = Some(item_key);
        }
    }
    let (line, col) = line_col(text, at);
    match key {
        Some(key) => format!("{origin}:{line}:{col}: {key}: {msg}{hint}"),
        None => format!("{origin}:{line}:{col}: {msg}{hint}"),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A TOML document as keys and values with their spans, just enough to
/// name the key an error span points into.
enum Node {
    Table(Vec<(Sp<String>, Sp<Node>)>),
    Array(Vec<Sp<Node>>),
    Leaf,
}

/// A value and its span, when the TOML deserializer knows one.
///
/// This speaks the protocol of `toml::Spanned` (a struct with these magic
/// names), but also accepts the plain value: `toml::Spanned` fails outright
/// on tables the document creates implicitly (`[capabilities.llm]` creates
/// `capabilities`), which have no span. Should the protocol ever change,
/// every span is `None` and messages lose the key, not the position.
struct Sp<T> {
    span: Option<Range<usize>>,
    value: T,
}

const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de> Deserialize<'de> for Sp<String> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Sp<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Sp<String>, E> {
                Ok(Sp { span: None, value: v.to_string() })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Sp<String>, A::Error> {
                let (span, value) = read_spanned(&mut map)?;
                Ok(Sp { span, value })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V)
    }
}

impl<'de> Deserialize<'de> for Sp<Node> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Sp<Node>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Sp<Node>, E> {
                Ok(Sp { span: None, value: Node::Leaf })
            }
            fn visit_i64<E>(self, _: i64) -> Result<Sp<Node>, E> {
                Ok(Sp { span: None, value: Node::Leaf })
            }
            fn visit_u64<E>(self, _: u64) -> Result<Sp<Node>, E> {
                Ok(Sp { span: None, value: Node::Leaf })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Sp<Node>, E> {
                Ok(Sp { span: None, value: Node::Leaf })
            }
            fn visit_str<E>(self, _: &str) -> Result<Sp<Node>, E> {
                Ok(Sp { span: None, value: Node::Leaf })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Sp<Node>, A::Error> {
                Ok(Sp { span: None, value: NodeVisitor.visit_seq(seq)? })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Sp<Node>, A::Error> {
                // Either the spanned protocol or a table without a span.
                let Some(first) = map.next_key::<Sp<String>>()? else {
                    return Ok(Sp { span: None, value: Node::Table(Vec::new()) });
                };
                if first.value == SPANNED_START {
                    let start: usize = map.next_value()?;
                    let (span, value) = read_spanned_rest(&mut map, start)?;
                    return Ok(Sp { span, value });
                }
                let mut entries = vec![(first, map.next_value()?)];
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Sp { span: None, value: Node::Table(entries) })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V)
    }
}

/// The spanned protocol after its first key: `start` (read), `end`, `value`.
fn read_spanned_rest<'de, A: de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    start: usize,
) -> Result<(Option<Range<usize>>, T), A::Error> {
    let mut end = None;
    let mut value = None;
    while let Some(key) = map.next_key::<String>()? {
        match key.as_str() {
            SPANNED_END => end = Some(map.next_value::<usize>()?),
            SPANNED_VALUE => value = Some(map.next_value::<T>()?),
            _ => return Err(de::Error::custom("unexpected key in a spanned value")),
        }
    }
    match (end, value) {
        (Some(end), Some(value)) => Ok((Some(start..end), value)),
        _ => Err(de::Error::custom("incomplete spanned value")),
    }
}

/// The whole spanned protocol: `start`, `end`, `value`.
fn read_spanned<'de, A: de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
) -> Result<(Option<Range<usize>>, T), A::Error> {
    match map.next_key::<String>()?.as_deref() {
        Some(SPANNED_START) => {
            let start: usize = map.next_value()?;
            read_spanned_rest(map, start)
        }
        _ => Err(de::Error::custom("expected a spanned value")),
    }
}

struct NodeVisitor;

impl<'de> de::Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// The dotted key (`capabilities.files[1].path`) whose key or value the
/// error span points into; the innermost one wins.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    if span.start == 0 && span.end == 0 {
        return None;
    }
    let mut best: Option<(usize, String)> = None;
    for (path, s) in spans(text) {
        let contains = s.start <= span.start && span.end <= s.end && (s.start < s.end || s.start == span.start);
        if contains && best.as_ref().is_none_or(|(len, _)| s.end - s.start <= *len) {
            best = Some((s.end - s.start, path));
        }
    }
    best.map(|(_, p)| p)
}

/// Every key and value of `text` as `(dotted path, span)`, parents before
/// children, a key's own span before its value's.
fn spans(text: &str) -> Vec<(String, Range<usize>)> {
    fn walk(node: &Node, path: &str, out: &mut Vec<(String, Range<usize>)>) {
        match node {
            Node::Table(entries) => {
                for (k, v) in entries {
                    let p = if path.is_empty() { k.value.clone() } else { format!("{path}.{}", k.value) };
                    out.extend(k.span.clone().map(|s| (p.clone(), s)));
                    out.extend(v.span.clone().map(|s| (p.clone(), s)));
                    walk(&v.value, &p, out);
                }
            }
            Node::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.extend(v.span.clone().map(|s| (p.clone(), s)));
                    walk(&v.value, &p, out);
                }
            }
            Node::Leaf => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(root) = toml::from_str::<Node>(text) {
        walk(&root, "", &mut out);
    }
    out
}

/// `origin:line:col: key: message` for a problem found after parsing, at
/// the value of the dotted `key` (or its key when the value has no span).
pub(crate) fn error_at(text: &str, origin: &str, key: &str, msg: &str) -> Error {
    let found = spans(text).into_iter().rev().find(|(p, _)| p == key).map(|(_, s)| s);
    match found {
        Some(s) => {
            let (line, col) = line_col(text, s.start);
            Error::Invalid(format!("{origin}:{line}:{col}: {key}: {msg}"))
        }
        None => Error::Invalid(format!("{origin}: {key}: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::service::section;
    use serde_json::json;

    const FULL: &str = r#"[variant]
name = "baseline"
language = "rust"
builder = "cargo"
target = "wasm32-wasip2"
description = "the example"

[limits]
fuel = 5_000_000_000
memory = "256MiB"
wall = "30s"
stack = "1MiB"
output = "64KiB"

[capabilities]
llm       = { models = ["*"], tokens = 200_000 }
trainer   = { gpu_seconds = 600 }
simulator = { envs = ["cartpole"], steps = 2_000_000 }
memory    = { bytes = "1MiB" }
archive   = {}
files     = [{ path = "scratch", access = "read-write" }, { path = "data/in" }]
env       = ["LANG"]
sockets   = ["API.Example.com:443", "[::1]:8080"]
deterministic = { seed = 7 }
"#;

    fn err(text: &str) -> String {
        match Manifest::parse(text, "variants/x/variant.toml") {
            Err(Error::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn with_caps(caps: &str) -> String {
        format!("[variant]\nname = \"x\"\nlanguage = \"wat\"\n\n[capabilities]\n{caps}\n")
    }

    #[test]
    fn parses_the_full_example() {
        let m = Manifest::parse(FULL, "variant.toml").unwrap();
        assert_eq!(
            m.variant,
            VariantInfo {
                name: "baseline".into(),
                language: Language::Rust,
                builder: Some("cargo".into()),
                target: Some("wasm32-wasip2".into()),
                description: Some("the example".into()),
            }
        );
        assert_eq!(
            m.limits,
            LimitsSpec {
                fuel: Some(5_000_000_000),
                memory: Some(ByteSize(256 << 20)),
                wall: Some(HumanDuration(std::time::Duration::from_secs(30))),
                stack: Some(ByteSize(1 << 20)),
                table_elements: None,
                instances: None,
                output: Some(ByteSize(64 << 10)),
            }
        );
        let c = &m.capabilities;
        assert_eq!(c.llm, Some(section(json!({ "models": ["*"], "tokens": 200_000 }))));
        assert_eq!(c.trainer, Some(section(json!({ "backends": ["*"], "gpu_seconds": 600 }))));
        assert_eq!(c.simulator, Some(section(json!({ "envs": ["cartpole"], "steps": 2_000_000 }))));
        assert_eq!(c.memory, Some(section(json!({ "bytes": "1MiB" }))));
        assert_eq!(c.archive, Some(section(json!({}))));
        assert_eq!(
            c.files,
            vec![
                FileGrant { path: "scratch".into(), access: Access::ReadWrite, quota: None },
                FileGrant { path: "data/in".into(), access: Access::ReadOnly, quota: None },
            ]
        );
        assert_eq!(c.env, vec!["LANG".to_string()]);
        assert_eq!(c.sockets, vec!["api.example.com:443".to_string(), "[::1]:8080".to_string()]);
        assert_eq!(c.deterministic, Some(DeterministicRequest { seed: 7 }));
    }

    #[test]
    fn minimal_manifest_requests_nothing() {
        let m = Manifest::parse("[variant]\nname = \"x\"\nlanguage = \"wat\"\n", "v.toml").unwrap();
        assert_eq!(m.limits, LimitsSpec::default());
        assert_eq!(m.capabilities, Capabilities::default());
        assert_eq!(m.variant.builder, None);
    }

    #[test]
    fn round_trips_through_toml() {
        let m = Manifest::parse(FULL, "variant.toml").unwrap();
        let again = Manifest::parse(&m.to_toml(), "again.toml").unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn round_trips_through_json() {
        // Validation does not depend on the TOML deserializer.
        let m = Manifest::parse(FULL, "variant.toml").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
        let bad = json.replace("\"scratch\"", "\"../scratch\"");
        assert_eq!(
            serde_json::from_str::<Manifest>(&bad).unwrap_err().to_string().split(" at line").next().unwrap(),
            "#0: file path `../scratch` contains `..`"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "[variant]\nname = \"x\"\nlanguage = \"wat\"\n\n[capabilities]\nllm = { tokens = 5 }\ngpu = 3\n";
        assert_eq!(
            err(text),
            "variants/x/variant.toml:7:1: capabilities.gpu: unknown field `gpu`, expected one of `llm`, `trainer`, \
             `simulator`, `memory`, `archive`, `files`, `env`, `sockets`, `deterministic`, `workbench`, `clock`; fix the key or remove it"
        );
    }

    #[test]
    fn unknown_key_inside_an_inline_table() {
        assert_eq!(
            err(&with_caps("llm = { models = [\"a\"], tokens = 5, temperature = 1 }")),
            "variants/x/variant.toml:6:37: capabilities.llm.temperature: unknown field `temperature`, expected one of \
             `models`, `tokens`, `max_request_bytes`, `requests_per_minute`, `usd`; fix the key or remove it"
        );
    }

    #[test]
    fn unknown_key_in_variant_and_limits() {
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\nversion = 2\n"),
            "variants/x/variant.toml:4:1: variant.version: unknown field `version`, expected one of `name`, `language`, \
             `builder`, `target`, `description`; fix the key or remove it"
        );
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\ngas = 1\n"),
            "variants/x/variant.toml:5:1: limits.gas: unknown field `gas`, expected one of `fuel`, `memory`, `wall`, \
             `stack`, `table_elements`, `instances`, `output`; fix the key or remove it"
        );
    }

    #[test]
    fn errors_under_a_dotted_table_header() {
        let text = "[variant]\nname = \"x\"\nlanguage = \"wat\"\n\n[capabilities.llm]\ntokens = 5\nfoo = 1\n";
        assert_eq!(
            err(text),
            "variants/x/variant.toml:7:1: capabilities.llm.foo: unknown field `foo`, expected one of `models`, `tokens`, \
             `max_request_bytes`, `requests_per_minute`, `usd`; fix the key or remove it"
        );
        let text = "[variant]\nname = \"x\"\nlanguage = \"wat\"\n\n[[capabilities.files]]\npath = \"ok\"\n\n[[capabilities.files]]\npath = \"/abs\"\n";
        assert_eq!(
            err(text),
            "variants/x/variant.toml:8:1: capabilities.files[1]: file path `/abs` is absolute; give a path relative to \
             the run's scratch area"
        );
    }

    #[test]
    fn missing_key() {
        assert_eq!(
            err("[variant]\nlanguage = \"wat\"\n"),
            "variants/x/variant.toml:1:1: variant: missing field `name`; add it"
        );
        assert_eq!(err("[limits]\nfuel = 1\n"), "variants/x/variant.toml: missing field `variant`; add it");
        assert_eq!(
            err(&with_caps("memory = {}")),
            "variants/x/variant.toml:6:10: capabilities.memory: missing field `bytes`; add it"
        );
    }

    #[test]
    fn bad_units() {
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\nmemory = \"12 parsecs\"\n"),
            "variants/x/variant.toml:5:10: limits.memory: unknown size unit `parsecs` in `12 parsecs`; use B, KiB, \
             MiB, GiB, KB, MB or GB"
        );
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\nwall = \"soon\"\n"),
            "variants/x/variant.toml:5:8: limits.wall: `soon` is not a duration; write e.g. `30s`, `500ms`, `2m` or `1h`"
        );
        assert_eq!(
            err(&with_caps("memory = { bytes = \"1 fortnight\" }")),
            "variants/x/variant.toml:6:20: capabilities.memory.bytes: unknown size unit `fortnight` in `1 fortnight`; \
             use B, KiB, MiB, GiB, KB, MB or GB"
        );
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\nfuel = \"lots\"\n"),
            "variants/x/variant.toml:5:8: limits.fuel: invalid type: string \"lots\", expected u64"
        );
    }

    #[test]
    fn bad_language_and_name() {
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"go\"\n"),
            "variants/x/variant.toml:3:12: variant.language: unknown variant `go`, expected one of `rust`, `python`, \
             `javascript`, `c`, `wat`; use one of the listed values"
        );
        assert_eq!(
            err("[variant]\nname = \"../evil\"\nlanguage = \"wat\"\n"),
            "variants/x/variant.toml:2:8: variant.name: `../evil` is not a safe name; use 1-64 letters, digits, `-` \
             or `_`, starting with a letter or digit"
        );
        assert_eq!(
            err("[variant]\nname = \"\"\nlanguage = \"wat\"\n"),
            "variants/x/variant.toml:2:8: variant.name: `` is not a safe name; use 1-64 letters, digits, `-` or `_`, \
             starting with a letter or digit"
        );
        assert_eq!(
            err("[variant]\nname = \"x\"\nlanguage = \"wat\"\nbuilder = \"sh -c 'rm'\"\n"),
            "variants/x/variant.toml:4:11: variant.builder: `sh -c 'rm'` is not a plain token; use letters, digits, \
             `-`, `_` and `.`"
        );
    }

    #[test]
    fn file_paths_are_checked() {
        let cases = [
            ("/etc", "file path `/etc` is absolute; give a path relative to the run's scratch area"),
            ("../up", "file path `../up` contains `..`"),
            ("a/../../b", "file path `a/../../b` contains `..`"),
            ("a//b", "file path `a//b` has an empty component (`//` or a trailing `/`)"),
            ("a/", "file path `a/` has an empty component (`//` or a trailing `/`)"),
            ("./a", "file path `./a` contains a `.` component"),
            ("", "file path `` is empty"),
            ("a\\b", "file path `a\\b` contains a backslash; separate components with `/`"),
            ("C:/x", "file path `C:/x` is absolute; give a path relative to the run's scratch area"),
        ];
        for (path, why) in cases {
            let text = with_caps(&format!("files = [{{ path = {} }}]", toml::Value::String(path.into())));
            assert_eq!(err(&text), format!("variants/x/variant.toml:6:10: capabilities.files[0]: {why}"), "{path}");
        }
        assert_eq!(
            err(&with_caps("files = [{ path = \"a\\u0000b\" }]")),
            "variants/x/variant.toml:6:10: capabilities.files[0]: file path `a\\u{0}b` contains NUL"
        );
        assert_eq!(
            err(&with_caps("files = [{ path = \"a\" }, { path = \"a\", access = \"read-write\" }]")),
            "variants/x/variant.toml:6:26: capabilities.files[1]: file path `a` is listed twice"
        );
        assert_eq!(
            err(&with_caps("files = [{ path = \"a/b\" }, { path = \"a\" }]")),
            "variants/x/variant.toml:6:28: capabilities.files[1]: file path `a/b` is inside `a`; grant one directory or the other"
        );
        assert_eq!(
            err(&with_caps("files = [{ path = \"a\", access = \"write\" }]")),
            "variants/x/variant.toml:6:33: capabilities.files[0].access: unknown variant `write`, expected `read-only` \
             or `read-write`; use one of the listed values"
        );
        // `ab` is not inside `a`.
        let m = Manifest::parse(&with_caps("files = [{ path = \"a\" }, { path = \"ab\" }]"), "v").unwrap();
        assert_eq!(m.capabilities.files.len(), 2);
    }

    #[test]
    fn env_names_are_identifiers() {
        assert_eq!(
            err(&with_caps("env = [\"OK\", \"NOT-OK\"]")),
            "variants/x/variant.toml:6:14: capabilities.env[1]: `NOT-OK` is not a valid environment variable name; use \
             letters, digits and `_`, not starting with a digit"
        );
        assert_eq!(
            err(&with_caps("env = [\"1X\"]")),
            "variants/x/variant.toml:6:8: capabilities.env[0]: `1X` is not a valid environment variable name; use \
             letters, digits and `_`, not starting with a digit"
        );
        assert_eq!(
            err(&with_caps("env = [\"A\", \"A\"]")),
            "variants/x/variant.toml:6:13: capabilities.env[1]: environment variable `A` is listed twice"
        );
        let m = Manifest::parse(&with_caps("env = [\"_private\", \"LANG\"]"), "v").unwrap();
        assert_eq!(m.capabilities.env, vec!["_private".to_string(), "LANG".to_string()]);
    }

    #[test]
    fn sockets_are_checked() {
        let cases = [
            ("example.com", "socket `example.com` is not `host:port`"),
            ("example.com:0", "socket `example.com:0`: port `0` is not a number from 1 to 65535"),
            ("example.com:99999", "socket `example.com:99999`: port `99999` is not a number from 1 to 65535"),
            ("*.example.com:443", "socket `*.example.com:443`: `*.example.com` is not a valid host name"),
            ("127.1:80", "socket `127.1:80`: `127.1` is an ambiguous numeric address; write the IP address in dotted form"),
            ("0x7f000001:80", "socket `0x7f000001:80`: `0x7f000001` is an ambiguous numeric address; write the IP address in dotted form"),
            ("::1:80", "socket `::1:80` is not `host:port`"),
        ];
        for (s, why) in cases {
            let text = with_caps(&format!("sockets = [\"{s}\"]"));
            assert_eq!(err(&text), format!("variants/x/variant.toml:6:12: capabilities.sockets[0]: {why}"), "{s}");
        }
        assert_eq!(
            err(&with_caps("sockets = [\"a.com:1\", \"A.com:1\"]")),
            "variants/x/variant.toml:6:23: capabilities.sockets[1]: socket `a.com:1` is listed twice"
        );
    }

    #[test]
    fn name_lists_are_checked() {
        assert_eq!(
            err(&with_caps("simulator = { envs = [], steps = 1 }")),
            "variants/x/variant.toml:6:22: capabilities.simulator.envs: the list is empty; name at least one, or `*` for any"
        );
        assert_eq!(
            err(&with_caps("llm = { models = [\"gpt*\"], tokens = 1 }")),
            "variants/x/variant.toml:6:19: capabilities.llm.models[0]: `gpt*` is not a valid name; use printable \
             characters without spaces, or `*` alone for any"
        );
        assert_eq!(
            err(&with_caps("trainer = { backends = [\"cpu\", \"cpu\"], gpu_seconds = 1 }")),
            "variants/x/variant.toml:6:32: capabilities.trainer.backends[1]: name `cpu` is listed twice"
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        assert_eq!(
            err("[variant]\nname = \"x\nlanguage = \"wat\"\n"),
            "variants/x/variant.toml:2:10: invalid basic string"
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("caps-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("variant.toml");
        std::fs::write(&path, "[variant]\nname = \"x\"\nlanguage = \"c\"\nbogus = 1\n").unwrap();
        match Manifest::load(&path) {
            Err(Error::Invalid(msg)) => {
                assert!(msg.starts_with(&format!("{}:4:1: variant.bogus: unknown field", path.display())), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        match Manifest::load(dir.join("missing.toml")) {
            Err(Error::Io { context, .. }) => {
                assert_eq!(context, format!("reading {}", dir.join("missing.toml").display()))
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_limit_of_zero_is_refused_where_it_is_written() {
        for (line, key) in [
            ("fuel = 0", "limits.fuel"),
            ("memory = \"0B\"", "limits.memory"),
            ("memory = 0", "limits.memory"),
            ("wall = \"0s\"", "limits.wall"),
            ("stack = \"0KiB\"", "limits.stack"),
        ] {
            let text = format!("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\n{line}\n");
            let e = Manifest::parse(&text, "variant.toml").unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("variant.toml:5:")) && e.contains(key) && e.contains("lets no call run"),
                "{e}"
            );
        }
        let e = Manifest::parse("[variant]\nname = \"x\"\nlanguage = \"wat\"\n[limits]\nmemory = \"64\"\n", "v.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.memory") && e.contains("no unit"), "{e}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 0), (1, 1));
        assert_eq!(line_col("ab\ncé d", 3), (2, 1));
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
