"""One trainer per model_dir: `hold(model_dir)` locks `model_dir/train.lock` for as long
as the run lasts, or fails at once with a line naming the process that holds it.

The lock is `fcntl.flock` on the file, which the kernel releases when its holder
exits in any way (kill -9 included), so a stale lock never blocks a re-run; the pid,
host and start time written in the file are only for the message. The file itself
stays (deleting it could let a waiting process lock a file that is no longer there).
Directories that are not on a local file system (gs://..., other URLs) have no flock
and are not locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Iterator

LOCK_FILE = "train.lock"


class ModelDirInUse(RuntimeError):
    """Another running trainer holds the model_dir's lock."""


@contextlib.contextmanager
def hold(model_dir: str) -> Iterator[None]:
    """Creates `model_dir` and holds its lock inside the `with` block."""
    if "://" in model_dir:  # no flock there; the caller creates the directory
        yield
        return
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelDirInUse(
                f"--model_dir={model_dir} is in use by another trainer ({_holder(fd)}, "
                f"lock file {path}); wait for it to finish or stop it, or choose another "
                "--model_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote (it may not have written yet)."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        except ValueError:
            holder = None
        if isinstance(holder, dict):
            return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
                    f"{holder.get('started')}")
        time.sleep(0.05)
    return "a process that has not written its pid yet"
