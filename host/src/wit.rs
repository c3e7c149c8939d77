//! The `vivarium:agent` WIT package, embedded in the host so that every
//! builder and check uses the exact contract the host implements.

use wit_parser::{Resolve, SourceMap, WorldId};

/// The WIT files of `vivarium:agent@0.1.0`, as shipped in `wit/`.
pub const FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../wit/types.wit")),
    ("services.wit", include_str!("../../wit/services.wit")),
    ("reward.wit", include_str!("../../wit/reward.wit")),
];

/// The WIT files of `vivarium:agent@0.2.0`, as shipped in `wit-0.2.0/`.
pub const FILES_0_2: &[(&str, &str)] = &[
    ("llm.wit", include_str!("../../wit-0.2.0/llm.wit")),
    ("meta.wit", include_str!("../../wit-0.2.0/meta.wit")),
];

/// Parse the embedded package and select the `agent` world.
pub fn resolve() -> anyhow::Result<(Resolve, WorldId)> {
    let mut map = SourceMap::new();
    for (name, text) in FILES {
        map.push_str(name, *text);
    }
    let mut resolve = Resolve::default();
    let group = map.parse().map_err(|(_, e)| anyhow::anyhow!("embedded WIT does not parse: {e}"))?;
    let pkg = resolve.push_group(group)?;
    let world = resolve.select_world(&[pkg], Some("agent"))?;
    Ok((resolve, world))
}

/// Write the WIT package into `dir` (for guest toolchains that read files).
pub fn write_to(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_wit_resolves() {
        let (resolve, world) = super::resolve().unwrap();
        assert_eq!(resolve.worlds[world].name, "agent");
    }
}
