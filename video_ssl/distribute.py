"""Distribution strategies and the cross-replica helpers the methods use.

One place for both: the trainer creates the strategy here, and a method's
`train_step` (which runs once per replica) asks here how many replicas there are,
which one it is, and gathers tensors across them.
"""
from __future__ import annotations

from typing import Sequence

import gin
import tensorflow as tf


@gin.configurable(denylist=["name"])
def make_strategy(name, devices: Sequence[str] | None = None,
                  tpu_address: str = "") -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (`devices`, default all local GPUs),
    `multi_worker` (TF_CONFIG cluster) or `tpu` (at `tpu_address`, empty for the
    local TPU); a Strategy object is used as it is (callers embedding the trainer in a
    process that already has one: TensorFlow's collectives clash between strategies)."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"train.strategy={name!r}; expected default, mirrored, multi_worker or tpu")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's lasting output (checkpoints, export)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def has_accelerator(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether the replicas run on GPUs or TPUs (rather than the host's CPU)."""
    strategy = strategy or tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.TPUStrategy)
            or bool(tf.config.list_logical_devices("GPU")))


def num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def replica_id() -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32)


def all_gather(value: tf.Tensor) -> tf.Tensor:
    """Concatenation along axis 0 of `value` from all replicas, in replica order;
    gradients flow back to each replica's part."""
    if num_replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_gather(value, axis=0)
