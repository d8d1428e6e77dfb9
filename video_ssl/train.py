"""Self-supervised pre-training: `python -m video_ssl.train --gin_file=F ... --model_dir=D`.

This module only wires things together: gin, the distribution strategy, the input
datasets and the callbacks. The objectives live in `video_ssl.methods`, the input
pipeline in `video_ssl.data`, the optimizers in `video_ssl.optim`.

`model_dir` receives `checkpoints/` (every `train.checkpoint_every_steps` steps and
at the end; re-running the same command resumes from the newest), `tensorboard/`,
`operative_config.gin` (written after the first step), `metrics.json` (per epoch and
final) and `export/` (the backbone as a SavedModel, see `video_ssl.export`).
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Callable, Sequence

import video_ssl  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import gin
import keras
import tensorflow as tf

from video_ssl import callbacks as cb
from video_ssl import export as export_lib
from video_ssl.cli import parse_gin
from video_ssl.data import augment, pipeline
from video_ssl.data.reader import count_records, match_files
from video_ssl.evaluation.knn import KNNMonitor

# Keys of `train_input` that also shape the kNN evaluation clips.
_CLIP_SHAPE_KEYS = ("num_frames", "frame_stride", "crop_size")


@gin.configurable
def train_input(**kwargs) -> dict:
    """Keyword arguments for the training `make_dataset` call (frames, stride, crop
    size, temporal gaps, augmentation, ...), bound in gin as `train_input.<name> =
    value`. The clip count is not among them: it follows the method's rho."""
    return kwargs


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


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def _fit(model, dataset, callbacks, *, start_step: int, epochs: int, steps_per_epoch: int,
         verbose) -> None:
    """Runs `model.fit` from `start_step` to the end: first the rest of a partially
    trained epoch (after a mid-epoch restart), then the remaining whole epochs, so
    epoch boundaries stay where an uninterrupted run puts them."""
    epoch, done = divmod(start_step, steps_per_epoch)
    if done:
        model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps_per_epoch - done, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
        epoch += 1
    if epoch < epochs:
        model.fit(dataset, initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)


def configure_schedule(model: keras.Model, *, total_steps: int, steps_per_epoch: int) -> None:
    """Tells the method the run's length: `total_steps` drives momentum annealing;
    SwAV freezes its prototypes during the first epoch unless told otherwise."""
    model.total_steps.assign(total_steps)
    freeze = getattr(model, "freeze_prototypes_steps", None)
    if freeze is not None and int(freeze.numpy()) == 0:
        freeze.assign(steps_per_epoch)


def has_accelerator(strategy: tf.distribute.Strategy) -> bool:
    """Whether the replicas run on GPUs or TPUs (rather than the host's CPU)."""
    return (isinstance(strategy, tf.distribute.TPUStrategy)
            or bool(tf.config.list_logical_devices("GPU")))


def input_arguments(model: keras.Model, *, accelerator: bool = False) -> dict:
    """`make_dataset` arguments: the clip count follows the method's rho (rho=1: two
    augmentations of one window), the rest comes from `train_input`.

    The augmentation after the crop (resize, flip, colour jitter, grayscale, blur,
    normalization) runs on the accelerator when there is one: the pipeline then stops
    after decoding the crops (uint8, plus sizes and seeds) and the method applies the
    same draws in its step, which keeps the pipeline at about the JPEG-decode floor
    (benchmarks/RESULTS.md). On the CPU it stays in the pipeline, where it is cheaper
    per clip. Bind
    `train_input.defer_augmentation = True / False` to choose yourself."""
    kwargs = train_input()
    for key in ("num_clips", "same_window"):
        if key in kwargs:
            raise ValueError(f"train_input.{key} is derived from {type(model).__name__}.rho; "
                             "set that binding instead")
    kwargs.setdefault("defer_augmentation", accelerator)
    if kwargs["defer_augmentation"]:
        accepted = inspect.signature(augment.augment_batch).parameters
        model.device_augmentation = {k: v for k, v in kwargs.items() if k in accepted}
    return {"num_clips": model.num_clips, "same_window": model.rho == 1, **kwargs}


def knn_monitor(bank_files: Sequence[str], query_files: Sequence[str], input_kwargs: dict, *,
                batch_size: int, every_n_epochs: int) -> KNNMonitor:
    """The online kNN monitor on one centre clip per video, shaped like the training
    clips (frames, stride, crop size)."""
    clip_shape = {k: input_kwargs[k] for k in _CLIP_SHAPE_KEYS if k in input_kwargs}

    def split(files):
        return lambda: pipeline.make_dataset(files, training=False, batch_size=batch_size,
                                             **clip_shape)
    return KNNMonitor(split(bank_files), split(query_files), every_n_epochs=every_n_epochs)


def final_metrics(epochs_logged: Sequence[dict], **facts) -> dict:
    """The latest value of every logged quantity, the run's facts, and the kNN
    accuracy at random initialization (the epoch-0 entry) when there is one."""
    final = {k: v for entry in epochs_logged for k, v in entry.items()
             if k not in ("epoch", "wall_time_s")}
    final.update(facts)
    if epochs_logged and epochs_logged[0]["epoch"] == 0 and "knn_top1" in epochs_logged[0]:
        final["knn_top1_random_init"] = epochs_logged[0]["knn_top1"]
    return final


@gin.configurable(denylist=["model_dir"])
def train(model_dir: str, *,
          method: Callable[[], keras.Model] = gin.REQUIRED,
          optimizer: Callable[..., keras.optimizers.Optimizer] = gin.REQUIRED,
          train_files: str | None = None,
          global_batch_size: int = 512,
          epochs: int = 200,
          steps_per_epoch: int | None = None,
          warmup_epochs: float = 0.0,
          strategy: str | tf.distribute.Strategy = "default",
          checkpoint_every_steps: int = 1000,
          knn_bank_files: str | None = None,
          knn_query_files: str | None = None,
          knn_every_epochs: int = 1,
          knn_batch_size: int = 32,
          tensorboard_every_steps: int = 100,
          seed: int = 0,
          verbose="auto",
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Pre-trains `method` on `train_files` and returns the final metrics.

    method: gin reference to a method class (e.g. `@MoCo`), called with no
    arguments inside the strategy scope. optimizer: gin reference to
    `build_optimizer`, called with `global_batch_size`, `total_steps` and
    `warmup_steps`. steps_per_epoch: counted from the train shards when None.
    strategy: a `make_strategy` name or a Strategy. knn_bank_files / knn_query_files: labeled
    splits for the online kNN monitor (memory bank and queries); off when unset.
    """
    files = match_files(train_files, "train.train_files")
    knn_splits = None
    if knn_bank_files or knn_query_files:
        knn_splits = (match_files(knn_bank_files, "train.knn_bank_files"),
                      match_files(knn_query_files, "train.knn_query_files"))
    if steps_per_epoch is None:
        steps_per_epoch = max(1, count_records(files) // global_batch_size)
    total_steps = epochs * steps_per_epoch
    keras.utils.set_random_seed(seed)

    distribution = make_strategy(strategy)
    chief = _is_chief(distribution)
    # Non-chief workers take part in the collective saves but keep nothing.
    out_dir = model_dir if chief else os.path.join(model_dir, f".worker-{os.getpid()}")
    tf.io.gfile.makedirs(out_dir)

    with distribution.scope():
        model = method()
        opt = optimizer(global_batch_size=global_batch_size, total_steps=total_steps,
                        warmup_steps=int(round(warmup_epochs * steps_per_epoch)))
        model.compile(optimizer=opt)
        # Slots must exist before restoring: Keras 3 variables are not restored lazily.
        opt.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=opt)
        manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=3)
        # Every worker resumes from the chief's newest checkpoint.
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
        # After restoring, so that a re-run with more epochs anneals over the new length.
        configure_schedule(model, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    start_step = int(opt.iterations.numpy())
    if start_step:
        print(f"Resuming from {latest} at step {start_step} of {total_steps}")

    input_kwargs = input_arguments(model, accelerator=has_accelerator(distribution))
    where = ("the training step" if input_kwargs["defer_augmentation"] else "the input pipeline")
    print(f"Augmentation after the crop runs in {where} (train_input.defer_augmentation="
          f"{input_kwargs['defer_augmentation']})")
    dataset = distribution.distribute_datasets_from_function(
        lambda ctx: pipeline.make_dataset(
            files, training=True, batch_size=ctx.get_per_replica_batch_size(global_batch_size),
            input_context=ctx, seed=seed + start_step, **input_kwargs))

    metrics = cb.MetricsJSON(os.path.join(out_dir, "metrics.json"))
    callbacks = [cb.TerminateOnNonFiniteLoss(),
                 cb.StepCheckpoint(manager, checkpoint_every_steps),
                 cb.WriteOperativeConfig(os.path.join(out_dir, "operative_config.gin")),
                 cb.LogLearningRate()]
    knn = None
    if knn_splits:
        knn = knn_monitor(*knn_splits, input_kwargs, batch_size=knn_batch_size,
                          every_n_epochs=knn_every_epochs)
        knn.set_model(model)
        callbacks.append(knn)
    tensorboard = cb.TensorBoardScalars(os.path.join(out_dir, "tensorboard"),
                                        tensorboard_every_steps)
    callbacks += [metrics, tensorboard, *extra_callbacks]

    if knn and start_step == 0:
        # The random-initialization baseline, so the logs show what training added.
        accuracy = knn.evaluate()
        metrics.record(0, {"step": 0, "knn_top1": accuracy})
        tensorboard.write("epoch", {"knn_top1": accuracy}, step=0)
    if start_step < total_steps:
        _fit(model, dataset, callbacks, start_step=start_step, epochs=epochs,
             steps_per_epoch=steps_per_epoch, verbose=verbose)

    metrics.finish(final_metrics(metrics.epochs, step=int(opt.iterations.numpy()),
                                 epochs=epochs, steps_per_epoch=steps_per_epoch,
                                 global_batch_size=global_batch_size))
    if chief:
        export_lib.export_saved_model(model.backbone, os.path.join(model_dir, "export"),
                                      overwrite=True, **export_lib.preprocessing_of(input_kwargs))
    else:
        tf.io.gfile.rmtree(out_dir)
    return metrics.final


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m video_ssl.train", description="Self-supervised video pre-training.")
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin config file; repeat to compose (later files override earlier)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="one gin binding, e.g. train.epochs=10; applied after the files")
    parser.add_argument("--model_dir", required=True,
                        help="checkpoints, logs, metrics.json and export/ go here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    try:
        parse_gin(args.gin_file, args.gin_param)
        train(args.model_dir)
    except (ValueError, cb.NonFiniteLossError) as error:
        print(f"video_ssl.train: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
