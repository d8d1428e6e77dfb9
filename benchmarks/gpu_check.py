"""The accelerator check (issue 23): what a GPU run of the project costs, section by
section, written with the device's name to a JSON results file.

    python benchmarks/gpu_check.py [--tiny] [--output FILE] [--workdir DIR]
        [--sections step,augment,input,caching,recipes]

Sections (each written to the results file as soon as it is measured, so a run cut
short keeps what it finished):
- step: a ρMoCo (ρ = 2) training step of Slow R-50 on 8x224^2 clips, the project's
  training loop (`loop.make_train_function`), in float32, mixed_bfloat16 and
  mixed_bfloat16 + XLA, at batch 8 and 16 (videos; 2 clips each); seconds per step.
- augment: `augment.augment_batch`'s time per batch of the deferred pipeline (the ρ
  recipe's augmentation), on the default device (`input_pipeline.device_step_ms`).
- input: clips/s of `make_dataset(..., defer_augmentation=True)` with every core
  (tf.data's autotuned parallelism), on synthetic 256x340 JPEG shards
  (`input_pipeline.build_shards`).
- caching: SimCLR's step with gradient caching against the plain step at ρ = 2 and 4
  (Slow R-50 8x224^2, batch 8, float32).
- recipes: one demo recipe per family end to end (`video_ssl.train` with
  gin_configs/demo.gin): moco_rho2, infonce_rgb, brave_v_v; wall time and the kNN
  top-1 against its random initialization.

--tiny runs every section at toy sizes (a one-convolution backbone on 4x32^2 clips,
batch 2, ρ = 2, 1 s videos; the recipes with Slow R-18 at 1/8 width on the synthetic
shards for one step), to check on a CPU that the script works (tests/test_gpu_check.py);
its numbers mean nothing.
Times are means over --steps timed calls after --warmup untimed ones (tracing, XLA
compilation); each call ends with `.numpy()`, which waits for the device.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import video_ssl  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import keras
import tensorflow as tf

import input_pipeline  # benchmarks/: its synthetic shards and augment_batch timing
from video_ssl import atomic, optim
from video_ssl.data import pipeline
from video_ssl.methods.base import training_view
from video_ssl.methods.moco import MoCo
from video_ssl.methods.simclr import SimCLR
from video_ssl.training import loop
from video_ssl.training.runner import dtype_policy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("step", "augment", "input", "caching", "recipes")
RECIPES = ("moco_rho2.gin", "infonce_rgb.gin", "brave_v_v.gin")
PRECISIONS = (("float32", False), ("mixed_bfloat16", False), ("mixed_bfloat16", True))


def sizes(tiny: bool) -> dict:
    """The model and clip sizes of a full or a --tiny run."""
    if tiny:
        return dict(backbone="toy", frames=4, crop=32, batches=(2,), rhos=(2,),
                    caching_batch=2, heads=(16, 8), video_seconds=1.0, input_batch=2,
                    input_batches=2)
    return dict(backbone="slow_r50", frames=8, crop=224, batches=(8, 16), rhos=(2, 4),
                caching_batch=8, heads=(2048, 128), video_seconds=10.0, input_batch=8,
                input_batches=30)


def toy_backbone(size: dict) -> keras.Model:
    """--tiny's backbone, one convolution: tracing a registry network takes a loaded
    CPU most of a minute per configuration."""
    inputs = keras.Input((size["frames"], size["crop"], size["crop"], 3))
    x = keras.layers.Conv3D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(keras.layers.ReLU()(x)))


def device_name() -> str:
    """The accelerator's name (e.g. "NVIDIA H100 80GB HBM3"), or the CPU's."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{details.get('device_name', 'GPU')} (x{len(gpus)})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def clips_view(size: dict, num_clips: int) -> dict:
    return {"clips": training_view({"num_frames": size["frames"], "crop_size": size["crop"],
                                    "defer_augmentation": False},
                                   num_clips=num_clips, same_window=False, modalities=("rgb",))}


def step_seconds(model: keras.Model, batch_size: int, num_clips: int, size: dict, *,
                 jit_compile: bool, warmup: int, steps: int) -> float:
    """Mean seconds of the training loop's step on one repeated random batch."""
    clips = tf.random.uniform([batch_size, num_clips, size["frames"], size["crop"],
                               size["crop"], 3])
    batch = {"views": {"clips": {"rgb": clips}}, "label": tf.zeros([batch_size], tf.int32),
             "video_id": tf.range(batch_size)}
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train = loop.make_train_function(model, tf.distribute.get_strategy(),
                                     jit_compile=jit_compile)
    for _ in range(warmup):
        train(iterator)["loss"].numpy()
    start = time.perf_counter()
    for _ in range(steps):
        train(iterator)["loss"].numpy()
    return (time.perf_counter() - start) / steps


def build(cls, size: dict, num_clips: int, batch_size: int, precision: str, **kwargs):
    """A method of class `cls` on `num_clips` clips, compiled, under `precision`."""
    keras.utils.set_random_seed(0)
    hidden, embedding = size["heads"]
    with dtype_policy(precision):
        backbone = toy_backbone(size) if size["backbone"] == "toy" else size["backbone"]
        model = cls(clips_view(size, num_clips), backbone, hidden_dim=hidden,
                    embedding_dim=embedding, synchronized_bn=False, total_steps=100, **kwargs)
        optimizer = optim.build_optimizer("lars", base_learning_rate=0.1,
                                          global_batch_size=batch_size, total_steps=100)
        model.compile(optimizer=optimizer)
    return model


def step_section(size: dict, args) -> list[dict]:
    rows = []
    for batch_size in size["batches"]:
        for precision, xla in PRECISIONS:
            model = build(MoCo, size, 2, batch_size, precision, queue_size=4 * batch_size)
            seconds = step_seconds(model, batch_size, 2, size, jit_compile=xla,
                                   warmup=args.warmup, steps=args.steps)
            rows.append({"batch": batch_size, "precision": precision, "xla": xla,
                         "step_s": seconds, "clips_per_s": 2 * batch_size / seconds})
            print(f"step: batch {batch_size} {precision}{' + XLA' if xla else ''}: "
                  f"{seconds:.3f} s", flush=True)
    return rows


def caching_section(size: dict, args) -> list[dict]:
    rows = []
    for rho in size["rhos"]:
        for caching in (False, True):
            model = build(SimCLR, size, rho, size["caching_batch"], "float32",
                          gradient_caching=caching)
            seconds = step_seconds(model, size["caching_batch"], rho, size, jit_compile=False,
                                   warmup=args.warmup, steps=args.steps)
            rows.append({"rho": rho, "gradient_caching": caching, "step_s": seconds})
        rows[-1]["x_plain"] = rows[-1]["step_s"] / rows[-2]["step_s"]
        print(f"caching: rho {rho}: {rows[-2]['step_s']:.3f} s plain, "
              f"{rows[-1]['step_s']:.3f} s cached ({rows[-1]['x_plain']:.2f}x)", flush=True)
    return rows


def shards(workdir: str, size: dict) -> str:
    """The synthetic JPEG shards (built once per workdir)."""
    return input_pipeline.build_shards(workdir, size["video_seconds"],
                                       input_pipeline._frame_pool(size=60))


def deferred_dataset(pattern: str, size: dict) -> tf.data.Dataset:
    """The deferred pipeline with every core (autotuned parallel calls)."""
    return pipeline.make_dataset(
        pattern, training=True, batch_size=size["input_batch"], num_clips=2,
        num_frames=size["frames"], frame_stride=2, crop_size=size["crop"], seed=0,
        shuffle_buffer=input_pipeline.NUM_VIDEOS, default_frame_rate=input_pipeline.FPS,
        defer_augmentation=True)


def input_section(pattern: str, size: dict) -> dict:
    iterator = iter(deferred_dataset(pattern, size))
    for _ in range(3):  # warm-up: tracing, buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(size["input_batches"]):
        next(iterator)
    clips = size["input_batches"] * size["input_batch"] * 2
    result = {"clips_per_s": clips / (time.perf_counter() - start), "cores": os.cpu_count()}
    print(f"input: {result['clips_per_s']:.1f} clips/s on {os.cpu_count()} cores", flush=True)
    return result


def augment_section(pattern: str, size: dict, args) -> dict:
    batch = next(iter(deferred_dataset(pattern, size)))
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    ms = input_pipeline.device_step_ms(batch, device, input_pipeline.RHO_RECIPE, rounds=1,
                                       batches=args.steps)
    print(f"augment: {ms:.2f} ms per batch of {size['input_batch']} x 2 clips on {device}",
          flush=True)
    return {"ms_per_batch": ms, "device": device, "clips_per_batch": size["input_batch"] * 2}


def recipe_params(tiny: bool, pattern: str) -> list[str]:
    """The bindings after demo.gin: none for a full run; for --tiny the synthetic shards
    and toy sizes, one step."""
    if not tiny:
        return []
    return [f"train.train_files = {pattern!r}", f"train.knn_bank_files = {pattern!r}",
            f"train.knn_query_files = {pattern!r}", "train.global_batch_size = 4",
            "train.epochs = 1", "train.steps_per_epoch = 1", "train.verbose = 0",
            "BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
            "HEAD_HIDDEN_DIM = 16", "EMBEDDING_DIM = 8", "QUEUE_SIZE = 8",
            "BN_GROUP_SIZE = 2", "train_input.crop_size = 32", "NARROW_CROP = 32",
            "BROAD_CROP = 16", "BROAD_FRAMES = 4"]


def recipes_section(workdir: str, tiny: bool, pattern: str, recipes) -> list[dict]:
    rows = []
    for recipe in recipes:
        model_dir = os.path.join(workdir, "runs", recipe.removesuffix(".gin"))
        command = [sys.executable, "-m", "video_ssl.train",
                   "--gin_file", os.path.join(REPO, "gin_configs", recipe),
                   "--gin_file", os.path.join(REPO, "gin_configs", "demo.gin"),
                   *[f"--gin_param={p}" for p in recipe_params(tiny, pattern)],
                   "--model_dir", model_dir]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": REPO})
        row = {"recipe": recipe, "wall_s": time.perf_counter() - start,
               "exit_code": done.returncode}
        if done.returncode == 0:
            with open(os.path.join(model_dir, "metrics.json")) as f:
                final = json.load(f)["final"]
            row.update({k: final.get(k) for k in ("step", "loss", "knn_top1",
                                                  "knn_top1_random_init")})
        else:  # report and go on with the next recipe
            row["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        rows.append(row)
        print(f"recipes: {row}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a CPU smoke run)")
    parser.add_argument("--output", default=os.path.join(REPO, "benchmarks", "gpu_check.json"))
    parser.add_argument("--workdir", default=None, help="shards and runs (default: a temp dir)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="the recipes section's gin files (gin_configs/)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    missing = [r for r in recipes if not os.path.exists(os.path.join(REPO, "gin_configs", r))]
    if missing:
        parser.error(f"--recipes: {missing} not in gin_configs/")
    size = sizes(args.tiny)
    workdir = args.workdir or tempfile.mkdtemp(prefix="video_ssl_gpu_check_")
    os.makedirs(workdir, exist_ok=True)
    results = {"device": device_name(), "tiny": args.tiny, "tensorflow": tf.__version__,
               "sizes": size, "sections": {}}
    print(f"device: {results['device']}; results to {args.output}", flush=True)
    pattern = shards(workdir, size) if {"augment", "input", "recipes"} & set(sections) else None
    measure = {"step": lambda: step_section(size, args),
               "augment": lambda: augment_section(pattern, size, args),
               "input": lambda: input_section(pattern, size),
               "caching": lambda: caching_section(size, args),
               "recipes": lambda: recipes_section(workdir, args.tiny, pattern, recipes)}
    for name in sections:
        start = time.perf_counter()
        results["sections"][name] = measure[name]()
        results["sections"][f"{name}_wall_s"] = time.perf_counter() - start
        atomic.write_text(args.output, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
