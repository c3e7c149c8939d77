//! The registry: every host service but `log`, listed once.
//!
//! Each structure that gathers every service — the grant ([`Grant`]), a
//! manifest's `[capabilities]` ([`Capabilities`]), a policy's
//! ([`CapabilityPolicy`]), a call's per-service states ([`CallServices`])
//! and usage ([`ServiceUsage`]) — and each loop over them (resolve, normal
//! form, diff, escalation check, linking, the end of a call) is generated
//! from the one list in [`registry!`], the way Spin's
//! `#[derive(RuntimeFactors)]` generates its gathering struct from a list
//! of factors. Adding a service is its folder and its line here (and its
//! WIT file, the contract); see docs/architecture.md.
//!
//! A service's line names its *factor*, a unit struct implementing
//! [`Service`] (its types) and [`PerCall`] (how one call gets its state,
//! links it and ends it).
//!
//! [`Grant`]: crate::caps::Grant
//! [`Capabilities`]: crate::caps::manifest::Capabilities
//! [`CapabilityPolicy`]: crate::caps::policy::CapabilityPolicy

use std::fmt;
use std::future::Future;

use serde::Serialize;

use crate::caps::service::ServiceCaps;
use crate::caps::Grant;
use crate::runtime::HostState;

use super::{CallScope, HostServices};

/// Calls `$callback! { [$($field: $factor,)*] [$($field: $factor,)*] }`
/// with every service, by its grant field and its factor, in the order of
/// the grant's fields.
///
/// The first group holds the services of `vivarium:agent@0.1.0`, whose keys
/// come before the non-service keys (`files`, `env`, …) in a manifest's and a
/// policy's `[capabilities]`; the second, the services added since, whose
/// keys come after them. The order is part of the serialized forms (the
/// grant's JSON, the order of keys in written TOML and in "expected one of"
/// errors), so **a new service's line goes last**.
///
/// A gathering site writes a `macro_rules!` taking the two groups and calls
/// `registry!(its_macro)` (wasmtime's `foreach_builtin_function!` pattern).
macro_rules! registry {
    ($callback:ident) => {
        $callback! {
            [
                llm: $crate::services::llm::LlmFactor,
                trainer: $crate::services::trainer::TrainerFactor,
                simulator: $crate::services::simulator::SimulatorFactor,
                memory: $crate::services::memory::MemoryFactor,
                archive: $crate::services::archive_view::ArchiveFactor,
            ]
            [
                workbench: $crate::services::workbench::WorkbenchFactor,
                clock: $crate::services::clock::ClockFactor,
            ]
        }
    };
}
pub(crate) use registry;

/// One host service's types, after a Spin factor's: the grant that names
/// it (its section of the [`Grant`], with its request and policy through
/// [`ServiceCaps`]), one call's state, and what one call used.
pub trait Service: 'static {
    /// The service's section of a grant.
    type Grant: ServiceCaps;
    /// One call's state: the grant's caps, the host's shared state the call
    /// sees, and the usage counters. The WIT `Host` traits are implemented
    /// on it.
    type State: fmt::Debug + Clone + Send + Sync + 'static;
    /// What one call used, in the call's audit `use` record under
    /// `services.NAME`.
    type Usage: fmt::Debug + Clone + PartialEq + Serialize + Send + 'static;
    /// The `vivarium:agent` versions whose interface `NAME` this service
    /// implements; the import check refuses any other.
    const VERSIONS: &'static [&'static str];
}

/// How the runtime runs a [`Service`] for one call: its state, built for
/// every call (granted or not); its host functions, linked only when the
/// grant names the service (a variant never reaches an ungranted service:
/// its import was refused before linking); and its usage when the call
/// ends.
pub(crate) trait PerCall: Service {
    /// The state of one call under `grant`, whose section for this service
    /// is `section` (`None`: not granted, so not linked and no usage).
    fn state(section: Option<&Self::Grant>, grant: &Grant, host: &HostServices, scope: &CallScope) -> Self::State;

    /// A state with nothing granted and no host behind it (a reward
    /// instance's store).
    fn unlinked() -> Self::State;

    /// Add the service's host functions to `linker`; `get` reaches the
    /// call's state.
    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<HostState>,
        get: fn(&mut HostState) -> &mut Self::State,
    ) -> wasmtime::Result<()>;

    /// The usage so far; `None` when the service is not granted.
    fn usage(state: &Self::State) -> Option<Self::Usage>;

    /// The usage once the call is over, after the service has ended what
    /// the call left running. Runs on an executor thread other calls share,
    /// so it must never block it.
    fn finish(state: &Self::State) -> impl Future<Output = Option<Self::Usage>> + Send {
        std::future::ready(Self::usage(state))
    }
}

/// The name of a service's interface and grant field.
const fn name<S: Service>() -> &'static str {
    <S::Grant as ServiceCaps>::NAME
}

macro_rules! call_services {
    ([$($a:ident: $fa:ty,)*] [$($b:ident: $fb:ty,)*]) => {
        call_services! { @all $($a: $fa,)* $($b: $fb,)* }
    };
    (@all $($field:ident: $factor:ty,)*) => {
        /// Interfaces of `vivarium:agent` that this host implements, by short
        /// name: `log` and every service of the registry.
        pub const IMPLEMENTED: &[&str] = &["log", $(name::<$factor>(),)*];

        /// The `vivarium:agent` versions of interface `name` that a service
        /// of the registry implements (`None`: no service has that name).
        pub(crate) fn versions(iface: &str) -> Option<&'static [&'static str]> {
            $(if iface == name::<$factor>() {
                return Some(<$factor as Service>::VERSIONS);
            })*
            None
        }

        /// The per-call states of the services other than `log`.
        #[derive(Debug, Clone)]
        pub(crate) struct CallServices {
            $(
                #[doc = concat!("The `", stringify!($field), "` service.")]
                pub(crate) $field: <$factor as Service>::State,
            )*
        }

        /// What one call used of the granted services other than `log`; a
        /// service not granted is left out.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct ServiceUsage {
            $(
                #[doc = concat!("The `", stringify!($field), "` service.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<<$factor as Service>::Usage>,
            )*
        }

        impl ServiceUsage {
            /// Whether no service other than `log` was granted.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())*
            }
        }

        impl HostServices {
            /// The per-call states of one call under `grant`: a service the
            /// grant does not name gets a state that is not linked and
            /// reports no usage.
            pub(crate) fn for_call(&self, grant: &Grant, scope: CallScope) -> CallServices {
                CallServices {
                    $($field: <$factor as PerCall>::state(grant.$field.as_ref(), grant, self, &scope),)*
                }
            }
        }

        impl CallServices {
            /// States with no service granted (a reward instance's store).
            pub(crate) fn none() -> Self {
                Self { $($field: <$factor as PerCall>::unlinked(),)* }
            }

            /// What the call used, once it is over (each service ends what
            /// the call left running, asynchronously: see
            /// [`PerCall::finish`]).
            pub(crate) async fn finish(&self) -> ServiceUsage {
                ServiceUsage { $($field: <$factor as PerCall>::finish(&self.$field).await,)* }
            }

            /// Link the host functions of every service `grant` names.
            pub(crate) fn link(
                grant: &Grant,
                linker: &mut wasmtime::component::Linker<HostState>,
            ) -> wasmtime::Result<()> {
                $(if grant.$field.is_some() {
                    <$factor as PerCall>::add_to_linker(linker, |s| &mut s.services.$field)?;
                })*
                Ok(())
            }
        }

        /// Each service's types as the folder check reads them: its factor,
        /// grant, request and policy, by full path.
        #[cfg(test)]
        fn service_types() -> Vec<(&'static str, [&'static str; 4])> {
            use std::any::type_name;
            vec![$((
                stringify!($field),
                [
                    type_name::<$factor>(),
                    type_name::<<$factor as Service>::Grant>(),
                    type_name::<<<$factor as Service>::Grant as ServiceCaps>::Request>(),
                    type_name::<<<$factor as Service>::Grant as ServiceCaps>::Policy>(),
                ],
            ),)*]
        }

        #[cfg(test)]
        mod names {
            /// Each line's field is its service's name (its interface, its
            /// key under `[capabilities]`).
            #[test]
            fn every_field_is_its_service_name() {
                $(assert_eq!(super::name::<$factor>(), stringify!($field));)*
            }
        }
    };
}

registry!(call_services);

/// The must-hold, made a check that fails when someone breaks it: a
/// service is its folder plus its line here, so no file of `host/src` other
/// than the service's own folder (`services/<name>/`) and this registry
/// names its factor, grant, request or policy type (`grep -rl LlmGrant
/// host/src` finds only `services/llm/` and `services/registry.rs`).
#[cfg(test)]
mod folders {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Whether `text` holds `ident` as a whole identifier.
    fn names(text: &str, ident: &str) -> bool {
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        text.match_indices(ident).any(|(at, _)| {
            !text[..at].chars().next_back().is_some_and(is_ident)
                && !text[at + ident.len()..].chars().next().is_some_and(is_ident)
        })
    }

    #[test]
    fn a_service_type_is_named_only_in_its_folder_and_the_registry() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 50, "{} files under {}", files.len(), src.display());
        let registry = src.join("services/registry.rs");
        let mut checked = 0;
        let mut found = Vec::new();
        for (field, types) in super::service_types() {
            // `vivarium::services::<folder>::…::Type`; `()`, an on/off
            // service's policy, is no type of the service's own.
            for path in types.iter().filter(|t| t.contains("::")) {
                let parts: Vec<&str> = path.split("::").collect();
                assert_eq!(parts[..2], ["vivarium", "services"], "{field}: {path} is not in a service folder");
                let folder = src.join("services").join(parts[2]);
                let ident = parts[parts.len() - 1];
                checked += 1;
                for file in files.iter().filter(|f| !f.starts_with(&folder) && **f != registry) {
                    if names(&std::fs::read_to_string(file).unwrap(), ident) {
                        found.push(format!("{ident} ({field}) in {}", file.strip_prefix(&src).unwrap().display()));
                    }
                }
            }
        }
        // 7 factors, 7 grants, 7 requests, 5 policies.
        assert_eq!(checked, 26);
        assert!(found.is_empty(), "a service's types named outside its folder and the registry: {found:#?}");
    }

    #[test]
    fn the_check_finds_a_name() {
        assert!(names("x: Option<LlmGrant>,", "LlmGrant"));
        assert!(names("LlmGrant", "LlmGrant"));
        assert!(!names("LlmGrantish LlmRequestRecord _LlmGrant", "LlmGrant"));
        assert!(!names("LlmRequestRecord", "LlmRequest"));
    }
}
