"""A FIFO queue of features with aligned columns, for MoCo's negatives and CoCLR's
aligned key / sampler-feature / video-id queues.

Every column is a variable of `size` rows written at the same positions, so row i of
every column describes the same enqueued sample. `filled` marks the rows written at
least once and `is_full()` says whether the queue has been filled once (the official
MoCo code makes no optimizer step before that). Writes are whole-queue assignments
(`only_first_replica` aggregation), so callers enqueue what they all-gathered, and
every replica writes the same values.
"""
from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf


def random_unit_rows(shape, dtype=None):
    """Initializer: rows of unit L2 norm in random directions (the MoCo queue's start)."""
    return tf.math.l2_normalize(tf.random.normal(shape, dtype=dtype or "float32"), axis=1)


class FeatureQueue(keras.layers.Layer):
    """`size` rows of named columns, a pointer and filled flags.

    columns: name -> (row shape, dtype, initializer); e.g.
      {"keys": ((128,), "float32", random_unit_rows), "video_id": ((), "int64", "zeros")}.
    """

    def __init__(self, size: int, columns: Mapping[str, tuple], **kwargs):
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"{self.name}: queue size must be >= 1, got {size!r}")
        self.size = int(size)
        reserved = {"pointer", "filled", "size", "column_names"} & set(columns)
        if reserved:
            raise ValueError(f"{self.name}: column names {sorted(reserved)} are reserved")
        self.column_names = tuple(columns)
        for name, (shape, dtype, initializer) in columns.items():
            # An attribute per column, so checkpoints name it.
            setattr(self, name, self.add_weight(
                name=name, shape=(self.size, *shape), dtype=dtype, initializer=initializer,
                trainable=False, aggregation="only_first_replica"))
        self.pointer = self.add_weight(name="pointer", shape=(), dtype="int64",
                                       initializer="zeros", trainable=False,
                                       aggregation="only_first_replica")
        self.filled = self.add_weight(name="filled", shape=(self.size,), dtype="bool",
                                      initializer="zeros", trainable=False,
                                      aggregation="only_first_replica")
        self.built = True

    def __getitem__(self, name: str) -> tf.Variable:
        if name not in self.column_names:
            raise KeyError(f"{self.name}: no column {name!r}; columns {self.column_names}")
        return getattr(self, name)

    def is_full(self) -> tf.Tensor:
        """True once every row has been written."""
        return tf.reduce_all(self.filled)

    def enqueue(self, **values: tf.Tensor) -> None:
        """Writes `values` (one tensor per column, equal leading sizes) at the pointer,
        overwriting the oldest rows, and advances the pointer."""
        if set(values) != set(self.column_names):
            raise ValueError(f"{self.name}.enqueue: expected columns "
                             f"{sorted(self.column_names)}, got {sorted(values)}")
        count = tf.shape(next(iter(values.values())), out_type=tf.int64)[0]
        tf.debugging.assert_less_equal(
            count, tf.constant(self.size, tf.int64),
            message=f"{self.name}: the queue ({self.size} rows) must hold at least one "
                    "step's entries (global batch x clips)")
        positions = ((self.pointer + tf.range(count)) % self.size)[:, None]
        for name, value in values.items():
            column = self[name]
            column.assign(tf.tensor_scatter_nd_update(column, positions,
                                                      tf.cast(value, column.dtype)))
        self.filled.assign(tf.tensor_scatter_nd_update(
            self.filled, positions, tf.ones([count], tf.bool)))
        self.pointer.assign((self.pointer + count) % self.size)

