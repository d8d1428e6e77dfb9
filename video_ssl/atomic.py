"""Atomic writes: every file or folder the tools leave is either complete or absent.

Each writes under a temporary name beside the target, then renames it into place,
so a crash or a kill never leaves half a file and never loses the previous version.
"""
from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf

from video_ssl import console


def write_file(path: str, write: Callable[[str], object]) -> None:
    """`write(temporary path)`, then a rename onto `path` (the temporary name keeps the
    extension, for writers that choose the format by it)."""
    stem, extension = os.path.splitext(path)
    tmp = f"{stem}.tmp{extension}"
    try:
        write(tmp)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
    write_file(path, write)


def check_directory(directory: str, *, overwrite: bool) -> None:
    """What `write_directory` would refuse, for a tool to check before its work: an
    existing `directory` without `overwrite`, a folder above it it cannot write."""
    directory = directory.rstrip("/")
    if tf.io.gfile.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} already exists; pass --overwrite to replace it")
    console.check_writable(os.path.dirname(directory) or ".")


def write_directory(directory: str, write: Callable[[str], object], *,
                    overwrite: bool) -> None:
    """`write(temporary folder)`, then a rename: `directory` is never half-written and
    a failed write leaves nothing behind; an existing `directory` is replaced only
    with `overwrite`, once the new one is complete."""
    directory = directory.rstrip("/")
    check_directory(directory, overwrite=overwrite)
    tmp, old = f"{directory}.tmp", f"{directory}.old"
    for stale in (tmp, old):
        if tf.io.gfile.exists(stale):
            tf.io.gfile.rmtree(stale)
    parent = os.path.dirname(directory)
    if parent:
        tf.io.gfile.makedirs(parent)
    try:
        write(tmp)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rename(directory, old)
    tf.io.gfile.rename(tmp, directory)
    if tf.io.gfile.exists(old):
        tf.io.gfile.rmtree(old)
