"""The health monitors' curves of training runs as one Markdown table.

    python benchmarks/monitor_table.py RUN_DIR [RUN_DIR ...] [--epochs 0,6,18,30]

One row per run and monitored epoch, read from the run's metrics.json: the loss, then
per encoder (the primary one first, the others in the order metrics.json names them)
the kNN top-1, `embedding_std`, `effective_rank` and the primary encoder's alignment /
uniformity (docs/training.md says what each means). Cells hold one value per encoder,
"narrow / broad" for BraVe. Epochs the monitor skipped are left out; `--epochs` default:
every monitored epoch. docs/brave.md's monitor-curve table is this script's output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

def encoders(epoch: dict) -> list[str]:
    """Key suffixes of the monitored encoders: "" (primary), then "_<name>" as listed."""
    suffixes = [""]
    for key in epoch:
        if key.startswith("knn_top1_") and not key.endswith("_random_init"):
            suffixes.append(key[len("knn_top1"):])
    return suffixes


def rows(run_dir: str, epochs: set[int] | None) -> list[list[str]]:
    with open(os.path.join(run_dir, "metrics.json")) as f:
        history = json.load(f)["epochs"]
    out = []
    for epoch in history:
        if "knn_top1" not in epoch or (epochs is not None and epoch["epoch"] not in epochs):
            continue
        suffixes = encoders(epoch)

        def cells(name: str, digits: int) -> str:
            return " / ".join(f"{epoch[name + s]:.{digits}f}" for s in suffixes)

        loss = f"{epoch['loss']:.2f}" if "loss" in epoch else "–"
        out.append([str(epoch["epoch"]), loss, cells("knn_top1", 2),
                    cells("embedding_std", 3), cells("effective_rank", 0),
                    f"{epoch['alignment']:.2f} / {epoch['uniformity']:.2f}"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--epochs", default=None, help="comma-separated epochs to show")
    parser.add_argument("--names", default=None,
                        help="comma-separated row labels, one per run (default: its path)")
    args = parser.parse_args(argv)
    epochs = None if args.epochs is None else {int(e) for e in args.epochs.split(",")}
    names = (args.names.split(",") if args.names else
             ["/".join(os.path.normpath(d).split(os.sep)[-2:]) for d in args.run_dirs])
    if len(names) != len(args.run_dirs):
        parser.error(f"--names has {len(names)} labels for {len(args.run_dirs)} runs")
    print("| run, epoch | loss | kNN | embedding_std | effective rank | "
          "alignment / uniformity |")
    print("|---|---|---|---|---|---|")
    for name, run_dir in zip(names, args.run_dirs):
        for i, row in enumerate(rows(run_dir, epochs)):
            label = f"**{name}** {row[0]}" if i == 0 else row[0]
            print("| " + " | ".join([label] + row[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
