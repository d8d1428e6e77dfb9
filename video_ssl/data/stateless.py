"""What the stateless clip ops (`crops`, `augment`) share: seed splitting, uniform
draws from a seed, and `plain_graph`.

A seed is an int tensor of shape [2]; equal seeds give equal draws, so an op can be
replayed anywhere (in tf.data, in the training step) from the seed alone.
"""
from __future__ import annotations

import tensorflow as tf

# The ops build their graphs with explicit tf.cond / tf.switch_case and have no
# tensor-dependent Python control flow, so AutoGraph has nothing to convert; skipping
# it saves ~2 s of tracing the first time a tf.data map calls into them.
plain_graph = tf.autograph.experimental.do_not_convert


def split(seed, num: int) -> tf.Tensor:
    """num independent [2] seeds derived from `seed`."""
    return tf.random.experimental.stateless_split(seed, num)


def uniform(seed, minval=0.0, maxval=1.0, shape=()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def uniform_int(seed, maxval) -> tf.Tensor:
    """Uniform int32 in [0, maxval), maxval >= 1 (may be a tensor)."""
    return tf.random.stateless_uniform(
        (), seed, minval=0, maxval=tf.maximum(tf.cast(maxval, tf.int32), 1), dtype=tf.int32)
