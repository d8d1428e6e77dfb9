"""Backbone benchmark: parameters (vs the papers), multiply-adds, and CPU/GPU time per
clip at each backbone's paper input size.

    python benchmarks/backbones.py                       # all backbones, with timing
    python benchmarks/backbones.py --backbones slow_r50,tsm_r50 --no-timing

Input sizes: Slow R-* 8×224² (ρ-paper); R(2+1)D-18 16×112² (the ρ-paper's Table 5
R(2+1)D row, as Tran et al.'s 16-frame 112² clips); S3D/S3D-G 32×128² (CoCLR); TSM 16×224²
(BraVe's narrow view: 16 frames, step 2, 224²); audio 3072×80 log-mel (BraVe's broad view:
64 frames × step 4 at 25 fps = 10.24 s of 48 kHz audio, STFT step 160 with end padding,
80 mel bins).

Timing: the forward pass (inference mode) and one forward+backward pass (training mode,
gradients of a scalar loss w.r.t. every trainable weight) each run as a `tf.function`
(no XLA), after `--warmup` untimed calls; the mean of `--iterations` timed calls is
divided by the batch size. Multiply-add rates: forward = forward MACs / forward time;
forward+backward counts 3× the forward MACs (backward ≈ 2× forward).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from video_ssl.models import available_backbones, build_backbone, count_flops  # noqa: E402

INPUT_SHAPES = {
    "slow_r18": (8, 224, 224, 3), "slow_r50": (8, 224, 224, 3),
    "slow_r101": (8, 224, 224, 3), "r3d_50": (16, 224, 224, 3),
    "r2plus1d_18": (16, 112, 112, 3),
    "s3d": (32, 128, 128, 3), "s3dg": (32, 128, 128, 3),
    "tsm_r50": (16, 224, 224, 3), "tsm_r50x2": (16, 224, 224, 3),
    "audio_resnet50": (3072, 80, 1),
}
# Parameters as the papers state them (millions), without classifier except R(2+1)D-18:
# Tran et al.'s 33.3M includes its 400-way classifier (0.2M); R3D-50 as CVRL's README.
PAPER_PARAMS_M = {"slow_r50": 31.6, "r3d_50": 31.7, "r2plus1d_18": 33.3, "s3d": 7.9, "s3dg": 9.1,
                  "tsm_r50": 23.5, "tsm_r50x2": 93.9, "audio_resnet50": 23.5}


def _mean_seconds(step, inputs, warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        step(inputs)
    start = time.perf_counter()
    for _ in range(iterations):
        step(inputs)
    return (time.perf_counter() - start) / iterations


def _timings(model, inputs, warmup: int, iterations: int) -> tuple[float, float]:
    @tf.function
    def forward(x):
        return model(x, training=False)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    # .numpy() of the last result waits for the device.
    def run(step):
        return lambda x: tf.nest.map_structure(lambda t: t.numpy(), step(x))
    return (_mean_seconds(run(forward), inputs, warmup, iterations),
            _mean_seconds(run(forward_backward), inputs, warmup, iterations))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(available_backbones()),
                        help="comma-separated names (default: all)")
    parser.add_argument("--no-timing", action="store_true", help="only params and MACs")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="TensorFlow inter-op threads (1 is fastest at batch 1 on CPU)")
    args = parser.parse_args()
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = sorted(set(names) - set(INPUT_SHAPES))
    if unknown:
        parser.error(f"--backbones: unknown {unknown}; expected names from {sorted(INPUT_SHAPES)}")
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    device = tf.config.list_physical_devices("GPU")[:1] or tf.config.list_physical_devices("CPU")
    print(f"device: {device[0].device_type}; batch {args.batch}; TF {tf.__version__}; "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']}")
    header = (f"{'backbone':<15}{'input':>16}{'params M':>10}{'paper M':>9}{'GMAC':>8}"
              f"{'fwd s':>9}{'fwd+bwd s':>11}{'fwd GMAC/s':>12}{'train GMAC/s':>14}")
    print(header)
    for name in names:
        shape = INPUT_SHAPES[name]
        model = build_backbone(name)
        params = sum(int(np.prod(v.shape)) for v in model.trainable_weights) / 1e6
        macs = count_flops(model, (1, *shape)) / 1e9
        paper = PAPER_PARAMS_M.get(name)
        row = (f"{name:<15}{'x'.join(map(str, shape)):>16}{params:>10.2f}"
               f"{paper if paper else '-':>9}{macs:>8.1f}")
        if not args.no_timing:
            inputs = tf.random.normal((args.batch, *shape))
            forward, train = _timings(model, inputs, args.warmup, args.iterations)
            forward, train = forward / args.batch, train / args.batch
            row += f"{forward:>9.3f}{train:>11.3f}{macs / forward:>12.1f}{3 * macs / train:>14.1f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
