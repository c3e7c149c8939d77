//! A guest that drives the host's `trainer` service for the host's tests.
//!
//! `solve` runs a script: `task.input` holds one command per line and the
//! answer holds one result line per command, in order. Jobs are numbered in
//! submission order (`0`, `1`, …); in scripts, `\n` stands for a newline.
//!
//! | command | result |
//! |---|---|
//! | `submit SECONDS RECIPE CONFIG-JSON` | `ok`, or `err KIND: …` |
//! | `submit-script SECONDS RECIPE SCRIPT…` | as `submit`, config `{}` and the script |
//! | `poll N` / `cancel N` | `PHASE seconds=S metrics=K:V,… msg=MESSAGE` or `err KIND: …` |
//! | `wait N MS` | as `poll`, after waiting up to MS milliseconds |
//! | `log N` | the job's log tail (after a wait), newlines as `\n` |
//! | `poll-id ID` | as `poll`, for a raw job id |
//! | `left` | seconds left, to 0.1 s |
//!
//! `improve` always answers `Err("not supported")`.

use vivarium_guest::{trainer, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

struct TrainerGuest;

fn error(e: trainer::Error) -> String {
    match e {
        trainer::Error::Denied(m) => format!("err denied: {m}"),
        trainer::Error::BudgetExhausted(m) => format!("err budget-exhausted: {m}"),
        trainer::Error::InvalidJob(m) => format!("err invalid-job: {m}"),
        trainer::Error::UnknownJob(m) => format!("err unknown-job: {m}"),
        trainer::Error::Unavailable(m) => format!("err unavailable: {m}"),
    }
}

fn phase(p: trainer::Phase) -> &'static str {
    match p {
        trainer::Phase::Queued => "queued",
        trainer::Phase::Running => "running",
        trainer::Phase::Succeeded => "succeeded",
        trainer::Phase::Failed => "failed",
        trainer::Phase::Cancelled => "cancelled",
        trainer::Phase::BudgetExhausted => "budget-exhausted",
    }
}

fn status(s: Result<trainer::JobStatus, trainer::Error>, last_log: &mut String) -> String {
    match s {
        Ok(s) => {
            *last_log = s.log_tail.replace('\n', "\\n");
            let metrics: Vec<String> = s.metrics.iter().map(|m| format!("{}:{}", m.name, m.value)).collect();
            format!(
                "{} seconds={:.1} metrics={} msg={}",
                phase(s.phase),
                s.seconds,
                metrics.join(","),
                s.message.replace('\n', " ")
            )
        }
        Err(e) => error(e),
    }
}

impl TaskAgent for TrainerGuest {
    fn solve(task: Task) -> Result<Answer, String> {
        let mut out = Vec::new();
        let mut jobs: Vec<String> = Vec::new();
        let mut last_log = String::new();
        for line in task.input.lines() {
            let mut words = line.splitn(4, ' ');
            let cmd = words.next().unwrap_or("");
            let a = words.next().unwrap_or("");
            let b = words.next().unwrap_or("");
            let c = words.next().unwrap_or("");
            let job = |n: &str| jobs.get(n.parse::<usize>().unwrap_or(usize::MAX)).cloned().unwrap_or_default();
            let r = match cmd {
                "submit" | "submit-script" => {
                    let script = cmd == "submit-script";
                    let spec = trainer::JobSpec {
                        recipe: b.to_string(),
                        config_json: if script { "{}".to_string() } else { c.to_string() },
                        script: script.then(|| c.replace("\\n", "\n")),
                        budget_seconds: a.parse().unwrap_or(f64::NAN),
                    };
                    match trainer::submit(&spec) {
                        Ok(id) => {
                            jobs.push(id);
                            "ok".to_string()
                        }
                        Err(e) => error(e),
                    }
                }
                "poll" => status(trainer::poll(&job(a)), &mut last_log),
                "poll-id" => status(trainer::poll(a), &mut last_log),
                "cancel" => status(trainer::cancel(&job(a)), &mut last_log),
                "wait" => status(trainer::wait(&job(a), b.parse().unwrap_or(0)), &mut last_log),
                "log" => last_log.clone(),
                "left" => format!("{:.1}", trainer::seconds_left()),
                other => format!("unknown command {other:?}"),
            };
            out.push(r);
        }
        Ok(Answer::new(out.join("\n")))
    }
}

impl MetaAgent for TrainerGuest {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".into())
    }
}

vivarium_guest::export!(TrainerGuest);
