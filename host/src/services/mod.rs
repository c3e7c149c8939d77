//! Host services a variant may import.
//!
//! Every service has the same shape (after Spin's per-capability factors):
//!
//! 1. a grant type in [`crate::caps::grant`] (operator config → per-variant grant),
//! 2. per-call state holding the grant's caps and a usage counter,
//! 3. `add_to_linker`, called only when the grant names the service,
//! 4. a usage summary folded into the call's one audit record,
//! 5. tests.
//!
//! `log` is always granted. The other interfaces of the WIT world (`llm`,
//! `trainer`, `simulator`, `memory`, `archive`) are refused at load until
//! they are implemented here.

pub mod log;

/// Interfaces of `vivarium:agent` that this host implements, by short name.
pub const IMPLEMENTED: &[&str] = &["log"];
