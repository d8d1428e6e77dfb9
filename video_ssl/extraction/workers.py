"""Worker processes for `video_ssl.extract`: a `Pool` runs module-level functions of
TensorFlow-free modules (decoding video files) in `num_workers` processes.

Each worker is `python -m video_ssl.extraction.workers`: a fresh interpreter that
imports only what its functions need (not TensorFlow, nor the parent's __main__), and
that ends with its parent: PR_SET_PDEATHSIG (Linux) kills it when the parent dies,
even mid-task, and everywhere it stops when its task pipe closes. A task that raises
comes back as its one-line reason; a worker that dies (a crash in FFmpeg, a kill)
fails its current task with the cause and is replaced, its queued tasks resent.
"""
from __future__ import annotations

import collections
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Pool:
    """`submit(key, function, *args)`, then `results()`: finished tasks as
    (key, True, value) or (key, False, reason)."""

    def __init__(self, num_workers: int):
        self._done = queue.Queue()  # (worker, ok, value) from the reader threads
        self._workers = [_Worker(self._done) for _ in range(num_workers)]

    def submit(self, key, function, *args) -> None:
        worker = min(self._workers, key=lambda w: len(w.tasks))
        worker.send(key, function, args)

    def results(self) -> list[tuple]:
        """Blocks until a task has finished; returns every finished one."""
        finished = [self._done.get()]
        while not self._done.empty():
            finished.append(self._done.get())
        out = []
        for worker, ok, value in finished:
            if ok is None:  # the worker died, in its oldest task if it had one
                if worker.tasks:
                    out.append((worker.tasks.popleft()[0], False, worker.cause_of_death()))
                self._replace(worker)
            else:
                out.append((worker.tasks.popleft()[0], ok, value))
        return out

    def _replace(self, dead: _Worker) -> None:
        new = _Worker(self._done)
        self._workers[self._workers.index(dead)] = new
        for key, function, args in dead.tasks:
            new.send(key, function, args)

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class _Worker:
    """One worker process, its pipes, its queue of tasks sent and not yet answered,
    and a thread that reads its answers (so that a large answer never blocks it)."""

    def __init__(self, done: queue.Queue):
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "video_ssl.extraction.workers", str(task_read),
             str(result_write), str(os.getpid())],
            pass_fds=(task_read, result_write), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path})
        os.close(task_read)
        os.close(result_write)
        self.sender = Connection(task_write, readable=False)
        self.tasks = collections.deque()
        receiver = Connection(result_read, writable=False)
        threading.Thread(target=self._read, args=(receiver, done), daemon=True).start()

    def send(self, key, function, args) -> None:
        self.tasks.append((key, function, args))
        try:
            self.sender.send((function, args))
        except OSError:
            pass  # dead: the reader thread reports it, and the task is resent

    def _read(self, receiver: Connection, done: queue.Queue) -> None:
        with receiver:
            while True:
                try:
                    ok, value = receiver.recv()
                except (EOFError, OSError):
                    done.put((self, None, None))  # stops here; the pool replaces it
                    return
                done.put((self, ok, value))

    def cause_of_death(self) -> str:
        code = self.process.wait()
        if code < 0:
            return f"the decoding process was killed by {signal.Signals(-code).name}"
        return f"the decoding process exited with code {code}"

    def stop(self) -> None:
        try:
            self.sender.send(None)
            self.sender.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def serve(task_fd: int, result_fd: int, parent: int) -> None:
    """A worker's loop: (function, args) in, (True, value) or (False, reason) out,
    until None or the end of the task pipe."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from video_ssl.console import error_line
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, args = message
        try:
            answer = (True, function(*args))
        except Exception as error:  # noqa: BLE001 -- the caller skips this item, with why
            answer = (False, " ".join(error_line(error).split()))
        results.send(answer)


if __name__ == "__main__":
    serve(*map(int, sys.argv[1:4]))
