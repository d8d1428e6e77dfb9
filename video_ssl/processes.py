"""Worker processes that end with the tool that started them.

No TensorFlow here: decoding and flow workers import this first.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(parent: int) -> None:
    """Called first in a worker process: the worker is killed when the process that
    started it (pid `parent`) dies, whatever killed it (kill -9 included), instead of
    waiting for work forever; a multiprocessing resource tracker then ends too (its pipe
    closes with the last of them). Linux only (prctl); elsewhere a worker must notice a
    closed pipe."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
