//! `policy.toml`: any text either parses or is refused with a typed error; a
//! policy that parses round-trips and cuts a wide request down to a grant.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vivarium::caps::{manifest::Manifest, policy::Policy, resolve};

/// A manifest that asks for a bit of everything.
const WIDE: &str = r#"[variant]
name = "wide"
language = "rust"

[limits]
fuel = 50_000_000_000
memory = "1GiB"
wall = "5m"

[capabilities]
llm       = { models = ["*"], tokens = 200_000 }
memory    = { bytes = "1MiB" }
archive   = {}
files     = [{ path = "scratch", access = "read-write" }]
env       = ["LANG"]
"#;

fuzz_target!(|data: &[u8]| {
    static WIDE_MANIFEST: OnceLock<Manifest> = OnceLock::new();
    let wide = WIDE_MANIFEST.get_or_init(|| Manifest::parse(WIDE, "wide.toml").expect("the wide manifest parses"));
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = Policy::parse(text, "policy.toml") else { return };
    let again = Policy::parse(&p.to_toml(), "again.toml").expect("a parsed policy writes back to a valid file");
    assert_eq!(again, p, "the policy survives a round trip");
    let r = resolve::resolve(wide, &p, &Default::default());
    let _ = r.grant.digest();
    let _ = resolve::resolve_bare(&p, &Default::default());
});
