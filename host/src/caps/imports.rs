//! The import check: a component's imports against its grant, before
//! instantiation.
//!
//! Every import must be one of
//! * `vivarium:agent/types` (type definitions only),
//! * `vivarium:agent/log` (always granted),
//! * another `vivarium:agent/<service>` that the grant names *and* this host
//!   implements,
//! * a WASI 0.2 interface of the kinds the host provides without authority
//!   (cli, io, clocks, random, filesystem), or `wasi:sockets` when the grant
//!   lists sockets.
//!
//! Anything else — a made-up interface, a newer WASI than the host's, a
//! service not granted — is refused, and every offending import is named.

use serde::Serialize;

use crate::caps::Grant;
use crate::services;

/// The WASI 0.2 patch version the host's wasmtime-wasi implements.
pub const WASI_VERSION: (u64, u64, u64) = (0, 2, 12);
/// The version of the `vivarium:agent` package the host implements.
pub const AGENT_VERSION: &str = "0.1.0";

/// The `vivarium:agent` version whose `llm` has tool calls; the host links
/// its `llm` next to every 0.1.0 interface.
pub const AGENT_VERSION_0_2: &str = "0.2.0";

/// Why one import is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedImport {
    /// The import's full name, e.g. `vivarium:agent/llm@0.1.0`.
    pub import: String,
    /// Why, in words.
    pub reason: String,
}

/// Check `imports` (full interface names) against `grant`; returns every
/// refused import.
pub fn check<'a>(imports: impl IntoIterator<Item = &'a str>, grant: &Grant) -> Vec<RefusedImport> {
    imports
        .into_iter()
        .filter_map(|name| refusal(name, grant).map(|reason| RefusedImport { import: name.to_string(), reason }))
        .collect()
}

fn refusal(name: &str, grant: &Grant) -> Option<String> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let Some((package, iface)) = path.split_once('/') else {
        return Some("not an interface import; variants may import only vivarium:agent and WASI 0.2 interfaces".into());
    };
    match package {
        // 0.2.0 versions `llm` (tool calls) and adds `workbench`, `clock`
        // and the patch edits' types (`edits`): a component imports them
        // next to the 0.1.0 interfaces.
        "vivarium:agent" if version == Some(AGENT_VERSION_0_2) && (iface == "edits" || provides(iface, version)) => {
            if iface == "edits" {
                return None;
            }
            if !grant.service_granted(iface) {
                Some(format!("capability `{iface}` is not granted to this variant"))
            } else {
                None
            }
        }
        "vivarium:agent" => {
            if version != Some(AGENT_VERSION) {
                return Some(format!(
                    "this host implements vivarium:agent@{AGENT_VERSION}, not {}",
                    version.unwrap_or("an unversioned package")
                ));
            }
            match iface {
                "types" | "log" => None,
                _ if provides(iface, version) => {
                    if !grant.service_granted(iface) {
                        Some(format!("capability `{iface}` is not granted to this variant"))
                    } else {
                        None
                    }
                }
                _ => Some(format!("`{iface}` is not an interface of vivarium:agent@{AGENT_VERSION}")),
            }
        }
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:filesystem" | "wasi:sockets" => {
            if let Some(why) = wasi_version_refusal(version) {
                return Some(why);
            }
            if package == "wasi:sockets" && grant.sockets.is_empty() {
                return Some("capability `sockets` is not granted to this variant".into());
            }
            None
        }
        _ => Some(format!("package `{package}` is not provided by this host")),
    }
}

/// Whether a service of the registry implements `vivarium:agent/iface` at
/// `version` (0.2.0 versions `llm` and adds `workbench` and `clock`; see
/// each service's [`Service::VERSIONS`](services::Service::VERSIONS)).
fn provides(iface: &str, version: Option<&str>) -> bool {
    services::versions(iface).is_some_and(|v| version.is_some_and(|version| v.contains(&version)))
}

fn wasi_version_refusal(version: Option<&str>) -> Option<String> {
    let (maj, min, patch) = WASI_VERSION;
    let have = format!("{maj}.{min}.{patch}");
    let Some(v) = version else {
        return Some(format!("unversioned WASI import; this host provides WASI {have}"));
    };
    let parts: Vec<u64> = match v.split('.').map(str::parse).collect::<Result<Vec<_>, _>>() {
        Ok(p) if p.len() == 3 => p,
        _ => return Some(format!("WASI version `{v}` is not one this host provides ({have})")),
    };
    if (parts[0], parts[1]) != (maj, min) || parts[2] > patch {
        return Some(format!("WASI {v} is newer than or incompatible with this host's WASI {have}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::service::section;
    use serde_json::json;

    #[test]
    fn classifies_imports() {
        let g = Grant::default();
        let refused = check(
            [
                "wasi:cli/environment@0.2.6",
                "vivarium:agent/log@0.1.0",
                "vivarium:agent/types@0.1.0",
                "vivarium:agent/llm@0.1.0",
                "vivarium:agent/telepathy@0.1.0",
                "wasi:cli/environment@0.3.0",
                "wasi:sockets/tcp@0.2.0",
                "evil:corp/backdoor",
            ],
            &g,
        );
        let names: Vec<_> = refused.iter().map(|r| r.import.as_str()).collect();
        assert_eq!(
            names,
            [
                "vivarium:agent/llm@0.1.0",
                "vivarium:agent/telepathy@0.1.0",
                "wasi:cli/environment@0.3.0",
                "wasi:sockets/tcp@0.2.0",
                "evil:corp/backdoor"
            ]
        );
        assert_eq!(refused[0].reason, "capability `llm` is not granted to this variant");
        assert_eq!(refused[3].reason, "capability `sockets` is not granted to this variant");
        // 0.2.0: `workbench` needs its grant; `edits` is types only.
        let refused = check(["vivarium:agent/workbench@0.2.0", "vivarium:agent/edits@0.2.0"], &g);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].reason, "capability `workbench` is not granted to this variant");
        let wb = Grant {
            workbench: Some(section(json!({ "tries": 1, "tasks": 1, "build_seconds": 1, "fuel": 1 }))),
            ..Grant::default()
        };
        assert!(check(["vivarium:agent/workbench@0.2.0"], &wb).is_empty());
        // A granted service is linked.
        let g =
            Grant { trainer: Some(section(json!({ "backends": ["embedded"], "gpu_seconds": 1 }))), ..Grant::default() };
        assert!(check(["vivarium:agent/trainer@0.1.0"], &g).is_empty());
        // An interface at a version no service implements is refused as such.
        let refused = check(["vivarium:agent/workbench@0.1.0", "vivarium:agent/memory@0.2.0"], &g);
        assert_eq!(refused[0].reason, "`workbench` is not an interface of vivarium:agent@0.1.0");
        assert_eq!(refused[1].reason, "this host implements vivarium:agent@0.1.0, not 0.2.0");
    }
}
