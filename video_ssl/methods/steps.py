"""Building blocks of training steps that several methods share: BatchNorm groups,
gradient accumulation, the sequential and the parallel (optionally gradient-cached)
multi-clip steps, and shuffle-BN (across replicas, or across the BatchNorm groups of one
replica). Functions of what they are given, so a method composes them rather than
inheriting them."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from video_ssl.distribute import all_gather, num_replicas, replica_id


def check_choice(owner: str, name: str, value, choices: Sequence) -> None:
    """A one-line error naming `owner.name` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{owner}.{name}: expected one of {tuple(choices)}, got {value!r}")


def grouped(fn: Callable, clips: tf.Tensor, group_size: int | None,
            owner: str = "bn_group_size") -> tf.Tensor:
    """`fn(clips)`, run once per `group_size` clips (BatchNorm statistics per group; None:
    the whole batch), in float32 whatever the layers compute in (the losses' precision)."""
    if group_size is None or clips.shape[0] is None or clips.shape[0] <= group_size:
        return tf.cast(fn(clips), tf.float32)
    if clips.shape[0] % group_size:
        raise ValueError(f"{owner}.bn_group_size={group_size} must divide the per-replica "
                         f"batch {clips.shape[0]}")
    return tf.concat([tf.cast(fn(group), tf.float32)
                      for group in tf.split(clips, clips.shape[0] // group_size)], axis=0)


def add_gradients(a: list, b: list) -> list:
    """Element-wise sum of two gradient lists (None where a variable got none)."""
    return [y if x is None else x if y is None else x + y for x, y in zip(a, b)]


def sequential_queries(method, clips: Sequence[tf.Tensor], targets: Sequence[tf.Tensor],
                       query_loss: Callable, aggregation: str):
    """(mean loss, gradients) of each clip in turn as the query against the targets of
    the other clips, each in its own forward/backward pass (memory of one clip),
    accumulated: ρMoCo and ρBYOL. aggregation "mean" gives the gradient of the mean of
    the sub-losses (the reported loss), "sum" sums them (the official code)."""
    variables = method.trainable_variables
    weight = 1.0 / (len(clips) if aggregation == "mean" else 1)
    losses, gradients = [], None
    for index, clip in enumerate(clips):
        # Chain the queries so that only one clip's activations are alive at a time.
        with tf.control_dependencies([g for g in gradients or [] if g is not None]):
            with tf.GradientTape() as tape:
                loss = query_loss(clip, list(targets[:index]) + list(targets[index + 1:]))
                scaled_loss = method.scaled_for_gradients(loss * weight)
            step_gradients = tape.gradient(scaled_loss, variables)
        gradients = (step_gradients if gradients is None
                     else add_gradients(gradients, step_gradients))
        losses.append(loss)
    return tf.add_n(losses) / len(losses), gradients


def parallel_loss_and_gradients(method, clips: Sequence[tf.Tensor], embed: Callable,
                                objective: Callable, *, group_size: int | None,
                                gradient_caching: bool = False):
    """(loss, gradients) of `objective` over the outputs of `embed` for all clips at
    once (SimCLR, SwAV: the loss needs every clip's embedding together).

    embed: clip-batch (B, T, H, W, C) -> (B, D); objective: (clips, B, D) -> loss.
    Plain: one forward/backward over all clips (BatchNorm statistics over all of them,
    or per `group_size`); memory grows with the number of clips.
    gradient_caching (Gao et al. 2021): a forward of every clip-batch without keeping
    activations, the loss and its gradient with respect to the embeddings, then one
    clip-batch at a time a forward/backward seeded with that gradient: the memory of
    one clip-batch, for the same loss and gradients as the plain path whose BatchNorm
    normalizes each clip-batch alone (`group_size` = the per-replica batch), which is
    what BatchNorm does here in both passes. Running averages take the first pass's
    statistics once per clip-batch; the second pass's updates are undone.
    """
    variables = method.trainable_variables

    def run(x):
        return grouped(embed, x, group_size, type(method).__name__)

    if not gradient_caching:
        with tf.GradientTape() as tape:
            outputs = run(tf.concat(clips, axis=0))
            loss = objective(tf.reshape(outputs, [len(clips), -1, outputs.shape[-1]]))
            scaled_loss = method.scaled_for_gradients(loss)
        return loss, tape.gradient(scaled_loss, variables)
    outputs = tf.stack([tf.stop_gradient(run(clip)) for clip in clips])
    with tf.GradientTape() as tape:
        tape.watch(outputs)
        loss = objective(outputs)
        scaled_loss = method.scaled_for_gradients(loss)
    output_gradients = tape.gradient(scaled_loss, outputs)
    statistics = [v for v in method.non_trainable_weights if "float" in str(v.dtype)]
    with tf.control_dependencies([outputs]):
        after_first_pass = [tf.identity(v) for v in statistics]
    gradients = None
    for index, clip in enumerate(clips):
        # Chained, so that only one clip-batch's activations are alive at a time.
        with tf.control_dependencies(after_first_pass + [
                g for g in gradients or [] if g is not None]):
            with tf.GradientTape() as tape:
                clip_outputs = run(clip)
            step = tape.gradient(clip_outputs, variables,
                                 output_gradients=output_gradients[index])
        gradients = step if gradients is None else add_gradients(gradients, step)
    with tf.control_dependencies([g for g in gradients if g is not None]):
        for variable, value in zip(statistics, after_first_pass):
            variable.assign(value)
    return loss, gradients


def shuffled_bn(encode: Callable, batch: tf.Tensor, group_size: int | None,
                seed) -> tf.Tensor:
    """Shuffle-BN (MoCo's): the key encoder's `encode(batch)`, which normalizes each
    `group_size` consecutive clips together (`grouped`; None: the replica's batch), such
    that a key is not normalized with the clips its query was normalized with.

    Several replicas: `shuffled_across_replicas` (a random permutation of the global
    batch drawn from `seed`, as the official CoCLR code). One replica holding
    G = batch / group_size >= 2 groups: the groups are interleaved (`interleaved_order`),
    so each key group takes its clips from as many query groups as it can, and the keys
    are put back in the batch's order. Key group and query group of a video then share at
    most ceil(group_size / G) videos, the video itself included: the least any regrouping
    allows, and only the video itself when group_size <= G (group_size² <= batch), where a
    key shares its statistics with none of its query's group-mates. One group: nothing to
    shuffle, `encode(batch)`.
    """
    if num_replicas() > 1:
        return shuffled_across_replicas(encode, batch, seed)
    size = batch.shape[0]
    if group_size is None or size is None or size <= group_size or size % group_size:
        return encode(batch)  # one group; (or `grouped` names the indivisible batch)
    order = interleaved_order(size, group_size)
    return tf.gather(encode(tf.gather(batch, order)), np.argsort(order))


def interleaved_order(batch_size: int, group_size: int) -> np.ndarray:
    """The permutation that regroups a batch of G = batch_size / group_size consecutive
    groups so that each new group draws from the old ones in turn: position p holds
    clip (p % G) * group_size + p // G (the (G, group_size) grid of clip indices read
    column by column). Each new group holds at most ceil(group_size / G) clips of any old
    group, exactly one when group_size <= G. Deterministic: the input pipeline already
    shuffles which videos sit where, and a fixed order gives the least overlap on every
    step, the same with any seed and under XLA; a random permutation gives
    group_size / G on average, and more on some steps."""
    num_groups = batch_size // group_size
    return np.arange(batch_size).reshape(num_groups, group_size).T.reshape(-1)


def shuffled_across_replicas(encode: Callable, batch: tf.Tensor, seed) -> tf.Tensor:
    """`encode(batch)` where each replica encodes a random subset of the global batch
    (shuffle-BN: a key is not normalized with its query's replica batch): the
    inputs are gathered, permuted with a permutation shared by all replicas (a stateless
    draw from `seed`), encoded, gathered again and un-permuted."""
    local_batch = tf.shape(batch)[0]
    gathered = all_gather(batch)
    permutation = tf.argsort(tf.random.stateless_uniform(tf.shape(gathered)[:1], seed))
    local = tf.range(local_batch) + replica_id() * local_batch
    keys = all_gather(encode(tf.gather(gathered, tf.gather(permutation, local))))
    return tf.gather(tf.gather(keys, tf.argsort(permutation)), local)
