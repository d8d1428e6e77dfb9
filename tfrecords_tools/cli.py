"""What the tfrecords_tools commands share: one-line errors, tracebacks only on --verbose.

No TensorFlow here, so that `--help` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from video_ssl.console import printable
from video_ssl.data.video_list import ListingError


class ToolError(Exception):
    """Bad input or output that stops a command; the message names the file or flag."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `--verbose`, and usage errors in one line `TOOL: error: ...`."""

    def __init__(self, tool: str, **kwargs):
        super().__init__(prog=f"python -m tfrecords_tools.{tool}", **kwargs)
        self.tool = tool
        self.add_argument("--verbose", action="store_true",
                          help="show the traceback of a fatal error")

    def error(self, message: str):
        self.exit(2, f"{self.tool}: error: {message} (see --help)\n")


def run(tool: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`body(args)`, with a fatal error (ToolError, an input that cannot be listed, or a
    file that cannot be read or written) printed as one line naming the file, and a non-zero exit code."""
    try:
        return body(args)
    except (ToolError, ListingError, OSError) as e:
        if args.verbose:
            raise
        if isinstance(e, (ToolError, ListingError)):
            message, code = str(e), getattr(e, "exit_code", 2)
        else:
            where = os.fsdecode(e.filename) if e.filename is not None else ""
            message = f"{where}: {e.strerror or e}" if where else str(e)
            code = 1
        print(f"{tool}: error: {printable(message)}", file=sys.stderr)
        return code
