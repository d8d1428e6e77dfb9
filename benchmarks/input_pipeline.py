"""Input pipeline throughput against the JPEG-decode-only floor.

Builds two sets of 256x340 JPEG shards (24 videos at 25 fps: 10 s each, and 40 s
each; frames ~20 KiB like Kinetics at 256p), then prints clips/s for rho = 2 clips of
8 x 224^2 per video:
- floor: the same tf.data reading and parsing plus `tf.io.decode_jpeg` of the same
  number of whole frames (16 per video), nothing else;
- crop+flip: `make_dataset` with the random-resized crop decoded in place, resize,
  flip and normalization, photometric augmentation off;
- rho recipe: `make_dataset` with photometric augmentation on the CPU as the rho
  recipes had it when benchmarks/RESULTS.md was measured: Inception-style crop,
  colour jitter p 0.8 at colour strength s = 0.5 (MoCo v2's jitter), grayscale
  p 0.2, no blur, flip, normalization;
- aug+: the same with Table 9's stronger augmentation: Table 7's colour strength
  s = 0.75 (gin_configs/aug_plus.gin), Gaussian blur p 0.5;
- deferred: `make_dataset(..., defer_augmentation=True)`, what training runs when it
  has an accelerator: the crops decoded into uint8 canvases (resized only when larger
  than the canvas), plus sizes and seeds; the resize, flip and photometric ops then run
  in the training step as `augment.augment_batch`, timed last, per batch, on the
  default device (a GPU when there is one).
Each run is limited to `calls` threads (tf.data private thread pool, intra-op
parallelism 1), so "1 and 2 parallel calls" mean 1 and 2 cores. Each number is the
best of --rounds runs taken in turn, which filters out other processes' load. The
second table is CPU time (user + system, all threads) per clip, also the best of the
rounds: on a shared machine its ratios hold better than those of clips/s.

    python benchmarks/input_pipeline.py [--workdir DIR] [--batches 30] [--rounds 3]
        [--seconds 10 40] [--calls 1 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import video_ssl  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
import cv2
import numpy as np
import tensorflow as tf

from video_ssl.data import augment, pipeline, reader, schema

HEIGHT, WIDTH, FPS = 256, 340, 25.0
NUM_VIDEOS, NUM_SHARDS = 24, 4
CLIPS, FRAMES, STRIDE, CROP = 2, 8, 8, 224
BATCH = 8
NO_PHOTOMETRIC = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
RHO_RECIPE = dict(color_jitter_prob=0.8, color_strength=0.5, grayscale_prob=0.2, blur_prob=0.0)
AUG_PLUS = dict(RHO_RECIPE, color_strength=0.75, blur_prob=0.5)


def _frame_pool(size: int = 400, seed: int = 0) -> list[bytes]:
    """JPEGs of a camera panning over a textured scene (blobs + fine noise), so the
    files have the entropy, and the decode cost, of real footage."""
    rng = np.random.RandomState(seed)
    coarse = cv2.resize(rng.uniform(0, 255, (24, 48, 3)).astype(np.float32),
                        (WIDTH + size, HEIGHT), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 4, coarse.shape).astype(np.float32)
    scene = np.clip(coarse + fine, 0, 255).astype(np.uint8)
    return [cv2.imencode(".jpg", scene[:, i:i + WIDTH], [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            .tobytes() for i in range(size)]


def build_shards(workdir: str, seconds: float, pool: list[bytes]) -> str:
    """NUM_VIDEOS videos of `seconds` s in NUM_SHARDS shards; returns the glob."""
    prefix = os.path.join(workdir, f"bench{int(seconds)}s")
    pattern = f"{prefix}-*.tfrecord"
    if tf.io.gfile.glob(pattern):
        return pattern
    frames_per_video = int(seconds * FPS)
    names = schema.shard_names(prefix, NUM_SHARDS)
    writers = [tf.io.TFRecordWriter(n) for n in names]
    for v in range(NUM_VIDEOS):
        offset = 37 * v
        frames = [pool[(offset + i) % len(pool)] for i in range(frames_per_video)]
        ex = schema.make_sequence_example(frames, label=v % 8, filename=f"video{v}.mp4",
                                          frame_rate=FPS, height=HEIGHT, width=WIDTH)
        writers[v % NUM_SHARDS].write(ex.SerializeToString())
    for w in writers:
        w.close()
    return pattern


def decode_floor_dataset(pattern: str, calls: int) -> tf.data.Dataset:
    """Read + parse + decode CLIPS * FRAMES whole frames per video: the floor."""
    files = reader.match_files(pattern)
    ds = reader.read_examples(files, shuffle=True, seed=0).repeat()

    def decode(index, example):
        features = schema.parse_sequence_example(example[0])
        frames = features["frames"]
        seed = tf.stack([tf.constant(0, tf.int64), index])
        picked = tf.random.stateless_uniform([CLIPS * FRAMES], seed, maxval=tf.size(frames),
                                             dtype=tf.int32)
        return tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3), tf.gather(frames, picked),
                         fn_output_signature=tf.uint8)

    ds = ds.enumerate().map(decode, num_parallel_calls=calls)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def pipeline_dataset(pattern: str, calls: int, **options) -> tf.data.Dataset:
    return pipeline.make_dataset(
        pattern, training=True, batch_size=BATCH, num_clips=CLIPS, num_frames=FRAMES,
        frame_stride=STRIDE, crop_size=CROP, seed=0, shuffle_buffer=NUM_VIDEOS,
        num_parallel_calls=calls, default_frame_rate=FPS, **options)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(ds: tf.data.Dataset, calls: int, batches: int) -> tuple[float, float]:
    """(clips per second, CPU milliseconds per clip)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = calls
    options.threading.max_intra_op_parallelism = 1
    it = iter(ds.with_options(options))
    for _ in range(3):  # warm up: tracing, buffers
        next(it)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(batches):
        next(it)
    clips = batches * BATCH * CLIPS
    return clips / (time.perf_counter() - start), (_cpu_seconds() - cpu) / clips * 1e3


def device_step_ms(batch: dict, device: str, options: dict, rounds: int, batches: int) -> float:
    """Milliseconds per batch of `augment.augment_batch` on `device`, for a real batch of
    the deferred pipeline."""
    with tf.device(device):
        inputs = [tf.identity(batch[k]) for k in ("rgb", "augment_seed", "rgb_size")]
        spec = augment.AugmentSpec(**options)
        step = tf.function(lambda *a: tf.reduce_sum(augment.augment_batch(*a, spec)))
        step(*inputs).numpy()  # trace
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(batches):
                step(*inputs).numpy()
            best = min(best, (time.perf_counter() - start) / batches)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where to build the shards (kept)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per number (best kept)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 40.0],
                        help="video lengths")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2],
                        help="parallel calls (= cores)")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="video_ssl_bench_")
    os.makedirs(workdir, exist_ok=True)
    pool = _frame_pool()
    print(f"shards in {workdir}; frame JPEG {np.mean([len(p) for p in pool]) / 1024:.1f} KiB "
          f"({WIDTH}x{HEIGHT}); batches of {BATCH} videos x {CLIPS} clips x {FRAMES}x{CROP}^2")
    columns = ("floor", "crop+flip", "rho recipe", "aug+", "deferred")
    header = f"{'video':>6} {'calls':>5} " + " ".join(f"{c:>15}" for c in columns)
    speed, cpu = [], []
    for seconds in args.seconds:
        pattern = build_shards(workdir, seconds, pool)
        for calls in args.calls:
            builders = (lambda: decode_floor_dataset(pattern, calls),
                        lambda: pipeline_dataset(pattern, calls, **NO_PHOTOMETRIC),
                        lambda: pipeline_dataset(pattern, calls, **RHO_RECIPE),
                        lambda: pipeline_dataset(pattern, calls, **AUG_PLUS),
                        lambda: pipeline_dataset(pattern, calls, defer_augmentation=True))
            runs = np.array([[measure(build(), calls, args.batches) for build in builders]
                             for _ in range(args.rounds)])
            row = f"{seconds:5.0f}s {calls:5d} "
            best_speed, best_cpu = runs[..., 0].max(axis=0), runs[..., 1].min(axis=0)
            # Ratios to the floor: throughput over the floor's, the floor's CPU over ours.
            speed.append(row + " ".join(f"{v:8.1f} ({v / best_speed[0]:.2f})" for v in best_speed))
            cpu.append(row + " ".join(f"{v:8.2f} ({best_cpu[0] / v:.2f})" for v in best_cpu))
            print(speed[-1], flush=True)
    for title, lines in (("clips/s (ratio to the floor)", speed),
                         ("CPU ms per clip (floor's CPU time / this one)", cpu)):
        print(f"\n{title}\n{header}")
        print("\n".join(lines))
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    batch = next(iter(pipeline_dataset(pattern, 2, defer_augmentation=True)))
    print(f"\naugment.augment_batch on {device}, ms per batch of {BATCH} x {CLIPS} clips "
          f"(best of {args.rounds} x {args.batches})")
    for name, options in (("rho recipe", RHO_RECIPE), ("aug+", AUG_PLUS)):
        ms = device_step_ms(batch, device, options, args.rounds, args.batches)
        print(f"{name:>12}: {ms:8.2f}")

if __name__ == "__main__":
    main()
