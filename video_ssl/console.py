"""What the three command-line tools (train, evaluate, export) share about the terminal:
their flags' parser, quiet start-up and one-line errors.

- `ArgumentParser(tool)`: argparse with `--verbose`; a usage error is one line.
- `start(args)`: before TensorFlow loads: unless `--verbose`, TensorFlow's native logs
  are off (TF_CPP_MIN_LOG_LEVEL=3), its start-up banner is filtered out of stderr while
  it loads, and the Python loggers of TensorFlow and absl show errors only.
- `run(tool, body, args)`: `body(args)`; any failure is printed as one line
  `TOOL: error: ...` and exits 1. `--verbose` or VIDEO_SSL_TRACEBACK=1 lets the
  traceback through instead.
- `Progress(total)`: videos done (and clips per second, time left) as a bar on a
  terminal, as plain lines elsewhere.
- `error_line(error)`, `gin_error(error, gin_files, gin_params)`: the line itself;
  `printable(text)`: a file name with undecodable bytes, printable.
- `progress_verbosity()`: Keras' `verbose` for progress: a live bar on a terminal,
  plain lines (2) into a file or pipe, where the bar's carriage returns and colour
  codes pile up.

No TensorFlow at import, so `--help` answers at once.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import tokenize
from typing import Callable, Sequence

TRACEBACK_VARIABLE = "VIDEO_SSL_TRACEBACK"
# Off a terminal, a progress line every this many videos at most (every tenth sooner).
PROGRESS_EVERY = 100


class ConfigError(ValueError):
    """A gin file or binding that cannot be parsed; the message names it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `--verbose`, and usage errors in one line `TOOL: error: ...`."""

    def __init__(self, tool: str, **kwargs):
        super().__init__(prog=f"python -m {tool}", **kwargs)
        self.tool = tool
        self.add_argument("--verbose", action="store_true",
                          help="show TensorFlow's logs, and the traceback of a fatal error "
                               f"(the traceback alone: {TRACEBACK_VARIABLE}=1)")

    def error(self, message: str):
        self.exit(2, f"{self.tool}: error: {message} (see --help)\n")


# What TensorFlow's native libraries print while they load, before absl's logging is
# initialized (so TF_CPP_MIN_LOG_LEVEL cannot stop it): the banner and I/W lines.
_LOAD_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR|[IW]\d{4} ")


def start(args: argparse.Namespace) -> None:
    """Loads TensorFlow as `args.verbose` asks: quietly by default (see the module)."""
    if args.verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _filtered_stderr(_LOAD_NOISE):
        import tensorflow  # noqa: F401
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def _filtered_stderr(noise: re.Pattern):
    """Native code writes to file descriptor 2 directly: it goes to a temporary file
    meanwhile, and every line not matching `noise` is written back afterwards."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in io.TextIOWrapper(capture, errors="replace"):
                if not noise.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def run(tool: str, body: Callable[[argparse.Namespace], int],
        args: argparse.Namespace) -> int:
    """`body(args)`, with any failure printed as one line naming what failed (exit
    code 1), unless `--verbose` or VIDEO_SSL_TRACEBACK=1 asks for the traceback."""
    try:
        return body(args)
    except Exception as error:  # noqa: BLE001  (every failure is one line)
        if args.verbose or os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            raise
        print(f"{tool}: error: {error_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        return 130


def progress_verbosity() -> int:
    """Keras' `verbose` for fit and Progbar: 1 (a live bar) when stdout is a terminal,
    else 2 (one plain line per epoch or pass: Keras' bar writes colour codes and
    carriage returns whatever the output is)."""
    return 1 if sys.stdout.isatty() else 2


_TENSORFLOW_PREAMBLES = ("Graph execution error:", "in user code:")


def error_line(error: BaseException) -> str:
    """One line for the user: the message of a failed in-graph check (a dataset's
    label check, the pipeline's data checks), else the error's message on one line
    (with the error's type where the message alone says too little)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(error, tf.errors.OpError):
        # Without the graph's node names: "{{function_node ...}}", "[Op:...] name:".
        message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*", "", error.message)
    else:
        message = str(error)
    asserted = re.search(r"assertion failed: \[(.*?)\]", message)
    if asserted:
        return asserted.group(1)
    # Node markers ("[[{{node X}}]]", emptied above) say nothing to a user.
    lines = [line.strip() for line in message.strip().splitlines()
             if line.strip() and not re.fullmatch(r"\s*\[\[.*\]\]\s*", line)]
    if not lines:
        return type(error).__name__
    # TensorFlow puts the cause last, after a preamble and the graph's stack.
    line = lines[-1] if lines[0] in _TENSORFLOW_PREAMBLES else lines[0]
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        line = f"{os.fsdecode(error.filename)}: {error.strerror}"  # "PATH: Permission denied"
    if type(error).__module__ == "builtins" and not isinstance(error, (ValueError, OSError)):
        line = f"{type(error).__name__}: {line}"  # a TypeError, KeyError, ...: say which
    return line


def printable(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 (which Python keeps as
    lone surrogates) written as \\xNN, so it can be printed and stored as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def gin_error(error: Exception, gin_files: Sequence[str],
              gin_params: Sequence[str]) -> Exception:
    """A `ConfigError` naming the gin file or --gin_param that `error` (raised while
    parsing them) comes from, in one line; other errors come back unchanged."""
    if isinstance(error, SyntaxError) and error.lineno:
        if error.filename:
            where = f"{error.filename}, line {error.lineno}"
        else:  # the bindings string: one --gin_param per line
            where = _param_at(gin_params, error.lineno)
        text = (error.text or "").strip()
        detail = f" in {text!r}" if text and text not in where else ""
        return ConfigError(f"{where}: {error.msg.rstrip('.')}{detail}")
    if isinstance(error, tokenize.TokenError):
        where = ", ".join(_unterminated(gin_files, gin_params)) or "a gin file or --gin_param"
        return ConfigError(f"{where}: unterminated bracket or string")
    if isinstance(error, ValueError) and ("\n  In " in str(error)):
        # gin: "message.\n  In file 'F', line N\n    text" or "In bindings string line N"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message, location = lines[0].rstrip("."), lines[1]
        number = re.search(r"line (\d+)", location)
        if location.startswith("In bindings string") and number:
            location = _param_at(gin_params, int(number.group(1)))
        else:
            location = location.removeprefix("In ")
        return ConfigError(f"{location}: {message}")
    return error


def _param_at(gin_params: Sequence[str], line: int) -> str:
    """The --gin_param on `line` of the bindings string gin parses them as."""
    lines = "\n".join(gin_params).splitlines()
    return f"--gin_param={lines[line - 1]}" if 0 < line <= len(lines) else "--gin_param"


def _unterminated(gin_files: Sequence[str], gin_params: Sequence[str]) -> list[str]:
    """The gin files and --gin_params whose text does not tokenize (an unclosed bracket
    or string)."""
    sources = [(f"--gin_param={p}", p) for p in gin_params]
    for path in gin_files:
        with contextlib.suppress(OSError):
            with open(path, encoding="utf-8", errors="replace") as f:
                sources.append((path, f.read()))
    bad = []
    for name, text in sources:
        try:
            list(tokenize.generate_tokens(io.StringIO(text + "\n").readline))
        except (tokenize.TokenError, SyntaxError):
            bad.append(name)
    return bad


class Progress:
    """Videos done of `total`, with the rate of `unit` (videos, or the clips they
    hold when `update` counts them) and the time left: a tqdm bar on a terminal; into a
    file or pipe, where a bar's carriage returns pile up, a plain line every tenth of
    the videos (at most every PROGRESS_EVERY)."""

    def __init__(self, total: int, unit: str = "videos", stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.failed, self.items, self.unit = total, 0, 0, 0, unit
        self.started = time.monotonic()
        self.every = max(1, min(PROGRESS_EVERY, -(-total // 10)))
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm  # only a terminal needs it
            self.bar = tqdm(total=total, unit="video", desc="videos", file=self.stream)

    def update(self, failed: bool, items: int = 0) -> None:
        """One more video done (`failed`: skipped), holding `items` of `unit`."""
        self.done += 1
        self.failed += failed
        self.items += items
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix_str(", ".join(self._rate() + (
                [f"{self.failed} failed"] if self.failed else [])))
        elif self.done % self.every == 0 or self.done == self.total:
            left = self._left()
            self.note(", ".join([f"videos: {self.done}/{self.total} ({self.failed} failed)",
                                 *self._rate(), *([f"{left} left"] if left else [])]))

    def _rate(self) -> list[str]:
        if self.unit == "videos":
            return []  # the bar shows videos/s itself; plain lines say the time left
        seconds = max(time.monotonic() - self.started, 1e-9)
        return [f"{self.items / seconds:.1f} {self.unit}/s"]

    def _left(self) -> str | None:
        if self.done >= self.total:
            return None
        seconds = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def note(self, message: str) -> None:
        """A line between the bar's updates."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
