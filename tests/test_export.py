"""SavedModel export: every signature reproduces the Keras model after reloading, the
trainer's export/ and the CLI, atomic writing and the error cases."""
import json
import os
import shutil

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from video_ssl import atomic, export, serving, train as train_lib
from video_ssl.config import parse_gin
from video_ssl.data import clips as clips_lib, pipeline, schema
from video_ssl.evaluation.classifier import build_classifier
from video_ssl.models import build_backbone

CLIP = {"num_frames": 4, "frame_stride": 2, "crop_size": 32}
NORMALIZATION = {"mean": 0.4, "std": 0.2}
NUM_CLIPS, NUM_CLASSES = 2, 5
TOLERANCE = 1e-5
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "gin_configs")


def video_jpegs(rng, num_frames, height, width, offset=0):
    frames = rng.integers(0, 160, (num_frames, height, width, 3)) + offset
    return [tf.io.encode_jpeg(f.astype(np.uint8)).numpy() for f in frames]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Serialized SequenceExamples of different lengths and frame sizes (one portrait),
    and a shard holding them in the same order."""
    rng = np.random.default_rng(0)
    serialized = [schema.make_sequence_example(
        video_jpegs(rng, n, h, w, offset=32 * i), label=i, frame_rate=25.0).SerializeToString()
        for i, (n, h, w) in enumerate([(12, 36, 48), (20, 48, 36), (9, 40, 40)])]
    path = str(tmp_path_factory.mktemp("videos") / "test-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in serialized:
            writer.write(record)
    return serialized, path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """slow_r18/8 + a linear classifier, exported with 2 clips per video, and reloaded."""
    keras.utils.set_random_seed(1)
    backbone = build_backbone("slow_r18", width_multiplier=0.125)
    classifier = keras.Sequential([keras.Input((backbone.output_shape[-1],)),
                                   keras.layers.Dense(NUM_CLASSES)])
    output = str(tmp_path_factory.mktemp("exported") / "saved_model")
    serving.export_saved_model(backbone, output, clip=CLIP, normalization=NORMALIZATION,
                              classifier=classifier, num_clips=NUM_CLIPS)
    return backbone, classifier, output, tf.saved_model.load(output)


def keras_outputs(backbone, classifier, clips):
    """Reference: the Keras models on (B, N, T, S, S, 3) clips, averaged over N."""
    b, n = clips.shape[:2]
    features = backbone(clips.reshape((b * n,) + clips.shape[2:]), training=False).numpy()
    logits = classifier(features, training=False).numpy()
    probabilities = tf.nn.softmax(logits).numpy()
    return {k: v.reshape(b, n, -1).mean(axis=1) for k, v in
            {"features": features, "logits": logits, "probabilities": probabilities}.items()}


def assert_close(outputs, reference):
    assert set(outputs) == set(reference)
    for key, value in reference.items():
        np.testing.assert_allclose(np.asarray(outputs[key]), value, rtol=0, atol=TOLERANCE,
                                   err_msg=key)


def test_float_signature_matches_keras(exported):
    backbone, classifier, _, loaded = exported
    frames = np.random.default_rng(1).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    reference = keras_outputs(backbone, classifier, frames[:, None])
    assert_close(loaded.serve(frames), reference)
    # The default signature (TF Serving) is the same function, with named inputs.
    assert_close(loaded.signatures["serving_default"](frames=tf.constant(frames)), reference)
    assert reference["features"].shape == (2, 64)
    assert reference["probabilities"].shape == (2, NUM_CLASSES)


def test_uint8_signature_builds_in_the_evaluation_preprocessing(exported):
    backbone, classifier, _, loaded = exported
    frames = np.random.default_rng(2).integers(0, 256, (2, 4, 40, 50, 3)).astype(np.uint8)
    view = serving.eval_view(CLIP, NORMALIZATION)
    crops = clips_lib.eval_rgb_crops(
        view, tf.constant(frames.reshape(8, 40, 50, 3), tf.float32) / 255.0, 2)
    assert crops.shape == (2, 4, 32, 32, 3)
    reference = keras_outputs(backbone, classifier, crops.numpy()[:, None])
    assert_close(loaded.serve_uint8(frames), reference)
    assert_close(loaded.signatures["serve_uint8"](frames=tf.constant(frames)), reference)

    # A flat grey clip of any size is the float clip (v / 255 - mean) / std.
    grey = np.full((1, 4, 30, 70, 3), 200, np.uint8)
    normalized = np.full((1, 4, 32, 32, 3), (200 / 255 - 0.4) / 0.2, np.float32)
    assert_close(loaded.serve_uint8(grey), {k: v.numpy() for k, v in
                                            loaded.serve(normalized).items()})


def test_sequence_example_signature_matches_the_evaluation_pipeline(exported, videos):
    backbone, classifier, _, loaded = exported
    serialized, shard = videos
    batch = next(iter(pipeline.make_dataset(
        shard, training=False, batch_size=len(serialized), num_clips=NUM_CLIPS, **CLIP,
        **NORMALIZATION)))
    assert batch["rgb"].shape == (3, NUM_CLIPS, 4, 32, 32, 3)
    reference = keras_outputs(backbone, classifier, batch["rgb"].numpy())
    assert_close(loaded.serve_sequence_examples(tf.constant(serialized)), reference)
    signature = loaded.signatures["serve_sequence_examples"]
    assert_close(signature(serialized=tf.constant(serialized)), reference)
    # Averaging over clips: the two clips of a video give different features.
    single = keras_outputs(backbone, classifier, batch["rgb"].numpy()[:, :1])
    assert np.abs(single["features"] - reference["features"]).max() > 1e-4


def test_sequence_example_without_frames_names_the_feature(exported):
    empty = schema.make_sequence_example([b"x"])
    del empty.feature_lists.feature_list[schema.FRAMES].feature[:]
    with pytest.raises(tf.errors.InvalidArgumentError, match="has no feature list image/encoded"):
        exported[3].serve_sequence_examples(tf.constant([empty.SerializeToString()]))


def test_metadata_records_the_preprocessing(exported):
    with open(os.path.join(exported[2], serving.METADATA)) as f:
        metadata = json.load(f)
    assert metadata["clip"] == {**CLIP, "target_fps": None, "short_side": None}
    assert metadata["normalization"] == {"normalize": True, **NORMALIZATION}
    assert metadata["num_clips"] == NUM_CLIPS
    assert metadata["outputs"] == ["features", "logits", "probabilities"]


def test_output_is_never_half_written(exported, tmp_path):
    backbone, _, complete, _ = exported
    output = str(tmp_path / "out")
    shutil.copytree(complete, output)
    before = sorted(os.listdir(output))
    with pytest.raises(serving.ExportError, match=f"--output={output} already exists"):
        serving.export_saved_model(backbone, output, clip=CLIP)

    def fail_midway(directory):
        os.makedirs(directory)
        open(os.path.join(directory, "saved_model.pb"), "w").close()
        raise OSError("disk full")

    for target, overwrite in ((output, True), (str(tmp_path / "new"), False)):
        with pytest.raises(OSError, match="disk full"):
            atomic.write_directory(target, fail_midway, overwrite=overwrite)
        assert sorted(os.listdir(output)) == before  # the complete export is kept
        assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing half-written is left

    def write(directory):
        os.makedirs(directory)
        open(os.path.join(directory, "new"), "w").close()

    atomic.write_directory(output, write, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(output) == ["new"]


def test_bad_settings_are_named():
    with pytest.raises(serving.ExportError, match=r"unknown clip/normalization settings \['crop'\]"):
        serving.eval_view({"crop": 32})
    audio = build_backbone("audio_resnet50", width_multiplier=0.125)
    with pytest.raises(serving.ExportError, match="an RGB encoder takes"):
        serving.build_archive(audio, serving.eval_view())
    with pytest.raises(serving.ExportError, match="modality='depth'"):
        serving.build_archive(audio, serving.eval_view(), modality="depth")


def test_flow_and_audio_encoders_export_the_float_signature(tmp_path):
    """Any encoder a method names exports: non-RGB ones with `serve` alone."""
    for modality, name, clips in (
            ("flow", "slow_r18", tf.random.normal([2, 4, 32, 32, 2])),
            ("audio", "audio_resnet50", tf.random.normal([2, 64, 16, 1]))):
        kwargs = {"input_channels": 2} if modality == "flow" else {}
        backbone = build_backbone(name, width_multiplier=0.125, **kwargs)
        output = str(tmp_path / modality)
        serving.export_saved_model(backbone, output, clip=CLIP, modality=modality)
        loaded = tf.saved_model.load(output)
        assert "serve" in loaded.signatures and "serve_uint8" not in loaded.signatures
        np.testing.assert_allclose(loaded.serve(clips)["features"].numpy(),
                                   backbone(clips, training=False).numpy(), rtol=1e-4,
                                   atol=1e-5)
        with open(os.path.join(output, serving.METADATA)) as f:
            assert json.load(f)["modality"] == modality


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, videos):
    """A one-step tiny MoCo run (default strategy) trained with a non-default mean/std."""
    directory = str(tmp_path_factory.mktemp("run") / "model_dir")
    bindings = {
        "train.train_files": repr(videos[1]), "train.global_batch_size": 2, "train.epochs": 1,
        "train.steps_per_epoch": 1, "train.warmup_epochs": 0, "train.verbose": 0,
        "BACKBONE": "'slow_r18'", "BACKBONE_KWARGS": "{'width_multiplier': 0.125}",
        "MoCo.queue_size": 8, "MoCo.hidden_dim": 16, "MoCo.embedding_dim": 8,
        **{f"train_input.{k}": v for k, v in {**CLIP, **NORMALIZATION}.items()}}
    gin.clear_config()
    try:
        parse_gin([os.path.join(CONFIGS, "moco_rho2.gin")],
                  [f"{k} = {v}" for k, v in bindings.items()])
        train_lib.train(directory)
    finally:
        gin.clear_config()
    return directory


@pytest.mark.slow
def test_trainer_export_carries_all_signatures(model_dir, videos):
    trained = os.path.join(model_dir, "export")
    with open(os.path.join(trained, serving.METADATA)) as f:
        metadata = json.load(f)
    assert metadata["clip"] == {**CLIP, "target_fps": None, "short_side": None}
    assert metadata["normalization"] == {"normalize": True, **NORMALIZATION}
    loaded = tf.saved_model.load(trained)
    assert set(serving.SIGNATURES) <= set(loaded.signatures)
    outputs = loaded.serve_sequence_examples(tf.constant(videos[0]))
    assert list(outputs) == ["features"] and outputs["features"].shape == (3, 64)
    assert not os.path.exists(trained + ".tmp")


def run_cli(capsys, *argv):
    code = export.main([str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.mark.slow
def test_cli_exports_a_training_run(model_dir, tmp_path, videos, capsys):
    output = tmp_path / "saved_model"
    code, printed = run_cli(capsys, "--model_dir", model_dir, "--output", output)
    assert code == 0, printed.err
    assert f"Exported {output}" in printed.out
    loaded = tf.saved_model.load(str(output))
    trained = tf.saved_model.load(os.path.join(model_dir, "export"))
    # Both hold the last checkpoint's backbone (one step, checkpointed at the end).
    frames = np.random.default_rng(3).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    assert_close(loaded.serve(frames), {"features": trained.serve(frames)["features"].numpy()})
    with open(output / serving.METADATA) as f:
        metadata = json.load(f)
    assert metadata["source"]["method"] == "MoCo"
    assert metadata["source"]["checkpoint"].endswith("ckpt-1")
    assert metadata["normalization"]["mean"] == NORMALIZATION["mean"]
    assert metadata["source"]["encoder"] == "rgb"

    code, printed = run_cli(capsys, "--model_dir", model_dir, "--output", tmp_path / "x",
                            "--encoder", "narrow")
    assert code == 1 and "--encoder=narrow" in printed.err and "['rgb']" in printed.err
    code, printed = run_cli(capsys, "--model_dir", model_dir, "--output", output)
    assert code == 1
    assert f"--output={output} already exists; pass --overwrite" in printed.err
    code, printed = run_cli(capsys, "--model_dir", model_dir, "--output", output,
                            "--num_clips", 3, "--overwrite")
    assert code == 0, printed.err
    assert json.load(open(output / serving.METADATA))["num_clips"] == 3
    reloaded = tf.saved_model.load(str(output))  # kept referenced: it owns the variables
    outputs = reloaded.serve_sequence_examples(tf.constant(videos[0]))
    assert outputs["features"].shape == (3, 64)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    output = tmp_path / "out"
    code, printed = run_cli(capsys, "--model_dir", tmp_path / "missing", "--output", output)
    assert code == 1
    assert f"--model_dir={tmp_path / 'missing'}: no such directory" in printed.err
    code, printed = run_cli(capsys, "--model_dir", tmp_path, "--output", output)
    assert code == 1 and "neither a training run" in printed.err

    no_checkpoint = tmp_path / "no_checkpoint"
    (no_checkpoint / "checkpoints").mkdir(parents=True)
    (no_checkpoint / "operative_config.gin").write_text("")  # a training run's marker
    code, printed = run_cli(capsys, "--model_dir", no_checkpoint, "--output", output)
    assert code == 1 and "no checkpoint found" in printed.err
    code, printed = run_cli(capsys, "--model_dir", no_checkpoint, "--output", output,
                            "--checkpoint", tmp_path / "ckpt-9")
    assert code == 1 and f"{tmp_path / 'ckpt-9'}: no such checkpoint" in printed.err
    assert printed.err.count("\n") == 1  # one line
    assert not output.exists()
    with pytest.raises(SystemExit):
        export.parse_flags(["--model_dir", "d", "--output", "o", "--num_clips", "0"])
    assert "--num_clips=0: expected at least 1" in capsys.readouterr().err


def test_cli_exports_an_evaluation_classifier(tmp_path, capsys):
    """An `eval_NAME/model.keras` as video_ssl.evaluate writes it, with its report."""
    keras.utils.set_random_seed(2)
    model = build_classifier(build_backbone("slow_r18", width_multiplier=0.125), NUM_CLASSES,
                             train_backbone=False, batch_norm=True, l2_normalize=True)
    evaluation = tmp_path / "eval_linear"
    evaluation.mkdir()
    model.save(evaluation / "model.keras")
    test_input = {**CLIP, "short_side": 32, "num_clips": 10, "eval_crops": 3, **NORMALIZATION}
    (tmp_path / "eval_linear.json").write_text(json.dumps(
        {"protocol": "linear", "method": "MoCo", "checkpoint": "run/checkpoints/ckpt-9",
         "settings": {"inputs": {"test": test_input}}}))
    output = tmp_path / "saved_model"
    code, printed = run_cli(capsys, "--model_dir", evaluation, "--output", output)
    assert code == 0, printed.err
    loaded = tf.saved_model.load(str(output))

    frames = np.random.default_rng(4).integers(0, 256, (2, 4, 40, 50, 3)).astype(np.uint8)
    view = serving.eval_view({**CLIP, "short_side": 32}, NORMALIZATION)
    clips = clips_lib.eval_rgb_crops(
        view, tf.constant(frames.reshape(8, 40, 50, 3), tf.float32) / 255.0, 2)
    logits = model(clips, training=False)
    reference = {"features": model.get_layer("slow_r18")(clips, training=False).numpy(),
                 "logits": logits.numpy(), "probabilities": tf.nn.softmax(logits).numpy()}
    assert_close(loaded.serve_uint8(frames), reference)
    assert_close(loaded.serve(clips), reference)
    with open(output / serving.METADATA) as f:
        metadata = json.load(f)
    assert metadata["clip"]["short_side"] == 32 and metadata["num_clips"] == 1
    assert metadata["source"]["checkpoint"] == "run/checkpoints/ckpt-9"

    (tmp_path / "eval_linear.json").unlink()
    code, printed = run_cli(capsys, "--model_dir", evaluation, "--output", tmp_path / "x")
    assert code == 1 and f"{tmp_path / 'eval_linear.json'}: no such file" in printed.err
