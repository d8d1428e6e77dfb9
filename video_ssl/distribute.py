"""Distribution strategies and the cross-replica helpers the methods use.

One place for both: the trainer creates the strategy here, and a method's
`train_step` (which runs once per replica) asks here how many replicas there are,
which one it is, and gathers tensors across them.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from typing import Mapping, Sequence

import gin
import tensorflow as tf

# The jobs of a MultiWorkerMirroredStrategy cluster that train (an "evaluator" task
# would run a separate evaluation loop, which the trainer does not have).
TRAINING_JOBS = ("chief", "worker")


@gin.configurable(denylist=["name"])
def make_strategy(name, devices: Sequence[str] | None = None, tpu_address: str = "",
                  connect_timeout_s: float = 300.0) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (`devices`, default all local GPUs),
    `multi_worker` (the TF_CONFIG cluster, see `parse_tf_config`; a worker that has not
    joined within `connect_timeout_s` stops every waiting one with a line naming it) or
    `tpu` (at `tpu_address`, empty for the local TPU); a Strategy object is used as it
    is (callers embedding the trainer in a process that already has one: TensorFlow's
    collectives clash between strategies)."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return connect_workers(parse_tf_config(os.environ.get("TF_CONFIG")),
                               connect_timeout_s)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"train.strategy={name!r}; expected default, mirrored, multi_worker or tpu")


_TF_CONFIG_SHAPE = ('{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                    '"index": i}}')


def parse_tf_config(text: str | None) -> dict:
    """The TF_CONFIG environment variable of a multi-worker run, checked: every job of
    the cluster ("chief" and/or "worker") lists "host:port" addresses, and the task
    names one of them. Anything else is a ValueError naming TF_CONFIG and what is
    expected (TensorFlow would hang or fail later with a message about something else)."""
    if not text:
        raise ValueError(f"train.strategy='multi_worker' needs the TF_CONFIG environment "
                         f"variable, {_TF_CONFIG_SHAPE}, on every worker (`python -m "
                         f"video_ssl.launch` sets it on one machine)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG: not valid JSON ({error}); expected "
                         f"{_TF_CONFIG_SHAPE}") from None
    if not isinstance(config, Mapping) or not isinstance(config.get("cluster"), Mapping) \
            or not isinstance(config.get("task"), Mapping):
        raise ValueError(f"TF_CONFIG: expected an object with 'cluster' and 'task', "
                         f"{_TF_CONFIG_SHAPE}; got {text[:200]!r}")
    cluster = config["cluster"]
    jobs = set(cluster)
    if not jobs & set(TRAINING_JOBS) or jobs - set(TRAINING_JOBS):
        raise ValueError(f"TF_CONFIG: cluster jobs {sorted(jobs)}; expected 'worker' and/or "
                         f"'chief' (MultiWorkerMirroredStrategy has no parameter servers)")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
                _is_address(a) for a in addresses):
            raise ValueError(f"TF_CONFIG: cluster[{job!r}] = {addresses!r}; expected a "
                             f"non-empty list of 'host:port' strings")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG: cluster['chief'] lists {len(cluster['chief'])} "
                         f"addresses; expected at most one chief")
    task = config["task"]
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster or not isinstance(index, int) or isinstance(index, bool) \
            or not 0 <= index < len(cluster[task_type]):
        raise ValueError(f"TF_CONFIG: task {dict(task)!r} names no task of the cluster "
                         f"{ {job: len(a) for job, a in cluster.items()} } (jobs and task "
                         f"counts); expected 'type' one of {sorted(cluster)} and 'index' "
                         f"0..{len(cluster.get(task_type, [None])) - 1}")
    return {"cluster": {job: list(a) for job, a in cluster.items()},
            "task": {"type": task_type, "index": index}}


def _is_address(value) -> bool:
    if not isinstance(value, str):
        return False
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _listening(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_cluster(config: dict, timeout_s: float) -> None:
    """Returns once every other task of `config`'s cluster answers on its port; a
    ValueError naming those that do not after `timeout_s`.

    Why: creating the strategy blocks inside TensorFlow until every task has started,
    with no timeout, holding Python's GIL (a watchdog thread never runs) and ignoring
    SIGTERM. So the tasks first meet here: each listens on its own TF_CONFIG port and
    connects to the others' until all have answered, either here or, once they are
    past this point, on their TensorFlow server's port. A task that dies between here and the
    strategy still leaves the others waiting."""
    task = config["task"]
    me = f"{task['type']} {task['index']}"
    others = {f"{job} {index} ({address})": address
              for job, addresses in config["cluster"].items()
              for index, address in enumerate(addresses)
              if (job, index) != (task["type"], task["index"])}
    own = config["cluster"][task["type"]][task["index"]]
    port = int(own.rpartition(":")[2])
    try:
        if socket.has_dualstack_ipv6():
            listener = socket.create_server(("", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True)
        else:
            listener = socket.create_server(("", port))
    except OSError as error:
        raise ValueError(f"train.strategy='multi_worker': {me} cannot listen on port {port} "
                         f"of its TF_CONFIG address {own} ({error.strerror}); is another "
                         f"task with the same index running?") from None
    listener.setblocking(False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            _drain(listener)  # a full backlog would turn away the next peers
            silent = [name for name, address in others.items() if not _listening(address)]
            others = {name: others[name] for name in silent}
            if not others:
                return
            if time.monotonic() > deadline:
                raise ValueError(
                    f"train.strategy='multi_worker': {me} waited {timeout_s:g} s "
                    f"(make_strategy.connect_timeout_s) for the cluster: no answer from "
                    f"{', '.join(silent)}; start every task of TF_CONFIG, each with its own "
                    f"task index")
            time.sleep(0.5)
    finally:
        listener.close()


def _drain(listener: socket.socket) -> None:
    """Accepts and closes the connections the peers' checks left."""
    while True:
        try:
            connection, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        connection.close()


def connect_workers(config: dict, timeout_s: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster (`config` is
    `parse_tf_config`'s reading of it), once every task has started
    (`wait_for_cluster`)."""
    wait_for_cluster(config, timeout_s)
    # Its TFConfigClusterResolver reads the (checked) TF_CONFIG and counts local GPUs.
    return tf.distribute.MultiWorkerMirroredStrategy()


def all_agree(strategy: tf.distribute.Strategy, value: int) -> bool:
    """Whether every replica of every worker holds the same integer `value` (a
    cross-worker gather: every worker must call it)."""
    if strategy.num_replicas_in_sync == 1:
        return True
    local = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value], tf.int64))
    values = strategy.gather(local, axis=0).numpy()
    return bool((values == values[0]).all())


_TASK = re.compile(r"/job:\w+/replica:\d+/task:\d+")


class ClusterError(RuntimeError):
    """A multi-worker run lost a worker (its message says which, and how to resume)."""


def lost_workers(error: BaseException) -> str | None:
    """What a collective operation's failure says about the cluster, in a few words
    ("lost /job:worker/replica:0/task:1 (it stopped sending heartbeats)"), when another
    task's failure caused it; None for other errors. (TensorFlow's message starts with
    "Graph execution error:" and the node's traceback.)"""
    failures = (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.CancelledError, tf.errors.DeadlineExceededError)
    if not isinstance(error, failures):
        return None
    message = getattr(error, "message", str(error))
    unhealthy = re.search(r"unhealthy \(stopped sending heartbeats\):\s*((?:/job:\S+\s*)+)",
                          message)
    if unhealthy:
        return f"lost {', '.join(_TASK.findall(unhealthy.group(1)))} (it stopped sending " \
               f"heartbeats)"
    if ("Error reported from /job:" in message or "Collective ops is aborted" in message
            or "coordination service" in message):
        lines = [line.strip() for line in message.splitlines()
                 if line.strip() and not line.startswith(("Graph execution error",
                                                          "Detected at node", "  "))]
        detail = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*", "", lines[0] if lines else "")
        return f"lost contact with the cluster ({detail.strip()[:200]})"
    return None


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


def nonfinite_on_all_if_on_any(gradients: Sequence) -> list:
    """`gradients` (None entries kept), made NaN on every replica when any replica's are
    not all finite. A LossScaleOptimizer looks at the gradients of its own replica (or
    of a worker's first) to decide whether to skip a step; the replicas must agree, or
    one applies a step whose all-reduce another never joins."""
    if num_replicas() == 1:
        return list(gradients)
    present = [g for g in gradients if g is not None]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    return [None if g is None else tf.where(overflows > 0, tf.constant(float("nan"), g.dtype), g)
            for g in gradients]
