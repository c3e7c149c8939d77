//! A guest-less test environment for the services, after Spin's
//! `TestEnvironment`: a manifest's `[capabilities]` and an operator's
//! policy in, the variant's grant (with its provenance and denials) and one
//! call's per-call service states out. Tests then make host calls directly
//! on those states through the WIT `Host` traits, so every service has unit
//! tests without building or instantiating a wasm guest.
//!
//! The states come from [`HostServices::for_call`], the same constructor
//! the runtime uses for a real call.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{CallScope, CallServices, HostServices};
use crate::caps::{resolve, Grant, Manifest, Overrides, Policy, Resolution};
use crate::home::Home;

/// The sha256 the test environment's variant is keyed by (budgets, memory).
pub(crate) const VARIANT_SHA256: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// A variant's capabilities, an operator's policy, the host's services on
/// a fresh `$VIVARIUM_HOME`, and the slice of them a call sees.
pub(crate) struct TestEnvironment {
    home: TempDir,
    manifest_caps: String,
    policy_caps: String,
    /// The host's shared service state (none by default).
    pub(crate) host: HostServices,
    /// The run the call is in; `None`: outside any run.
    pub(crate) run: Option<String>,
    /// The call's cap on simulator steps.
    pub(crate) sim_steps: Option<u64>,
    /// The call's cap on `llm` tokens.
    pub(crate) llm_tokens: Option<u64>,
    /// The call's wall-clock limit (its services' deadline).
    pub(crate) wall: Duration,
}

impl TestEnvironment {
    /// An environment asking for nothing, on a policy allowing nothing, with
    /// no host services and a call outside any run.
    pub(crate) fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("a temporary $VIVARIUM_HOME"),
            manifest_caps: String::new(),
            policy_caps: String::new(),
            host: HostServices::default(),
            run: None,
            sim_steps: None,
            llm_tokens: None,
            wall: Duration::from_secs(30),
        }
    }

    /// The variant asks for `caps` (the body of `variant.toml`'s
    /// `[capabilities]`).
    pub(crate) fn manifest(mut self, caps: &str) -> Self {
        self.manifest_caps = caps.to_string();
        self
    }

    /// The operator allows `caps` (the body of `policy.toml`'s
    /// `[capabilities]`).
    pub(crate) fn policy(mut self, caps: &str) -> Self {
        self.policy_caps = caps.to_string();
        self
    }

    /// The host's services, made from the environment's home.
    pub(crate) fn host(mut self, f: impl FnOnce(&Home) -> HostServices) -> Self {
        self.host = f(&self.home());
        self
    }

    /// The call is in `run`.
    pub(crate) fn run(mut self, run: &str) -> Self {
        self.run = Some(run.to_string());
        self
    }

    /// The environment's `$VIVARIUM_HOME`.
    pub(crate) fn home(&self) -> Home {
        Home::at(self.home.path())
    }

    /// The grant, resolved as the host resolves it (`vivarium run`).
    pub(crate) fn resolve(&self) -> Resolution {
        let manifest = Manifest::parse(
            &format!("[variant]\nname = \"test\"\nlanguage = \"rust\"\n\n[capabilities]\n{}\n", self.manifest_caps),
            "variant.toml",
        )
        .unwrap_or_else(|e| panic!("the test manifest does not parse: {e}"));
        let policy = Policy::parse(&format!("[capabilities]\n{}\n", self.policy_caps), "policy.toml")
            .unwrap_or_else(|e| panic!("the test policy does not parse: {e}"));
        resolve(&manifest, &policy, &Overrides::default())
    }

    /// One call's grant and per-call service states; panics when the
    /// grant is refused (test [`Self::resolve`] for refusals).
    pub(crate) fn call(&self) -> TestCall {
        let resolution = self.resolve();
        if let Some(e) = resolution.refusal() {
            panic!("the test grant is refused: {e}");
        }
        let grant = resolution.grant;
        let services = self.host.for_call(
            &grant,
            CallScope {
                variant_sha256: VARIANT_SHA256.to_string(),
                run: self.run.clone(),
                memory_lineage: VARIANT_SHA256.to_string(),
                llm_tokens: self.llm_tokens,
                run_usd: None,
                llm_model: None,
                sim_steps: self.sim_steps,
                deadline: Instant::now() + self.wall,
                workbench: None,
            },
        );
        TestCall { grant, services }
    }
}

/// One call: its grant and the per-call state of every service.
pub(crate) struct TestCall {
    /// The call's grant.
    pub(crate) grant: Grant,
    /// The services' per-call states; host calls are made on these.
    pub(crate) services: CallServices,
}
