"""Run an EP artifact on several processes: ``python -m moec.launch OUT --input NAME=FILE.npy ... -o DIR``.

Under torchrun (``torchrun --nnodes M --nproc-per-node P -m moec.launch OUT ...``) each process reads
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT as torchrun sets them, joins a gloo process group, runs
its slice of the tokens (compiler/ep.py) and rank 0 writes the outputs.  ``moec run OUT --nproc N``
starts N such processes on this machine itself (``run_local``).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec.errors import MoecError, RuntimeFailure, UserInputError, one_line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_inputs(info: dict, given: Dict[str, str]) -> List[np.ndarray]:
    from moec.ir import parse_type
    from moec.npy_input import check_input_names, load_npy_input
    names = [x["name"] for x in info["inputs"]]
    check_input_names(names, given)
    out, binding = [], {}
    for x in info["inputs"]:
        arr = load_npy_input(given[x["name"]], f"input '{x['name']}'")
        t = parse_type(x["type"])
        if arr.dtype != t.dtype.np or not t.matches(arr.shape, binding):
            raise UserInputError(f"input '{x['name']}' is {arr.dtype}{list(arr.shape)}, the model expects {x['type']}")
        out.append(arr)
    return out


def parse_inputs(specs: Sequence[str]) -> Dict[str, str]:
    given = {}
    for spec in specs:
        if "=" not in spec:
            raise UserInputError(f"--input '{spec}': expected NAME=FILE.npy")
        k, v = spec.split("=", 1)
        given[k] = v
    return given


_LOADED: Dict[tuple, object] = {}


def _stamp(outdir: str):
    st = os.stat(os.path.join(outdir, "ep.json"))
    return (st.st_ino, st.st_mtime_ns)


def run_rank(outdir: str, arrays: Sequence[np.ndarray], rank: int, world: int, threads: int = 1):
    """Inside an initialised process group: run this rank's tokens; every rank returns the full outputs
    (gathered in rank order) and its stats."""
    import torch.distributed as dist
    from moec.ep import EPRank, split_inputs
    key = (os.path.abspath(outdir), rank, world, threads)
    ep = _LOADED.get(key)
    if ep is None or ep.stamp != _stamp(outdir):   # (a loaded artifact packs its weights once: keep it)
        ep = _LOADED[key] = EPRank(outdir, rank, world, threads=threads)
        ep.stamp = _stamp(outdir)
    ep.exchange.bytes_sent, ep.exchange.seconds, ep.exchange.calls = 0, 0.0, 0
    mine = split_inputs(ep.info, arrays, rank)
    t0 = time.perf_counter()
    outs = [o.cpu().numpy() for o in ep(*mine)]
    wall = time.perf_counter() - t0
    stats = {"rank": rank, "seconds": wall, "exchange_seconds": ep.exchange.seconds,
             "bytes_sent": ep.exchange.bytes_sent, "collectives": ep.exchange.calls,
             "expert_slots": ep.slots_received, "weight_bytes": ep.weight_bytes,
             "tokens": next((int(x.shape[d]) for x, d in zip(mine, ep.info["split"]["in_dims"]) if d >= 0), 0)}
    parts: List = [None] * world
    try:
        dist.all_gather_object(parts, (outs, stats))
    except RuntimeError as e:
        raise RuntimeFailure(f"rank {rank}: gathering the outputs failed (a peer rank died or hung): "
                             f"{str(e).splitlines()[0][:300]}") from None
    from moec.ep import join_outputs
    full = join_outputs(ep.info, [p[0] for p in parts])
    return full, [p[1] for p in parts]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moec.launch", description="run one rank of an EP artifact "
                                "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment, as torchrun "
                                "sets them)")
    p.add_argument("artifact")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("--output-dir", "-o", default="moec_outputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds any collective may wait for a peer")
    p.add_argument("--stats", help="rank 0 writes the per-rank stats (JSON) here")
    p.add_argument("--repeat", type=int, default=1, help="run this many times (timing)")
    a = p.parse_args(argv)
    try:
        env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        if None in env.values():
            raise UserInputError("moec.launch needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the "
                                 "environment (run it under torchrun, or use `moec run OUT --nproc N`)")
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        from moec.ep import collective_backend, init_process_group, rank_device, read_ep
        info = read_ep(a.artifact)
        if world != info["world"]:
            raise UserInputError(f"'{a.artifact}' was compiled for {info['world']} ranks, WORLD_SIZE is {world}")
        arrays = load_inputs(info, parse_inputs(a.input))
        if os.environ.get("MOEC_EP_TEST_FAULT") == f"{rank}:die":   # tests: a rank that dies
            os._exit(17)
        # the target's tensors decide the collectives: gloo (CPU), NCCL (CUDA), HCCL (NPU)
        init_process_group(rank, world, env["MASTER_ADDR"], int(env["MASTER_PORT"]), a.timeout,
                           backend=collective_backend(rank_device(info["target"])))
        if os.environ.get("MOEC_EP_TEST_FAULT") == f"{rank}:hang":  # tests: a rank that hangs in the group
            time.sleep(3600)
        for _ in range(max(1, a.repeat)):
            full, stats = run_rank(a.artifact, arrays, rank, world, a.threads)
        if rank == 0:
            from moec.artifact_dir import safe_file_names
            from moec.npy_input import save_npy as _save_npy
            os.makedirs(a.output_dir, exist_ok=True)
            for f, arr in zip(safe_file_names([o["name"] for o in info["outputs"]], ".npy"), full):
                _save_npy(os.path.join(a.output_dir, f), arr)
            if a.stats:
                with open(a.stats, "w") as f:
                    json.dump(stats, f)
        import torch.distributed as dist
        dist.destroy_process_group()
        return 0
    except MoecError as e:
        print(f"moec.launch rank {os.environ.get('RANK')}: error: {one_line(e)}", file=sys.stderr, flush=True)
        os._exit(e.exit_code)   # (no teardown: a process group with a failed collective may abort in it)


def run_local(outdir: str, inputs: Sequence[str], nproc: int, output_dir: str, threads: int = 1,
              timeout_s: float = 60.0, stats: Optional[str] = None, repeat: int = 1,
              fault: Optional[str] = None) -> None:
    """``moec run OUT --nproc N``: N local processes (gloo on 127.0.0.1); the first failure is raised with
    its message, the other processes are stopped; nothing waits longer than the timeout (+ start-up)."""
    from moec.ep import read_ep
    info = read_ep(outdir)
    if nproc != info["world"]:
        raise UserInputError(f"--nproc {nproc}: '{outdir}' was compiled for {info['world']} ranks (--ep)")
    from moec.ep import check_split
    check_split(info, load_inputs(info, parse_inputs(inputs)))   # bad inputs: one line here, before any process starts
    port = free_port()
    procs = []
    errs = []
    for r in range(nproc):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        if fault:
            env["MOEC_EP_TEST_FAULT"] = fault
        else:
            env.pop("MOEC_EP_TEST_FAULT", None)
        err = tempfile.TemporaryFile()
        errs.append(err)
        cmd = [sys.executable, "-m", "moec.launch", outdir, "-o", output_dir, "--threads", str(threads),
               "--timeout", str(timeout_s), "--repeat", str(repeat)] + \
              [x for i in inputs for x in ("--input", i)] + (["--stats", stats] if stats else [])
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
    deadline = time.monotonic() + timeout_s * 2 + 120
    failed_at = None
    while any(pr.poll() is None for pr in procs) and time.monotonic() < deadline:
        if failed_at is None and any(pr.returncode not in (None, 0) for pr in procs):
            failed_at = time.monotonic()   # the others get the process group's timeout to notice, then stop
            deadline = min(deadline, failed_at + timeout_s + 15)
        time.sleep(0.05)
    killed = set()
    for r, pr in enumerate(procs):
        if pr.poll() is None:
            pr.kill()
            pr.wait()
            killed.add(r)
    bad = [(r, pr.returncode) for r, pr in enumerate(procs) if pr.returncode != 0]
    if bad:
        lines = []
        for r, rc in bad:
            errs[r].seek(0)
            text = errs[r].read().decode(errors="replace").strip().splitlines()
            msg = next((ln for ln in reversed(text) if "error" in ln.lower()), text[-1] if text else "")
            lines.append(f"rank {r} killed (still running after {'the others failed' if failed_at else 'the deadline'})"
                         if r in killed else f"rank {r} exit {rc}: {msg[:300]}")
        raise RuntimeFailure("EP run failed: " + "; ".join(lines))


def serve(timeout_s: float) -> int:
    """A rank that stays in its process group and runs jobs read from stdin (one JSON line each:
    {"artifact", "inputs": NPZ, "out": NPZ, "threads", "repeat"}), answering one JSON line each
    (``LocalPool``: tests and `moec bench --ep` pay the process start once).  The artifacts it runs are for
    MOEC_EP_TARGET (default cpu): that target's tensors pick the collectives."""
    from moec.ep import collective_backend, init_process_group, rank_device, read_ep
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    init_process_group(rank, world, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout_s,
                       backend=collective_backend(rank_device(os.environ.get("MOEC_EP_TARGET", "cpu"))))
    print(json.dumps({"ready": rank}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            info = read_ep(job["artifact"])
            with np.load(job["inputs"]) as z:
                arrays = [z[x["name"]] for x in info["inputs"]]
            if job.get("fault") == f"{rank}:die":
                os._exit(17)
            runs = []
            for _ in range(max(1, job.get("repeat", 1))):
                full, stats = run_rank(job["artifact"], arrays, rank, world, job.get("threads", 1))
                runs.append(stats)
            if rank == 0:
                np.savez(job["out"], *full)
            reply = {"ok": True, "stats": stats, "runs": runs}
        except MoecError as e:
            reply = {"ok": False, "error": one_line(e)}
        except Exception as e:  # noqa: BLE001 - reported to the pool, which stops
            reply = {"ok": False, "error": f"{type(e).__name__}: {one_line(e)}"}
        print(json.dumps(reply), flush=True)
        if not reply["ok"]:   # leave the group at once: the peers' collectives fail now, not at the timeout
            sys.stdout.flush()
            os._exit(1)
    return 0


class LocalPool:
    """N local rank processes in one gloo process group, kept alive across runs."""

    def __init__(self, nproc: int, timeout_s: float = 30.0, threads: int = 1, target: str = "cpu"):
        self.nproc, self.timeout_s = nproc, timeout_s
        port = free_port()
        self.procs = []
        for r in range(nproc):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads), MOEC_EP_TARGET=target)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "moec.launch", "--serve", "--timeout",
                                                str(timeout_s)], env=env, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for r in range(nproc):
            if not self._reply(r, 120 + timeout_s).get("ready") == r:
                self.close()
                raise RuntimeFailure(f"EP pool: rank {r} did not start")
        self.tmp = tempfile.mkdtemp(prefix="moec-pool-")

    def _reply(self, r: int, wait_s: float) -> dict:
        import select
        pr = self.procs[r]
        ready, _, _ = select.select([pr.stdout], [], [], wait_s)
        if not ready:
            self.close()
            raise RuntimeFailure(f"EP pool: rank {r} gave no answer within {wait_s:.0f}s")
        line = pr.stdout.readline()
        if not line:
            try:
                pr.wait(5)
            except subprocess.TimeoutExpired:
                pass
            return {"ok": False, "error": f"the process ended (exit {pr.poll()})"}
        return json.loads(line)

    def run(self, outdir: str, arrays: Sequence[np.ndarray], names: Sequence[str], repeat: int = 1,
            threads: int = 1, fault: Optional[str] = None):
        """Run the EP artifact on the full inputs; return (outputs, per-rank stats)."""
        inp = os.path.join(self.tmp, "in.npz")
        out = os.path.join(self.tmp, "out.npz")
        np.savez(inp, **dict(zip(names, arrays)))
        job = json.dumps({"artifact": os.path.abspath(outdir), "inputs": inp, "out": out, "repeat": repeat,
                          "threads": threads, "fault": fault})
        for pr in self.procs:
            pr.stdin.write(job + "\n")
            pr.stdin.flush()
        replies = [self._reply(r, 60 + 2 * self.timeout_s) for r in range(self.nproc)]
        bad = [f"rank {r}: {x['error']}" for r, x in enumerate(replies) if not x.get("ok")]
        if bad:
            self.close()
            raise RuntimeFailure("EP run failed: " + "; ".join(bad))
        with np.load(out) as z:
            outs = [z[f"arr_{i}"] for i in range(len(z.files))]
        self.last_runs = replies[0]["runs"]
        return outs, replies[0]["stats"]      # (every rank gathered every rank's stats)

    def close(self) -> None:
        for pr in self.procs:
            if pr.poll() is None:
                try:
                    pr.stdin.close()
                except OSError:
                    pass
        for pr in self.procs:
            try:
                pr.wait(5)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(float(sys.argv[3]) if len(sys.argv) > 3 else 60.0))
    sys.exit(main())
