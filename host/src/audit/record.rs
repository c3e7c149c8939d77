//! One audit record: its fields, its event kinds, and its canonical bytes.
//!
//! See the [module docs](super) for the format; this file is its single
//! implementation (`encode` writes a line, `decode_line` checks one).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The `prev` of the first record: 64 zeros.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The most bytes a record's `details` may take, serialized as compact JSON.
/// Larger details are replaced by a marker (see [`cap_details`]).
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;

/// How much of oversized details is kept as a preview in the marker.
pub const DETAILS_PREVIEW_BYTES: usize = 1024;

/// The longest `variant` accepted by `append`, in bytes.
pub const MAX_VARIANT_BYTES: usize = 128;

/// The longest name of an [`EventKind::Other`] accepted by `append`, in bytes.
pub const MAX_KIND_BYTES: usize = 64;

/// What happened. Serialized as a kebab-case string (`"refused-import"`).
///
/// Kinds this host does not know — written by a newer host, or added through
/// [`EventKind::Other`] — read back as `Other(name)` with the name unchanged,
/// so reading and verifying never fail on an unknown kind. Promoting an
/// `Other` name to its own variant later keeps old logs readable and their
/// hashes valid, because the string on disk is the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A grant was computed for a variant (details: the grant).
    Grant,
    /// A requested capability was cut by the policy.
    Deny,
    /// A component imports something its grant does not name; refused at load.
    RefusedImport,
    /// Capability use, aggregated per call (tokens, steps, bytes, …).
    Use,
    /// A guest call hit a limit (out-of-fuel, deadline, memory-limit, stack-overflow).
    LimitHit,
    /// A guest call trapped.
    Trap,
    /// A self-modification proposal and the guard's verdict.
    Proposal,
    /// A variant was built (or its build failed).
    Build,
    /// A person approved a request (`vivarium approve`).
    Approval,
    /// A child asked for more than its parent was granted; waits for approval.
    Escalation,
    /// The audit log repaired the aftermath of a crash (written by the log itself).
    Recovery,
    /// Any other kind, by its kebab-case name.
    Other(String),
}

impl EventKind {
    /// Every kind with its own variant, in declaration order.
    pub const KNOWN: &'static [EventKind] = &[
        EventKind::Grant,
        EventKind::Deny,
        EventKind::RefusedImport,
        EventKind::Use,
        EventKind::LimitHit,
        EventKind::Trap,
        EventKind::Proposal,
        EventKind::Build,
        EventKind::Approval,
        EventKind::Escalation,
        EventKind::Recovery,
    ];

    /// The kind's name as written in the log.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Grant => "grant",
            EventKind::Deny => "deny",
            EventKind::RefusedImport => "refused-import",
            EventKind::Use => "use",
            EventKind::LimitHit => "limit-hit",
            EventKind::Trap => "trap",
            EventKind::Proposal => "proposal",
            EventKind::Build => "build",
            EventKind::Approval => "approval",
            EventKind::Escalation => "escalation",
            EventKind::Recovery => "recovery",
            EventKind::Other(name) => name,
        }
    }

    /// The kind named `name`: a known variant where there is one, else
    /// `Other(name)`. Never fails (this is what reading uses).
    pub fn from_name(name: &str) -> EventKind {
        Self::KNOWN.iter().find(|k| k.as_str() == name).cloned().unwrap_or_else(|| EventKind::Other(name.to_owned()))
    }

    /// A kind for a name this module has no variant for, checked the way
    /// `append` checks it: 1 to [`MAX_KIND_BYTES`] bytes of `a-z`, `0-9`, `-`.
    pub fn other(name: &str) -> Result<EventKind> {
        let kind = EventKind::from_name(name);
        kind.check()?;
        Ok(kind)
    }

    /// Whether this kind has its own variant.
    pub fn is_known(&self) -> bool {
        !matches!(self, EventKind::Other(_))
    }

    /// Reject `Other` names that are not short kebab-case words.
    pub(crate) fn check(&self) -> Result<()> {
        if let EventKind::Other(name) = self {
            let ok = !name.is_empty()
                && name.len() <= MAX_KIND_BYTES
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(Error::Invalid(format!(
                    "audit event kind {name:?} is not valid: use 1 to {MAX_KIND_BYTES} characters of a-z, 0-9 and '-'"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(EventKind::from_name(s))
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(EventKind::from_name(&name))
    }
}

/// One line of the audit log, parsed.
///
/// Fields appear on disk in this order; `hash` is always last (see the
/// [module docs](super) for the canonical form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the chain: 0 for the first record, then +1 each.
    pub seq: u64,
    /// When it was appended: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The variant concerned (its sha256), or `None` for a host event.
    pub variant: Option<String>,
    /// What happened.
    pub event: EventKind,
    /// Event-specific data, at most [`MAX_DETAILS_BYTES`] serialized.
    pub details: Value,
    /// `hash` of the previous record; [`ZERO_HASH`] for the first.
    pub prev: String,
    /// Lowercase hex sha256 of this record's canonical bytes.
    pub hash: String,
}

impl Record {
    /// Whether this is a host event (no variant).
    pub fn is_host_event(&self) -> bool {
        self.variant.is_none()
    }
}

/// The record without its hash, in the fixed field order of the format.
#[derive(Serialize)]
struct Unhashed<'a> {
    seq: u64,
    time: &'a str,
    variant: Option<&'a str>,
    event: &'a EventKind,
    details: &'a Value,
    prev: &'a str,
}

/// The member that ends every line: `,"hash":"<64 hex>"}`.
const HASH_MEMBER_OPEN: &[u8] = b",\"hash\":\"";
const HASH_MEMBER_LEN: usize = HASH_MEMBER_OPEN.len() + 64 + 2;

/// Build a record and its line (with the final `\n`).
pub(crate) fn encode(
    seq: u64,
    time: String,
    variant: Option<String>,
    event: EventKind,
    details: Value,
    prev: String,
) -> Result<(Record, Vec<u8>)> {
    let unhashed =
        Unhashed { seq, time: &time, variant: variant.as_deref(), event: &event, details: &details, prev: &prev };
    let mut line = serde_json::to_vec(&unhashed)
        .map_err(|e| Error::Internal(anyhow::anyhow!("cannot serialize audit record {seq}: {e}")))?;
    let hash = hex::encode(Sha256::digest(&line));
    debug_assert_eq!(line.last(), Some(&b'}'));
    line.pop();
    line.extend_from_slice(HASH_MEMBER_OPEN);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    let record = Record { seq, time, variant, event, details, prev, hash };
    Ok((record, line))
}

/// Why one line is not a good record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not a record at all: bad JSON, a missing field, no hash member at the end.
    Garbled(String),
    /// Well-formed, but its bytes do not hash to the hash it carries.
    HashMismatch {
        /// The hash written in the line.
        stored: String,
        /// The hash of the line's canonical bytes.
        computed: String,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Garbled(why) => write!(f, "not a valid record: {why}"),
            LineError::HashMismatch { stored, computed } => write!(
                f,
                "its bytes hash to {computed} but it carries hash {stored}: it was changed after it was written"
            ),
        }
    }
}

/// Parse one line (without its `\n`) and check that it hashes to its own
/// `hash`. Chain checks (`seq`, `prev`) are the caller's.
pub(crate) fn decode_line(line: &[u8]) -> std::result::Result<Record, LineError> {
    if line.is_empty() {
        return Err(LineError::Garbled("empty line".into()));
    }
    if line.len() < HASH_MEMBER_LEN + 2 || line[0] != b'{' {
        return Err(LineError::Garbled("not a JSON object with a hash".into()));
    }
    let (body, member) = line.split_at(line.len() - HASH_MEMBER_LEN);
    let hex_part = &member[HASH_MEMBER_OPEN.len()..HASH_MEMBER_OPEN.len() + 64];
    if !member.starts_with(HASH_MEMBER_OPEN)
        || !member.ends_with(b"\"}")
        || !hex_part.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(LineError::Garbled(
            "it does not end with the member ,\"hash\":\"<64 lowercase hex digits>\"}".into(),
        ));
    }
    let record: Record = serde_json::from_slice(line).map_err(|e| LineError::Garbled(format!("bad JSON: {e}")))?;
    let stored = std::str::from_utf8(hex_part).expect("checked hex");
    if record.hash != stored {
        // Only possible with a duplicate "hash" member, which serde rejects;
        // kept so that the parsed hash and the hashed bytes can never differ.
        return Err(LineError::Garbled("its hash member is ambiguous".into()));
    }
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    let computed = hex::encode(hasher.finalize());
    if computed != stored {
        return Err(LineError::HashMismatch { stored: stored.to_owned(), computed });
    }
    Ok(record)
}

/// Details within [`MAX_DETAILS_BYTES`] unchanged. Larger ones keep the
/// fields that say what happened and lose only their variable parts: the
/// largest members of the details object are replaced, one at a time, by
/// [`marker`]s (`{"truncated": true, "original_bytes": N,
/// "original_sha256": "<hex>", "preview": "<first DETAILS_PREVIEW_BYTES of
/// the member's JSON>"}`, with `items` for an array) until the record fits,
/// and the object gains `"truncated": true` with the whole original's size
/// and digest. A proposal record with a 200 KB edit list thus keeps its
/// verdict, digests, summary and escalation. Details that are not an
/// object, or whose fields alone exceed the cap, become one marker.
pub fn cap_details(details: Value) -> Result<Value> {
    let bytes = json_bytes(&details)?;
    if bytes.len() <= MAX_DETAILS_BYTES {
        return Ok(details);
    }
    let Value::Object(mut map) = details else {
        return Ok(marker(&bytes, None));
    };
    let mut members = map.iter().map(|(k, v)| Ok((k.clone(), json_bytes(v)?.len()))).collect::<Result<Vec<_>>>()?;
    members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // Room for the top-level size and digest added at the end.
    let budget = MAX_DETAILS_BYTES - 256;
    let mut total = bytes.len();
    for (key, size) in members {
        if total <= budget {
            break;
        }
        let value = &map[&key];
        let items = value.as_array().map(Vec::len);
        let m = marker(&json_bytes(value)?, items);
        let m_size = json_bytes(&m)?.len();
        if m_size < size {
            total = total - size + m_size;
            map.insert(key, m);
        }
    }
    if total > budget {
        return Ok(marker(&bytes, None));
    }
    map.insert("truncated".into(), Value::Bool(true));
    map.insert("original_bytes".into(), Value::from(bytes.len()));
    map.insert("original_sha256".into(), Value::from(hex::encode(Sha256::digest(&bytes))));
    Ok(Value::Object(map))
}

/// What stands for dropped JSON `bytes`: their size, their digest, and the
/// first [`DETAILS_PREVIEW_BYTES`] of them (cut on a character boundary).
fn marker(bytes: &[u8], items: Option<usize>) -> Value {
    let text = std::str::from_utf8(bytes).expect("serde_json writes UTF-8");
    let mut cut = DETAILS_PREVIEW_BYTES.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut m = serde_json::json!({
        "truncated": true,
        "original_bytes": bytes.len(),
        "original_sha256": hex::encode(Sha256::digest(bytes)),
        "preview": &text[..cut],
    });
    if let Some(n) = items {
        m["items"] = Value::from(n);
    }
    m
}

fn json_bytes(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(anyhow::anyhow!("cannot serialize audit details: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line_of(seq: u64, details: Value) -> (Record, Vec<u8>) {
        encode(seq, "2026-01-02T03:04:05.678Z".into(), Some("ab12".into()), EventKind::Grant, details, ZERO_HASH.into())
            .unwrap()
    }

    #[test]
    fn kinds_round_trip_as_kebab_case() {
        let names: Vec<&str> = EventKind::KNOWN.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "grant",
                "deny",
                "refused-import",
                "use",
                "limit-hit",
                "trap",
                "proposal",
                "build",
                "approval",
                "escalation",
                "recovery"
            ]
        );
        for k in EventKind::KNOWN {
            let s = serde_json::to_string(k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.as_str()));
            assert_eq!(&serde_json::from_str::<EventKind>(&s).unwrap(), k);
            assert!(k.is_known());
        }
        let weird: EventKind = serde_json::from_str("\"Not A Kebab Kind ✓\"").unwrap();
        assert_eq!(weird, EventKind::Other("Not A Kebab Kind ✓".into()));
        assert_eq!(serde_json::to_string(&weird).unwrap(), "\"Not A Kebab Kind ✓\"");
        assert_eq!("limit-hit".parse::<EventKind>().unwrap(), EventKind::LimitHit);
        assert_eq!(EventKind::from_name("grant"), EventKind::Grant);
    }

    #[test]
    fn other_kind_names_are_checked() {
        assert_eq!(EventKind::other("gpu-lease").unwrap(), EventKind::Other("gpu-lease".into()));
        assert_eq!(EventKind::other("trap").unwrap(), EventKind::Trap);
        for bad in ["", "Upper", "with space", "under_score", "é", &"x".repeat(MAX_KIND_BYTES + 1)] {
            let err = EventKind::other(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(ref m) if m.contains("is not valid")), "{bad:?}: {err}");
        }
        assert!(EventKind::other(&"x".repeat(MAX_KIND_BYTES)).is_ok());
    }

    #[test]
    fn encoding_is_the_documented_canonical_form() {
        let (rec, line) = line_of(7, json!({"a": [1.5, "x"], "b": 1}));
        let text = std::str::from_utf8(&line).unwrap();
        let unhashed = "{\"seq\":7,\"time\":\"2026-01-02T03:04:05.678Z\",\"variant\":\"ab12\",\"event\":\"grant\",\"details\":{\"a\":[1.5,\"x\"],\"b\":1},\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"}";
        let hash = hex::encode(Sha256::digest(unhashed.as_bytes()));
        assert_eq!(rec.hash, hash);
        assert_eq!(text, format!("{},\"hash\":\"{hash}\"}}\n", &unhashed[..unhashed.len() - 1]));
        assert_eq!(decode_line(&line[..line.len() - 1]).unwrap(), rec);
    }

    #[test]
    fn host_events_write_null_variant() {
        let (rec, line) = encode(0, "t".into(), None, EventKind::Build, json!(null), ZERO_HASH.into()).unwrap();
        assert!(rec.is_host_event());
        assert!(std::str::from_utf8(&line).unwrap().contains("\"variant\":null"));
        assert_eq!(decode_line(&line[..line.len() - 1]).unwrap(), rec);
    }

    #[test]
    fn floats_verify_from_raw_bytes() {
        // Values whose text does not survive a parse/print round trip in every
        // serde_json configuration: the hash is over the stored bytes, so they
        // still verify.
        let (rec, line) = line_of(1, json!({"x": 0.1, "y": 1e300, "z": 2.2250738585072014e-308, "w": -0.0}));
        assert_eq!(decode_line(&line[..line.len() - 1]).unwrap().hash, rec.hash);
    }

    #[test]
    fn decode_rejects_damage() {
        let (_, line) = line_of(3, json!({"k": "v"}));
        let line = &line[..line.len() - 1];
        assert_eq!(decode_line(b""), Err(LineError::Garbled("empty line".into())));
        assert!(matches!(decode_line(b"hello"), Err(LineError::Garbled(_))));
        // An extra space is a byte change too.
        let spaced = String::from_utf8(line.to_vec()).unwrap().replacen("\"k\":", "\"k\": ", 1);
        assert!(matches!(decode_line(spaced.as_bytes()), Err(LineError::HashMismatch { .. })));
        // Uppercase hex is not the canonical form.
        let upper = {
            let mut l = line.to_vec();
            let n = l.len();
            l[n - 3] = l[n - 3].to_ascii_uppercase();
            l
        };
        if upper != line {
            assert!(matches!(decode_line(&upper), Err(LineError::Garbled(_))));
        }
        // A duplicate hash member is rejected.
        let dup = format!("{{\"hash\":\"{}\",{}", ZERO_HASH, std::str::from_utf8(&line[1..]).unwrap());
        assert!(matches!(decode_line(dup.as_bytes()), Err(LineError::Garbled(_))));
    }

    #[test]
    fn small_details_pass_through() {
        let v = json!({"a": "x".repeat(100)});
        assert_eq!(cap_details(v.clone()).unwrap(), v);
        // Exactly at the cap: unchanged ("\"" + body + "\"" = cap bytes).
        let at_cap = Value::String("y".repeat(MAX_DETAILS_BYTES - 2));
        assert_eq!(serde_json::to_vec(&at_cap).unwrap().len(), MAX_DETAILS_BYTES);
        assert_eq!(cap_details(at_cap.clone()).unwrap(), at_cap);
    }

    #[test]
    fn large_details_become_a_marker() {
        let big = json!(["é".repeat(MAX_DETAILS_BYTES)]);
        let bytes = serde_json::to_vec(&big).unwrap();
        let capped = cap_details(big).unwrap();
        assert_eq!(capped["truncated"], json!(true));
        assert_eq!(capped["original_bytes"], json!(bytes.len()));
        assert_eq!(capped["original_sha256"], json!(hex::encode(Sha256::digest(&bytes))));
        let preview = capped["preview"].as_str().unwrap();
        assert!(preview.len() <= DETAILS_PREVIEW_BYTES && preview.len() >= DETAILS_PREVIEW_BYTES - 3);
        assert!(std::str::from_utf8(&bytes).unwrap().starts_with(preview));
        assert!(serde_json::to_vec(&capped).unwrap().len() < 2 * DETAILS_PREVIEW_BYTES);
    }

    /// The record of an accepted proposal whose edit list is flooded (250
    /// one-byte writes with 700-byte paths) keeps what happened.
    #[test]
    fn a_flooded_proposal_record_keeps_its_verdict_and_digests() {
        let edits: Vec<Value> =
            (0..250).map(|i| json!({"write": format!("{i:03}/{}", "p".repeat(700)), "bytes": 1})).collect();
        let details = json!({
            "verdict": "accepted", "proposal_digest": "d".repeat(64), "summary": "tidy the prompts",
            "escalation": "req-7", "child": "c".repeat(64), "edits": edits,
        });
        let whole = serde_json::to_vec(&details).unwrap();
        assert!(whole.len() > 3 * MAX_DETAILS_BYTES / 2);
        let capped = cap_details(details.clone()).unwrap();
        assert!(serde_json::to_vec(&capped).unwrap().len() <= MAX_DETAILS_BYTES);
        for key in ["verdict", "proposal_digest", "summary", "escalation", "child"] {
            assert_eq!(capped[key], details[key], "{key} survives");
        }
        assert_eq!(capped["truncated"], json!(true));
        assert_eq!(capped["original_sha256"], json!(hex::encode(Sha256::digest(&whole))));
        let edits_bytes = serde_json::to_vec(&details["edits"]).unwrap();
        assert_eq!(capped["edits"]["items"], json!(250));
        assert_eq!(capped["edits"]["original_sha256"], json!(hex::encode(Sha256::digest(&edits_bytes))));
    }
}
