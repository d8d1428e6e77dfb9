"""What a demo run's encoder holds clips together by: the scene (nuisance) or the class.

    python benchmarks/scene_probe.py RUN_DIR [RUN_DIR ...] [--encoder NAME] [--random_init]

The demo videos cut to a new scene (background, actor and distractor colours) every
2-3.5 s while the class cues carry on (`video_ssl/data/demo_render.py`). This renders
the demo's 100 test videos, cuts a clip every 4 frames as evaluation cuts the encoder's
(frames, stride, centre crop, normalization; clips across a cut are left out),
embeds them, centres the features on their mean over all clips, L2-normalizes them and
prints the mean cosine similarity of four kinds of clip pairs:

    same scene    two clips of one video within one scene
    other scene   two clips of one video in different scenes
    same class    clips of two different videos of one class
    other class   clips of two videos of different classes

and two contrasts: scene = same scene - other scene (how much more the encoder ties
clips that share the nuisance than clips that share only the video), class = same
class - other class (how much the class ties videos together, which kNN and the probes
measure). `--random_init` adds each run's encoder at random initialization. One
line per encoder, as a Markdown table. Issue 23 uses it to explain why some RGB
recipes do not beat their random init on the demo (docs/brave.md, docs/coclr.md).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLIP_EVERY = 4  # frames between clip starts


def demo_clips(view, num_videos: int):
    """(clips (N, T, S, S, 3) float32, video (N,), scene (N,), label (N,)) of the demo's
    test videos, cut as the evaluation pipeline cuts the view's clips (centre crop,
    normalization)."""
    import tensorflow as tf

    from video_ssl.data import clips as clips_lib, demo, demo_render, sampling
    stride = float(sampling.clip_stride(demo_render.FPS, view.frame_stride, view.target_fps))
    offsets = np.round(np.arange(view.num_frames) * stride).astype(int)
    clips, videos, scenes, labels = [], [], [], []
    for index in range(num_videos):
        video = demo.demo_video("test", index)
        taken = [start + offsets for start in
                 range(0, len(video.frames) - offsets[-1], CLIP_EVERY)
                 # a clip across a cut belongs to no one scene
                 if video.scene[start] == video.scene[start + offsets[-1]]]
        frames = tf.constant(video.frames[np.concatenate(taken)], tf.float32) / 255.0
        clips.append(clips_lib.eval_rgb_crops(view, frames, len(taken)).numpy())
        videos += [index] * len(taken)
        scenes += [video.scene[t[0]] for t in taken]
        labels += [video.label] * len(taken)
    return (np.concatenate(clips).astype(np.float32), np.array(videos), np.array(scenes),
            np.array(labels))


def similarities(features, videos, scenes, labels) -> dict:
    """Mean cosine similarity of each kind of pair of the centred features."""
    centred = features - features.mean(axis=0)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    same_video = videos[:, None] == videos[None]
    same_scene = same_video & (scenes[:, None] == scenes[None])
    same_class = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(videos), dtype=bool)
    kinds = {"same scene": same_scene & off_diagonal,
             "other scene": same_video & ~same_scene,
             "same class": ~same_video & same_class,
             "other class": ~same_class}
    result = {name: float(cosine[mask].mean()) for name, mask in kinds.items()}
    result["scene"] = result["same scene"] - result["other scene"]
    result["class"] = result["same class"] - result["other class"]
    return result


def probe(model_dir: str, encoder: str | None, random_init: bool, num_videos: int) -> dict:
    import keras

    from video_ssl import pretrained, serving
    keras.utils.set_random_seed(0)
    loaded = pretrained.load_encoder(model_dir, encoder=encoder, random_init=random_init)
    if loaded.modality != "rgb":
        raise SystemExit(f"{model_dir}: encoder {loaded.encoder!r} takes {loaded.modality}; "
                         "the probe cuts RGB clips (name an RGB encoder with --encoder)")
    view = serving.eval_view(loaded.clip, loaded.normalization)  # as extract and export
    clips, videos, scenes, labels = demo_clips(view, num_videos)
    features = np.concatenate([loaded.backbone(clips[i:i + 64], training=False).numpy()
                               for i in range(0, len(clips), 64)])
    return similarities(features, videos, scenes, labels)


COLUMNS = ("same scene", "other scene", "same class", "other class", "scene", "class")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--encoder", default=None, help="default: each run's primary one")
    parser.add_argument("--random_init", action="store_true",
                        help="also each encoder at random initialization")
    parser.add_argument("--num_videos", type=int, default=100)
    args = parser.parse_args(argv)
    print("| encoder | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for model_dir in args.model_dirs:
        for random_init in (False, True) if args.random_init else (False,):
            result = probe(model_dir, args.encoder, random_init, args.num_videos)
            name = "/".join(os.path.normpath(model_dir).split(os.sep)[-2:])
            name += " (random init)" if random_init else ""
            print(f"| {name} | " + " | ".join(f"{result[c]:+.3f}" for c in COLUMNS) + " |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
