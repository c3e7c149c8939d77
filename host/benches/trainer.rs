//! The trainer benchmark: what the host's job machinery costs on top of the
//! raw training loop of the embedded backend.
//!
//! 1. `raw_train`: [`embedded::train`] called directly on this thread — a
//!    tiny model (d_model 16, 1 layer, context 16, batch 4) for 5 steps,
//!    then its evaluation.
//! 2. `job`: the same config as a job: [`Trainer::run_blocking`] — the spec
//!    check, the job table, the job and backend threads, the watchdog, the
//!    end of the job and the wait.
//! 3. `submit_to_running`: from `submit` until the job is `running` (queue
//!    and thread start), then the job is cancelled outside the timing.
//! 4. `submit_to_first_step`: from `submit` until the backend reports its
//!    first finished step (`steps` = 1 in the job's progress) — model setup
//!    included.
//!
//! Run with `cargo bench -p vivarium --bench trainer`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vivarium::trainer::embedded::{self, LmConfig};
use vivarium::trainer::{EvalSplit, JobSpec, Ledger, Phase, Trainer, TrainerConfig};

fn config() -> LmConfig {
    LmConfig { d_model: 16, layers: 1, heads: 2, context: 16, batch: 4, steps: Some(5), ..LmConfig::default() }
}

fn spec(steps: u64) -> JobSpec {
    JobSpec {
        recipe: embedded::RECIPE.into(),
        config: serde_json::json!({"d_model": 16, "layers": 1, "heads": 2, "context": 16, "batch": 4, "steps": steps}),
        script: None,
        budget: Duration::from_secs(30),
        eval_split: EvalSplit::Validation,
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let trainer = Arc::new(Trainer::with_backend(
        TrainerConfig::default(),
        Arc::new(embedded::Embedded::new()),
        Ledger::in_memory(),
    ));
    {
        let mut g = c.benchmark_group("trainer");
        g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        g.bench_function("raw_train", |b| {
            b.iter(|| {
                let r =
                    embedded::train(&config(), EvalSplit::Validation, Duration::from_secs(30), &|| false, &|_, _| {})
                        .unwrap();
                black_box(r.metrics["val_bpb"])
            })
        });
        g.bench_function("job", |b| {
            b.iter(|| {
                let s = trainer.run_blocking(spec(5)).unwrap();
                assert_eq!(s.phase, Phase::Succeeded);
                black_box(s.metrics["val_bpb"])
            })
        });
        g.bench_function("submit_to_running", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let id = trainer.submit(spec(1_000_000), None).unwrap();
                    while trainer.status(&id).unwrap().phase == Phase::Queued {
                        std::hint::spin_loop();
                    }
                    total += start.elapsed();
                    trainer.cancel(&id);
                    trainer.wait_blocking(&id, Duration::from_secs(10));
                }
                total
            })
        });
        g.bench_function("submit_to_first_step", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let id = trainer.submit(spec(1_000_000), None).unwrap();
                    while !trainer.status(&id).unwrap().metrics.contains_key("steps") {
                        std::thread::yield_now();
                    }
                    total += start.elapsed();
                    trainer.cancel(&id);
                    trainer.wait_blocking(&id, Duration::from_secs(10));
                }
                total
            })
        });
        g.finish();
    }
    c.final_summary();
}
