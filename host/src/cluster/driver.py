"""Vivarium's Ray driver: the coordinator's one link to a Ray cluster.

Started by the coordinator (`vivarium evolve` with `[cluster] engine =
"ray"`) as `python driver.py CONFIG_JSON`, with the Python of the Ray
install. It connects to the cluster (`ray.init(address=...)`), answers one
`{"ready": ...}` or `{"fatal": ...}` line, then reads one JSON request a
line on stdin, `{"id": N, "request": {...}}`, runs each as a Ray task and
writes `{"id": N, "ok": {...}}` or `{"id": N, "error": "..."}` as each one
finishes (in any order). When stdin closes the coordinator is gone: the
driver exits and Ray cancels what it had in flight.

A Ray task hands its request to a `vivarium __cluster-worker` process it
keeps for the life of its Ray worker process (so compiled components stay
warm between tasks), started with a fresh VIVARIUM_HOME (under
$TMPDIR/vivarium-workers; removed when its Ray worker process is gone) and an environment
of PATH only: no operator key set on the node reaches it. A worker process
that dies mid-evaluation raises `WorkerLost`, which Ray retries (Ray's own
`max_retries` / `retry_exceptions`; a node that dies is Ray's system
failure, retried the same way). Nothing here schedules: Ray does.
"""

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading


def emit(obj, _lock=threading.Lock()):
    line = json.dumps(obj, separators=(",", ":"))
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class WorkerLost(Exception):
    """The `vivarium` worker process died before answering."""


def _fresh_home(state):
    """A new, empty VIVARIUM_HOME for a worker process, under one folder per
    node; homes of Ray worker processes that are gone (killed, or ended
    with their job) are removed first, and this one goes when this process
    exits normally."""
    root = os.path.join(tempfile.gettempdir(), "vivarium-workers")
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
        try:
            owner = int(name.split("-")[0])
            if owner != os.getpid():
                os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except (ValueError, OSError):
            pass
    if state.get("home"):
        shutil.rmtree(state.pop("home"), ignore_errors=True)
    home = state["home"] = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
    if not state.get("atexit"):
        state["atexit"] = True

        def cleanup():
            proc = state.get("proc")
            if proc is not None and proc.poll() is None:
                proc.kill()
            if state.get("home"):
                shutil.rmtree(state["home"], ignore_errors=True)

        atexit.register(cleanup)
    return home


def evaluate(command, request, component_hex):
    # The worker process lives in the `sys` module's namespace: the Ray
    # worker process imports this function once and reuses it, but keeping
    # the handle outside the function's pickled globals makes it outlive a
    # re-import.
    import ray

    state = sys.__dict__.setdefault("_vivarium_worker", {})
    w = state.get("proc")
    if w is None or w.poll() is not None:
        home = _fresh_home(state)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VIVARIUM_HOME": home}
        log = open(os.path.join(home, "worker.log"), "ab")
        w = subprocess.Popen(
            [command, "__cluster-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=home,
        )
        state["proc"] = w
    request["component_hex"] = component_hex
    try:
        w.stdin.write((json.dumps(request) + "\n").encode())
        w.stdin.flush()
        line = w.stdout.readline()
    except OSError:
        line = b""
    if not line:
        try:
            w.kill()
            w.wait(timeout=5)
        except Exception:
            pass
        state.pop("proc", None)
        if state.get("home"):
            shutil.rmtree(state.pop("home"), ignore_errors=True)
        raise WorkerLost(f"the vivarium worker process (pid {w.pid}) died mid-evaluation")
    reply = json.loads(line)
    ctx = ray.get_runtime_context()
    reply["node"] = {"id": ctx.get_node_id(), "host": socket.gethostname(), "worker_pid": w.pid}
    return reply


def main():
    cfg = json.loads(sys.argv[1])
    try:
        import ray
    except Exception as e:  # the wrong Python
        emit({"fatal": f"cannot import ray with {sys.executable}: {e}"})
        return 3
    try:
        ray.init(
            address=cfg["address"],
            namespace="vivarium",
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=False,
        )
    except Exception as e:
        emit({"fatal": f"cannot connect to the Ray cluster at {cfg['address']}: {type(e).__name__}: {e}"})
        return 3
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = ray.cluster_resources().get("CPU", 0)
    emit({"ready": {"nodes": len(nodes), "cpus": cpus}})

    remote = ray.remote(
        num_cpus=cfg.get("cpus_per_task", 1),
        max_retries=cfg.get("max_retries", 3),
        retry_exceptions=[WorkerLost],
    )(evaluate)

    # One thread per batch in flight (at most the coordinator's slots)
    # waits for its answer, so each is passed on the moment it is ready.
    def finish(rid, ref):
        try:
            emit({"id": rid, "ok": ray.get(ref)})
        except Exception as e:
            emit({"id": rid, "error": f"{type(e).__name__}: {str(e)[-2000:]}"})

    # A component goes into Ray's object store once (per driver), and each
    # node fetches it once, however many batches it grades.
    components = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        request = msg["request"]
        sha = request["component_sha256"]
        component = components.get(sha)
        if component is None:
            if len(components) >= 64:
                components.clear()
            component = components[sha] = ray.put(request["component_hex"])
        del request["component_hex"]
        ref = remote.remote(cfg["worker_command"], request, component)
        threading.Thread(target=finish, args=(msg["id"], ref), daemon=True).start()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
