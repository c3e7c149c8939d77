//! `variant.toml`: any text either parses or is refused with a typed error;
//! a manifest that parses resolves to a grant, and writes back to a file
//! that parses to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vivarium::caps::{manifest::Manifest, policy::Policy, resolve};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = Manifest::parse(text, "variant.toml") else { return };
    let again = Manifest::parse(&m.to_toml(), "again.toml").expect("a parsed manifest writes back to a valid file");
    assert_eq!(again, m, "the manifest survives a round trip");
    let r = resolve::resolve(&m, &Policy::default(), &Default::default());
    let _ = r.grant.digest();
});
