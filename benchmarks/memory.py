"""Peak memory and time of one training step for each ρ-method at ρ = 2, 3, 4, and for
SimCLR and SwAV with gradient caching.

    python benchmarks/memory.py [--width 0.25] [--frames 8] [--size 64] [--batch 4]

Each configuration runs in its own process: it builds Slow R-50 (reduced by --width,
--frames, --size to fit a small machine) inside the method, runs two warm-up steps
(tracing), resets the allocator's peak counter, runs --steps timed steps, and reports
TensorFlow's peak allocated memory on the device (`tf.config.experimental.
get_memory_info`; on the CPU through the BFC allocator, `TF_CPU_ALLOCATOR_USE_BFC`):
weights, optimizer slots and a step's activations together, plus the part above what
was allocated before the steps, and the mean step time. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = [(m, rho, False) for m in ("moco", "byol", "simclr", "swav") for rho in (2, 3, 4)]
CONFIGS += [(m, rho, True) for m in ("simclr", "swav") for rho in (2, 3, 4)]


def run_one(method: str, rho: int, caching: bool, args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # memory stats on the CPU too
    import video_ssl  # noqa: F401  (oneDNN before TensorFlow loads)
    import keras
    import tensorflow as tf

    from video_ssl import optim
    from video_ssl.methods import byol, moco, simclr, swav

    classes = {"moco": moco.MoCo, "byol": byol.BYOL, "simclr": simclr.SimCLR,
               "swav": swav.SwAV}
    kwargs = {"gradient_caching": True} if caching else {}
    if method == "moco":
        kwargs["queue_size"] = 4096
    keras.utils.set_random_seed(0)
    model = classes[method]("slow_r50", rho=rho, total_steps=100, synchronized_bn=False,
                            backbone_kwargs={"width_multiplier": args.width}, **kwargs)
    opt = optim.build_optimizer("lars" if method != "moco" else "sgd", base_learning_rate=0.1,
                                global_batch_size=args.batch, total_steps=100)
    model.compile(optimizer=opt, jit_compile=False)
    opt.build(model.trainable_variables)
    clips = max(rho, 2)
    batch = {"views": {"clips": {"rgb": tf.random.normal(
        [args.batch, clips, args.frames, args.size, args.size, 3])}},
        "label": tf.zeros([args.batch], tf.int32)}
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
    seconds = (time.perf_counter() - start) / args.steps
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return {"method": method, "rho": rho, "caching": caching, "peak_mib": peak / 2**20,
            "step_mib": (peak - before) / 2**20, "step_s": seconds, "device": device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, rho, caching = args.one.split(",")
        print(json.dumps(run_one(method, int(rho), caching == "1", args)))
        return 0
    rows = []
    for method, rho, caching in CONFIGS:
        command = [sys.executable, __file__, f"--one={method},{rho},{int(caching)}",
                   f"--width={args.width}", f"--frames={args.frames}", f"--size={args.size}",
                   f"--batch={args.batch}", f"--steps={args.steps}"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
    def plain(method, rho):
        return next(p for p in rows if (p["method"], p["rho"], p["caching"]) == (method, rho,
                                                                                   False))
    print(f"Slow R-50 x{args.width}, {args.frames}x{args.size}^2 clips, batch {args.batch}, "
          f"{rows[0]['device']}")
    print("| method | ρ | gradient caching | peak memory (MiB) | × plain ρ=2 | above the weights "
          "(MiB) | step (s) | × plain, same ρ |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        memory = r["peak_mib"] / plain(r["method"], 2)["peak_mib"]
        time_ratio = r["step_s"] / plain(r["method"], r["rho"])["step_s"]
        print(f"| {r['method']} | {r['rho']} | {'yes' if r['caching'] else 'no'} | "
              f"{r['peak_mib']:.0f} | {memory:.2f} | {r['step_mib']:.0f} | {r['step_s']:.2f} | "
              f"{time_ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
