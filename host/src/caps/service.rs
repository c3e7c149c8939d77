//! What every service's section of the capabilities has in common, written
//! once: a service's grant type implements [`ServiceCaps`], and the grant
//! machinery (resolve, normal form, diff, escalation check, the request an
//! approved escalation writes back) loops over it instead of repeating the
//! "names + budget" pattern per service.
//!
//! The types themselves live in the service's folder
//! (`services/<name>/grant.rs`): its `variant.toml` request, its
//! `policy.toml` ceiling and its grant, side by side with the code that
//! enforces them.

use std::fmt;

use serde::{de::DeserializeOwned, Serialize};

use crate::caps::resolve::Builder;

/// One budget inside a service's grant, as the diff and the escalation check
/// compare it: the dotted field (`trainer.gpu_seconds`), a value that orders
/// budgets, and how the value is shown.
pub type Budget = (&'static str, u128, String);

/// A service's grant section: what `[capabilities.NAME]` asks for in
/// `variant.toml` ([`Request`](Self::Request)), the operator's ceiling under
/// `[capabilities]` in `policy.toml` ([`Policy`](Self::Policy)), and the
/// grant computed from both (the implementing type).
///
/// The grant's serialized form is part of the audit and archive formats (a
/// grant's digest is over it), so an implementation never changes it.
pub trait ServiceCaps: Clone + fmt::Display + Serialize + DeserializeOwned + PartialEq {
    /// The service's name: its `vivarium:agent` interface, its key under
    /// `[capabilities]` and its field of the grant.
    const NAME: &'static str;
    /// What a manifest asks for.
    type Request;
    /// The most of the service a policy allows.
    type Policy;
    /// The service's key under `[capabilities]` in `policy.toml`:
    /// `Option<Policy>` for a service with a ceiling (absent: never
    /// granted), `bool` for an on/off one (`Policy = ()`).
    type PolicyEntry: PolicyEntry<Self::Policy>;

    /// The built-in policy's entry (what [`Policy::default`] allows when no
    /// `policy.toml` is given); nothing unless the service says otherwise.
    ///
    /// [`Policy::default`]: crate::caps::Policy
    fn builtin_policy() -> Self::PolicyEntry {
        Self::PolicyEntry::default()
    }

    /// The request as a denial shows it (`backends [cpu], gpu_seconds 60`).
    fn summary(request: &Self::Request) -> String;

    /// The request cut down to `policy`, writing a provenance line per
    /// field and a denial per refused part to `b`; `None` when nothing of
    /// the service is left (the denial says why).
    fn grant(request: &Self::Request, policy: &Self::Policy, b: &mut Builder) -> Option<Self>;

    /// The request that, resolved under any policy, yields at most this
    /// grant (what an approved escalation writes into the child's manifest).
    fn as_request(&self) -> Self::Request;

    /// The grant's name lists (`trainer.backends`), compared as sets.
    fn name_lists(&self) -> Vec<(&'static str, &[String])> {
        Vec::new()
    }

    /// The same lists, to put them in normal form.
    fn name_lists_mut(&mut self) -> Vec<&mut Vec<String>> {
        Vec::new()
    }

    /// The grant's budgets, compared by value.
    fn budgets(&self) -> Vec<Budget> {
        Vec::new()
    }
}

/// A service's key under the policy's `[capabilities]`, whatever its shape:
/// what it allows (`None`: the service is never granted), and whether it is
/// left out when the policy is written.
pub trait PolicyEntry<P>: Clone + fmt::Debug + Default + PartialEq + Serialize + DeserializeOwned {
    /// The ceiling, when the service may be granted.
    fn allowed(&self) -> Option<&P>;
    /// Whether the entry says nothing (`None`, `false`): left out of the
    /// written policy.
    fn is_unset(&self) -> bool {
        self.allowed().is_none()
    }
}

impl<P: Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned> PolicyEntry<P> for Option<P> {
    fn allowed(&self) -> Option<&P> {
        self.as_ref()
    }
}

/// `NAME = true`: an on/off service (no ceiling of its own).
impl PolicyEntry<()> for bool {
    fn allowed(&self) -> Option<&()> {
        self.then_some(&())
    }
}

/// A granted service's section as the grant's diff and escalation check
/// read it, whatever the service: its human line, name lists and budgets.
pub(crate) trait Section: fmt::Display {
    /// [`ServiceCaps::name_lists`].
    fn name_lists(&self) -> Vec<(&'static str, &[String])>;
    /// [`ServiceCaps::budgets`].
    fn budgets(&self) -> Vec<Budget>;
}

impl<S: ServiceCaps> Section for S {
    fn name_lists(&self) -> Vec<(&'static str, &[String])> {
        ServiceCaps::name_lists(self)
    }
    fn budgets(&self) -> Vec<Budget> {
        ServiceCaps::budgets(self)
    }
}

/// Resolve service `S`: nothing when the manifest does not ask for it, a
/// denial when the policy does not allow it, else [`ServiceCaps::grant`].
pub(crate) fn resolve<S: ServiceCaps>(
    request: Option<&S::Request>,
    policy: Option<&S::Policy>,
    b: &mut Builder,
) -> Option<S> {
    let request = request?;
    match policy {
        None => {
            b.deny(S::NAME, S::summary(request), format!("the policy does not allow the {} service", S::NAME));
            None
        }
        Some(p) => S::grant(request, p, b),
    }
}

/// The "names + budget" shape (`trainer`, `simulator`): the requested names
/// the policy allows, or a denial of the whole service naming `what` when
/// none is left.
pub(crate) fn allowed_names<S: ServiceCaps>(
    request: &S::Request,
    field: &str,
    requested: &[String],
    allowed: &[String],
    what: &str,
    b: &mut Builder,
) -> Option<Vec<String>> {
    let names = b.names(field, requested, allowed);
    if names.is_empty() {
        b.deny(S::NAME, S::summary(request), format!("none of the requested {what} is allowed"));
        return None;
    }
    Some(names)
}

/// A service's section (its grant, request or policy) from its serialized
/// form. Tests outside a service's folder name a section by what it
/// serializes to, not by its type: only the folder and the registry name a
/// service's types (a test in `services/registry.rs` checks it).
#[cfg(test)]
pub(crate) fn section<T: DeserializeOwned>(json: serde_json::Value) -> T {
    serde_json::from_value(json).expect("a valid section")
}

/// A name list as the grant lines show it: `[a, b]`.
pub(crate) fn show_list(list: &[String]) -> String {
    format!("[{}]", list.join(", "))
}
