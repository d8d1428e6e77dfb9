"""A multi-worker training run on this machine, for trying one out:

    python -m video_ssl.launch --num_workers=2 -- --gin_file=F ... --model_dir=D

starts `python -m video_ssl.train <the flags after -->
--gin_param=train.strategy='multi_worker'` once per worker, each with a TF_CONFIG
naming the whole cluster (free 127.0.0.1 ports picked here) and its own index; worker 0
is the chief, which alone writes model_dir. Each worker's stdout and stderr are passed
on line by line, prefixed `[worker i] `. When a worker exits with a non-zero status
the launcher stops the others (SIGTERM, then SIGKILL after `--grace_s`: a worker
blocked inside TensorFlow may not end on SIGTERM) and exits with that status
(128 + N for a worker killed by signal N); 0 once every worker has exited 0. Only a
worker killed by a signal (the OOM killer, kill -9) gets the advice to re-run the same
command to resume: a worker that exits with an error (a configuration error, bad data)
has said what is wrong, and the same command would fail the same way.

On several hosts there is no launcher: run the same train command on each host with
its own TF_CONFIG (docs/scale-out.md, "Several hosts"). No TensorFlow here: the launcher only
starts processes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

from video_ssl import console

TOOL = "video_ssl.launch"
STRATEGY_FLAG = "--gin_param=train.strategy='multi_worker'"


def parse_flags(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the launcher's flags, the train flags after `--`)."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = console.ArgumentParser(
        TOOL, description="Start a multi-worker training run on this machine: "
                          "video_ssl.launch --num_workers=2 -- <video_ssl.train flags>")
    parser.add_argument("--num_workers", type=int, default=2,
                        help="worker processes (each a TF_CONFIG task; worker 0 is the chief)")
    parser.add_argument("--grace_s", type=float, default=10.0,
                        help="seconds a stopped worker gets after SIGTERM before SIGKILL")
    args = parser.parse_args(argv[:split])
    train_flags = argv[split + 1:]
    if args.num_workers < 1:
        parser.error(f"--num_workers={args.num_workers}: expected at least 1")
    if not train_flags:
        parser.error("no video_ssl.train flags: expected them after `--`")
    return args, train_flags


def train_command(train_flags: Sequence[str]) -> list[str]:
    """What each worker runs."""
    return [sys.executable, "-m", "video_ssl.train", *train_flags, STRATEGY_FLAG]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (held open until all are picked)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: Sequence[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": index}})


def exit_status(returncode: int) -> int:
    """A shell's exit status for a child's return code (-N: killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class Workers:
    """The worker processes and the threads passing their output on."""

    def __init__(self, train_flags: Sequence[str], num_workers: int, *,
                 stdout: TextIO | None = None, stderr: TextIO | None = None):
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # The streams of the moment (not those at import), by default.
        stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
        self.stdout, self.stderr = stdout, stderr
        addresses = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
        command = train_command(train_flags)
        self.processes: list[subprocess.Popen] = []
        for index in range(num_workers):
            env = {**os.environ, "TF_CONFIG": tf_config(addresses, index),
                   "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, errors="replace")
            self.processes.append(process)
            for pipe, out in ((process.stdout, stdout), (process.stderr, stderr)):
                thread = threading.Thread(target=self._forward, args=(pipe, out, index),
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
        self.say(f"started {num_workers} workers on {', '.join(addresses)} (pids "
                 f"{', '.join(str(p.pid) for p in self.processes)}; worker 0 is the chief)")

    def _forward(self, pipe, out: TextIO, index: int) -> None:
        for line in pipe:
            with self._lock:
                out.write(f"[worker {index}] {line}")
                out.flush()

    def say(self, message: str) -> None:
        with self._lock:
            print(f"{TOOL}: {message}", file=self.stderr, flush=True)

    def wait(self) -> tuple[int | None, int]:
        """Waits until every worker has exited 0, or one has failed: (the failed one's
        index or None, its return code or 0)."""
        while True:
            codes = [p.poll() for p in self.processes]
            for index, code in enumerate(codes):
                if code:
                    return index, code
            if all(code == 0 for code in codes):
                return None, 0
            time.sleep(0.1)

    def stop(self, grace_s: float) -> None:
        """SIGTERM to every running worker, SIGKILL to those still running after grace_s."""
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.time() + grace_s
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def finish(self) -> None:
        """Waits for the rest of the workers' output."""
        for thread in self._threads:
            thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    args, train_flags = parse_flags(sys.argv[1:] if argv is None else argv)

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    workers = Workers(train_flags, args.num_workers)
    try:
        index, code = workers.wait()
    except KeyboardInterrupt:
        workers.say("interrupted; stopping the workers")
        workers.stop(args.grace_s)
        workers.finish()
        return 130
    if index is not None and len(workers.processes) > 1:
        others = "the other workers" if len(workers.processes) > 2 else "the other worker"
        workers.say(f"worker {index} {describe(code)}; stopping {others}")
        workers.stop(args.grace_s)
    workers.finish()
    if index is not None:
        resume = ("; re-run the same command to resume from the chief's newest checkpoint"
                  if code < 0 else "")  # killed mid-run, not stopped by an error it printed
        workers.say(f"stopped: worker {index} {describe(code)} (exit status "
                    f"{exit_status(code)}){resume}")
    return exit_status(code)

