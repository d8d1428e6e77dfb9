"""Builds the embedded demo dataset (see `video_ssl.data.demo`).

    python -m tfrecords_tools.make_demo_dataset [--output=DIR] [--force] [--num_workers=N]

Without --force an already complete build is left as it is.
"""
from __future__ import annotations

import argparse
import glob
import os
import time

from video_ssl.data import demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None,
                        help=f"output folder (default {demo.demo_dir()}, from $VIDEO_SSL_DATA)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--num_workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    root = args.output or demo.demo_dir()
    start = time.time()
    if args.force:
        patterns = demo.build(root, num_workers=args.num_workers, progress=True)
    else:
        if demo.is_complete(root):
            print(f"{root}: already complete (use --force to rebuild)")
        patterns = demo.ensure_demo_dataset(root, num_workers=args.num_workers, progress=True)
    for split in demo.SPLITS:
        files = sorted(glob.glob(patterns[split]))
        size = sum(os.path.getsize(f) for f in files)
        print(f"{split}: {patterns[split]} ({len(files)} shards, {size / 2**20:.1f} MiB)")
    print(f"labels ({len(patterns['labels'])}): {', '.join(patterns['labels'])}")
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
