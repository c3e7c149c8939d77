//! The one budget ledger: every run- and grant-level budget the host
//! counts — `llm` tokens, `llm` dollars, `trainer` seconds, simulator
//! steps — in one SQLite file, `$VIVARIUM_HOME/ledger.sqlite`
//! ([`Home::ledger_file`]), opened one way, so that a resumed run sees what
//! was spent before it stopped or was killed.
//!
//! # Accounts and amounts
//!
//! An *account* is a string: a variant's budget in a run is
//! [`budget_key`]`(run, variant_sha256)` = `<run>/<sha256>` (`-/<sha256>`
//! outside a run), what a grant's budgets (`llm.tokens`, `llm.usd`,
//! `trainer.gpu_seconds`) are held against; a run as a whole is
//! [`run_account`]`(run)` = `<run>`, where `vivarium evolve` records what its
//! evaluations measured (trainer seconds, simulator steps). Amounts are
//! whole numbers in each [`Resource`]'s unit (tokens, nano-dollars,
//! microseconds, steps), so sums and limits are exact.
//!
//! # Reserve, settle, left
//!
//! * **reserve** — before the work is done, its *worst case* is added to
//!   the account in one `IMMEDIATE` transaction, if the account stays within
//!   its limit and (for a run limit) the run's variant accounts together
//!   stay within the run's; otherwise nothing is added and the answer says
//!   which limit, what was spent and what is left ([`Exceeded`]). Two calls
//!   running side by side cannot both pass a limit.
//! * **settle** — when the work ends, the reservation is replaced by what
//!   it really cost (a refund when nothing was done). The real cost may be
//!   above the reservation where the worst case is an estimate (an `llm`
//!   prompt's tokens are estimated from its bytes): that overshoot is the
//!   only way an account passes its limit, by at most one settled request
//!   per call running at once.
//! * **left** — the limit minus everything charged: settled amounts and
//!   reservations still open.
//!
//! A reservation whose process died (kill -9, a crash) is never settled: it
//! stays charged **at its worst case**. The provider may have done and
//! billed the work, and a budget must never be handed back on a guess; the
//! cost is at most one request's worst case per call that was in flight.
//!
//! # Exhaustion
//!
//! When a reservation is refused because of a run's limit, the ledger
//! remembers it ([`Ledger::exhausted`]): a run whose next request does not
//! fit has reached its budget even when a little is left, and `vivarium
//! evolve` stops it cleanly before its next step (and a resume says so).
//!
//! # Homes from before the one ledger
//!
//! A home written before this file existed kept `llm` tokens in
//! `llm-ledger.sqlite` and trainer seconds in `trainer-ledger.sqlite`. The
//! first open of the ledger reads each such file once, adds its amounts in
//! the same transaction that records it as migrated (table `migrated`), and
//! leaves it in place untouched; a second open does not read it again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::home::Home;

/// The ledger key of a variant's budget in a run: the `llm` tokens and
/// dollars and the `trainer` seconds of one variant are counted under it.
pub fn budget_key(run: Option<&str>, variant_sha256: &str) -> String {
    format!("{}/{variant_sha256}", run.unwrap_or("-"))
}

/// The account of a run as a whole (what its evaluations measured).
pub fn run_account(run: &str) -> String {
    run.to_string()
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// `llm` prompt + completion tokens.
    LlmTokens,
    /// `llm` cost in nano-dollars (10⁻⁹ USD, see [`crate::units::Usd`]).
    Usd,
    /// `trainer` seconds, in microseconds.
    TrainerSeconds,
    /// Simulator steps.
    SimSteps,
}

impl Resource {
    /// The name stored in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Resource::LlmTokens => "llm_tokens",
            Resource::Usd => "usd",
            Resource::TrainerSeconds => "trainer_seconds",
            Resource::SimSteps => "sim_steps",
        }
    }

    /// How a person reads an amount of it.
    pub fn show(self, amount: u64) -> String {
        match self {
            Resource::LlmTokens => format!("{amount} tokens"),
            Resource::Usd => crate::units::Usd(amount).to_string(),
            Resource::TrainerSeconds => format!("{:.1} trainer seconds", amount as f64 / 1e6),
            Resource::SimSteps => format!("{amount} simulator steps"),
        }
    }
}

/// Trainer seconds as the ledger's microseconds, rounded up.
pub fn micros(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e6).ceil() as u64
}

/// One amount to reserve in an account, with the limits it must fit.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    /// What is reserved.
    pub resource: Resource,
    /// How much (the worst case).
    pub amount: u64,
    /// The account's own limit (a grant's budget); `None`: unlimited.
    pub limit: Option<u64>,
    /// A limit on the run's variant accounts together: `(run, limit)`.
    pub run_limit: Option<(&'a str, u64)>,
}

/// Which limit a reservation would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The account's own (the grant's budget).
    Grant,
    /// The run's (`[budget]` in `run.toml`).
    Run,
}

/// Why a reservation was refused: the limit, what was already charged
/// under it, and the amount asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// What was reserved.
    pub resource: Resource,
    /// Whose limit.
    pub scope: Scope,
    /// Charged under that limit so far.
    pub spent: u64,
    /// The limit.
    pub limit: u64,
    /// The amount asked.
    pub asked: u64,
}

impl Exceeded {
    /// What is left under the limit.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.spent)
    }
}

/// A run that reached a limit: recorded when a reservation was refused for
/// the run's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhaustion {
    /// The run's limit then.
    pub limit: u64,
    /// What the run had spent then.
    pub spent: u64,
    /// The amount that did not fit.
    pub asked: u64,
}

/// The ledger (see the [module docs](self)). Opened on first use; cheap to
/// share behind an `Arc`.
pub struct Ledger {
    path: Option<PathBuf>,
    legacy: Vec<(PathBuf, Legacy)>,
    conn: Mutex<Option<Connection>>,
}

/// The shape of a ledger file from before the one ledger.
#[derive(Debug, Clone, Copy)]
pub enum Legacy {
    /// `llm-ledger.sqlite`: `spend(budget TEXT, tokens INTEGER)`.
    LlmTokens,
    /// `trainer-ledger.sqlite`: `spent(key TEXT, seconds REAL)`.
    TrainerSeconds,
}

impl Default for Ledger {
    /// [`Ledger::in_memory`].
    fn default() -> Self {
        Self::in_memory()
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS spend(
        account TEXT NOT NULL, resource TEXT NOT NULL, amount INTEGER NOT NULL,
        PRIMARY KEY (account, resource)) STRICT;
    CREATE TABLE IF NOT EXISTS exhausted(
        account TEXT NOT NULL, resource TEXT NOT NULL,
        lim INTEGER NOT NULL, spent INTEGER NOT NULL, asked INTEGER NOT NULL,
        PRIMARY KEY (account, resource)) STRICT;
    CREATE TABLE IF NOT EXISTS migrated(file TEXT PRIMARY KEY, at TEXT NOT NULL) STRICT;
";

impl Ledger {
    /// The ledger of `home` at [`Home::ledger_file`], migrating the home's
    /// older ledger files on first open.
    pub fn for_home(home: &Home) -> Self {
        let legacy = vec![
            (home.root().join(crate::home::LEGACY_LLM_LEDGER), Legacy::LlmTokens),
            (home.root().join(crate::home::LEGACY_TRAINER_LEDGER), Legacy::TrainerSeconds),
        ];
        Self { path: Some(home.ledger_file()), legacy, conn: Mutex::new(None) }
    }

    /// A ledger at `path`, opened on first use, with no older files to read.
    pub fn at(path: PathBuf) -> Self {
        Self { path: Some(path), legacy: Vec::new(), conn: Mutex::new(None) }
    }

    /// A ledger in memory, for one process (tests, graders, embedding).
    pub fn in_memory() -> Self {
        Self { path: None, legacy: Vec::new(), conn: Mutex::new(None) }
    }

    /// Where the ledger lives; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        let at = self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "memory".into());
        Error::Internal(anyhow::anyhow!("budget ledger {at}: {e}"))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        f(guard.as_mut().expect("opened above")).map_err(|e| self.err(e))
    }

    fn open(&self) -> Result<Connection> {
        let conn = match &self.path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                }
                Connection::open(p)
            }
            None => Connection::open_in_memory(),
        }
        .map_err(|e| self.err(e))?;
        let mut conn = conn;
        (|| {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
            conn.execute_batch(SCHEMA)?;
            for (file, kind) in &self.legacy {
                migrate(&mut conn, file, *kind)?;
            }
            Ok(())
        })()
        .map_err(|e| self.err(e))?;
        Ok(conn)
    }

    /// Everything charged to `account` for `resource` (open reservations
    /// included).
    pub fn spent(&self, account: &str, resource: Resource) -> Result<u64> {
        self.with(|c| amount(c, account, resource))
    }

    /// Everything charged for `resource` to the variant accounts of `run`
    /// together: what a run's `[budget]` is held against.
    pub fn spent_in_run(&self, run: &str, resource: Resource) -> Result<u64> {
        self.with(|c| run_amount(c, run, resource))
    }

    /// Every variant account of `run` with a charge for `resource`:
    /// `(variant sha256, amount)`.
    pub fn by_variant(&self, run: &str, resource: Resource) -> Result<Vec<(String, u64)>> {
        let prefix = budget_key(Some(run), "");
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT account, amount FROM spend WHERE resource = ?1
                 AND substr(account, 1, length(?2)) = ?2 AND amount > 0 ORDER BY account",
            )?;
            let rows = st.query_map(params![resource.name(), prefix], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            rows.map(|r| r.map(|(a, n)| (a[prefix.len()..].to_string(), n))).collect()
        })
    }

    /// What is left of `limit` in `account` for `resource`.
    pub fn left(&self, account: &str, resource: Resource, limit: u64) -> Result<u64> {
        Ok(limit.saturating_sub(self.spent(account, resource)?))
    }

    /// Reserve every charge in `account`, all or none (see the [module
    /// docs](self)); the inner `Err` names the first limit that would be
    /// passed. A refusal for a run's limit is remembered
    /// ([`Ledger::exhausted`]).
    pub fn reserve(&self, account: &str, charges: &[Charge<'_>]) -> Result<std::result::Result<(), Exceeded>> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for ch in charges {
                if let Some(limit) = ch.limit {
                    let spent = amount(&tx, account, ch.resource)?;
                    if spent.saturating_add(ch.amount) > limit {
                        let e = Exceeded { resource: ch.resource, scope: Scope::Grant, spent, limit, asked: ch.amount };
                        return Ok(Err(e));
                    }
                }
                if let Some((run, limit)) = ch.run_limit {
                    let spent = run_amount(&tx, run, ch.resource)?;
                    if spent.saturating_add(ch.amount) > limit {
                        tx.execute(
                            "INSERT OR REPLACE INTO exhausted(account, resource, lim, spent, asked)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![run_account(run), ch.resource.name(), limit as i64, spent as i64, ch.amount as i64],
                        )?;
                        tx.commit()?;
                        let e = Exceeded { resource: ch.resource, scope: Scope::Run, spent, limit, asked: ch.amount };
                        return Ok(Err(e));
                    }
                }
            }
            for ch in charges {
                add(&tx, account, ch.resource, ch.amount as i64)?;
            }
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// Replace a reservation of `reserved` in `account` by the `actual`
    /// cost (never below zero).
    pub fn settle(&self, account: &str, resource: Resource, reserved: u64, actual: u64) -> Result<()> {
        if reserved == actual {
            return Ok(());
        }
        self.with(|c| add(c, account, resource, actual as i64 - reserved as i64))
    }

    /// Charge `amount` that was measured, not reserved (a run's simulator
    /// steps as its evaluations reported them).
    pub fn record(&self, account: &str, resource: Resource, amount: u64) -> Result<()> {
        if amount == 0 {
            return Ok(());
        }
        self.with(|c| add(c, account, resource, amount as i64))
    }

    /// Raise `account`'s `resource` to at least `amount` (reading a run's
    /// older `spent.json` once: what it recorded is what was spent).
    pub fn raise_to(&self, account: &str, resource: Resource, at_least: u64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = amount(&tx, account, resource)?;
            if now < at_least {
                add(&tx, account, resource, (at_least - now) as i64)?;
            }
            tx.commit()
        })
    }

    /// Forget everything charged in `run` (its account, its variants'
    /// accounts, its exhaustion): the run was removed, and a new run of the
    /// same name starts with its budgets whole. Returns the rows removed.
    pub fn forget_run(&self, run: &str) -> Result<usize> {
        let prefix = budget_key(Some(run), "");
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            for table in ["spend", "exhausted"] {
                n += tx.execute(
                    &format!("DELETE FROM {table} WHERE account = ?1 OR substr(account, 1, length(?2)) = ?2"),
                    params![run_account(run), prefix],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// Whether `run` was refused a reservation of `resource` for its limit
    /// of `limit` or less: it has reached that budget.
    pub fn exhausted(&self, run: &str, resource: Resource, limit: u64) -> Result<Option<Exhaustion>> {
        self.with(|c| {
            c.query_row(
                "SELECT lim, spent, asked FROM exhausted WHERE account = ?1 AND resource = ?2 AND lim >= ?3",
                params![run_account(run), resource.name(), limit as i64],
                |r| {
                    Ok(Exhaustion {
                        limit: r.get::<_, i64>(0)? as u64,
                        spent: r.get::<_, i64>(1)? as u64,
                        asked: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
        })
    }
}

fn amount(c: &Connection, account: &str, resource: Resource) -> rusqlite::Result<u64> {
    Ok(c.query_row(
        "SELECT amount FROM spend WHERE account = ?1 AND resource = ?2",
        params![account, resource.name()],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .unwrap_or(0)
    .max(0) as u64)
}

fn run_amount(c: &Connection, run: &str, resource: Resource) -> rusqlite::Result<u64> {
    let prefix = budget_key(Some(run), "");
    c.query_row(
        "SELECT coalesce(sum(amount), 0) FROM spend WHERE resource = ?2 AND substr(account, 1, length(?1)) = ?1",
        params![prefix, resource.name()],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

fn add(c: &Connection, account: &str, resource: Resource, delta: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO spend(account, resource, amount) VALUES (?1, ?2, max(?3, 0))
         ON CONFLICT(account, resource) DO UPDATE SET amount = max(amount + ?3, 0)",
        params![account, resource.name(), delta],
    )?;
    Ok(())
}

/// Read an older ledger file once (see the [module docs](self)).
fn migrate(conn: &mut Connection, file: &Path, kind: Legacy) -> rusqlite::Result<()> {
    if !file.is_file() {
        return Ok(());
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done: Option<String> =
        tx.query_row("SELECT at FROM migrated WHERE file = ?1", [&name], |r| r.get(0)).optional()?;
    if done.is_some() {
        return Ok(());
    }
    let old = Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    old.busy_timeout(Duration::from_secs(10))?;
    let rows: Vec<(String, u64)> = match kind {
        Legacy::LlmTokens => read_legacy(&old, "SELECT budget, tokens FROM spend", |v| v.max(0.0) as u64)?,
        Legacy::TrainerSeconds => read_legacy(&old, "SELECT key, seconds FROM spent", micros)?,
    };
    let resource = match kind {
        Legacy::LlmTokens => Resource::LlmTokens,
        Legacy::TrainerSeconds => Resource::TrainerSeconds,
    };
    for (account, n) in rows {
        add(&tx, &account, resource, n as i64)?;
    }
    tx.execute("INSERT INTO migrated(file, at) VALUES (?1, ?2)", params![name, crate::audit::now_rfc3339()])?;
    tx.commit()
}

/// The rows of an older ledger; a file without the table holds nothing.
fn read_legacy(old: &Connection, sql: &str, unit: impl Fn(f64) -> u64) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut st = match old.prepare(sql) {
        Ok(st) => st,
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
    rows.map(|r| r.map(|(k, v)| (k, unit(v)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(amount: u64, limit: u64) -> Charge<'static> {
        Charge { resource: Resource::LlmTokens, amount, limit: Some(limit), run_limit: None }
    }

    #[test]
    fn reserve_within_the_limit_then_settle_to_the_real_cost() {
        let l = Ledger::in_memory();
        assert_eq!(l.reserve("r/a", &[tokens(60, 100)]).unwrap(), Ok(()));
        let refused = l.reserve("r/a", &[tokens(50, 100)]).unwrap().unwrap_err();
        assert_eq!((refused.scope, refused.spent, refused.left(), refused.asked), (Scope::Grant, 60, 40, 50));
        l.settle("r/a", Resource::LlmTokens, 60, 20).unwrap();
        assert_eq!(l.spent("r/a", Resource::LlmTokens).unwrap(), 20);
        assert_eq!(l.left("r/a", Resource::LlmTokens, 100).unwrap(), 80);
        assert_eq!(l.reserve("r/a", &[tokens(80, 100)]).unwrap(), Ok(()));
        assert_eq!(l.spent("r/a", Resource::LlmTokens).unwrap(), 100);
        // Other accounts and resources are apart.
        assert_eq!(l.spent("r/b", Resource::LlmTokens).unwrap(), 0);
        assert_eq!(l.spent("r/a", Resource::Usd).unwrap(), 0);
        // A refund never goes below zero.
        l.settle("r/a", Resource::LlmTokens, 500, 0).unwrap();
        assert_eq!(l.spent("r/a", Resource::LlmTokens).unwrap(), 0);
    }

    #[test]
    fn charges_are_all_or_none_and_a_run_limit_spans_its_variants() {
        let l = Ledger::in_memory();
        let usd = |amount, run_limit| Charge { resource: Resource::Usd, amount, limit: None, run_limit };
        assert_eq!(l.reserve("r/a", &[tokens(10, 100), usd(700, Some(("r", 1000)))]).unwrap(), Ok(()));
        // Another variant of the run: its own account is empty, the run's is not.
        let e = l.reserve("r/b", &[tokens(10, 100), usd(400, Some(("r", 1000)))]).unwrap().unwrap_err();
        assert_eq!((e.resource, e.scope, e.spent, e.limit), (Resource::Usd, Scope::Run, 700, 1000));
        // Nothing of the refused reservation was charged, tokens included.
        assert_eq!(l.spent("r/b", Resource::LlmTokens).unwrap(), 0);
        assert_eq!(l.spent_in_run("r", Resource::Usd).unwrap(), 700);
        // The run is remembered as having reached its budget of 1000 (and any lower).
        let x = l.exhausted("r", Resource::Usd, 1000).unwrap().unwrap();
        assert_eq!((x.spent, x.asked), (700, 400));
        assert!(l.exhausted("r", Resource::Usd, 900).unwrap().is_some());
        assert!(l.exhausted("r", Resource::Usd, 2000).unwrap().is_none());
        assert!(l.exhausted("other", Resource::Usd, 1).unwrap().is_none());
        // Another run with a similar name is not summed in.
        l.reserve("r2/a", &[usd(999, Some(("r2", 1000)))]).unwrap().unwrap();
        assert_eq!(l.spent_in_run("r", Resource::Usd).unwrap(), 700);
        assert_eq!(l.by_variant("r", Resource::Usd).unwrap(), vec![("a".to_string(), 700)]);
        // A removed run is forgotten whole; the other run is not.
        l.record("r", Resource::SimSteps, 5).unwrap();
        assert_eq!(l.forget_run("r").unwrap(), 4);
        assert_eq!((l.spent_in_run("r", Resource::Usd).unwrap(), l.spent("r", Resource::SimSteps).unwrap()), (0, 0));
        assert!(l.exhausted("r", Resource::Usd, 1000).unwrap().is_none());
        assert_eq!(l.spent_in_run("r2", Resource::Usd).unwrap(), 999);
    }

    #[test]
    fn a_reservation_left_open_by_a_dead_process_stays_charged_at_its_worst_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        {
            let l = Ledger::at(path.clone());
            l.reserve("r/a", &[tokens(300, 1000)]).unwrap().unwrap();
            // The process dies here: no settle.
        }
        let l = Ledger::at(path);
        assert_eq!(l.spent("r/a", Resource::LlmTokens).unwrap(), 300);
        assert_eq!(l.left("r/a", Resource::LlmTokens, 1000).unwrap(), 700);
    }

    #[test]
    fn an_older_home_keeps_its_spent_amounts_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        // The two files exactly as the host wrote them before the one ledger.
        let llm = Connection::open(dir.path().join(crate::home::LEGACY_LLM_LEDGER)).unwrap();
        llm.execute_batch(
            "CREATE TABLE spend(budget TEXT PRIMARY KEY, tokens INTEGER NOT NULL) STRICT;
             INSERT INTO spend VALUES ('run1/aaaa', 1200), ('run1/bbbb', 34), ('-/cccc', 5);",
        )
        .unwrap();
        drop(llm);
        let trainer = Connection::open(dir.path().join(crate::home::LEGACY_TRAINER_LEDGER)).unwrap();
        trainer
            .execute_batch(
                "CREATE TABLE spent (key TEXT PRIMARY KEY, seconds REAL NOT NULL);
                 INSERT INTO spent VALUES ('run1/aaaa', 2.5);",
            )
            .unwrap();
        drop(trainer);
        for _ in 0..2 {
            let l = Ledger::for_home(&home);
            assert_eq!(l.spent("run1/aaaa", Resource::LlmTokens).unwrap(), 1200);
            assert_eq!(l.spent_in_run("run1", Resource::LlmTokens).unwrap(), 1234);
            assert_eq!(l.spent("-/cccc", Resource::LlmTokens).unwrap(), 5);
            assert_eq!(l.spent("run1/aaaa", Resource::TrainerSeconds).unwrap(), 2_500_000);
        }
        // The older files are left as they were.
        assert!(dir.path().join(crate::home::LEGACY_LLM_LEDGER).is_file());
    }
}
