"""Audio encoders in evaluation: the broad audio encoder of a tiny BraVe run (V<->A,
audio_resnet50 / 8 on 0.5 s log-mel clips at 8 kHz, saved untrained) evaluated on
audio-only shards (as prepare_dataset writes ESC-50) whose classes are tones: its
log-mel clips (and audio at another sample rate, one line naming the shard), the
linear SVM of gin_configs/eval/svm_esc50.gin and the multi-label MLP of
mlp_audioset.gin through `python -m video_ssl.evaluate`, the training clips' label
sets, mAP against a NumPy average precision, the retrieval sheet's spectrograms, the
export of the audio classifier and the configs' paper values."""
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import video_ssl.train  # noqa: F401  (registers train_input)
from helpers import EVAL_CONFIGS, TONES, save_run, shard_pattern, tones
from video_ssl import config as config_lib, evaluate as evaluate_lib, export as export_lib
from video_ssl.data import audio as audio_lib, schema
from video_ssl.data.views import AudioSpec
from video_ssl.evaluation import figures, retrieval
from video_ssl.evaluation.protocol import EvalData
from video_ssl.pretrained import load_encoder

RATE, SECONDS = 8000, 1.0
SPEC = AudioSpec(sample_rate=8000.0, duration=0.5, num_mel_bins=16, frame_length=256,
                 frame_step=128, fft_length=256, lower_edge_hertz=80.0,
                 upper_edge_hertz=3800.0, log_offset=1.0, log_scale=10000.0)
LABEL_SETS = [(0,), (1,), (0, 1), (2,)]  # multi-label videos cycle through these


@pytest.fixture(scope="module")
def shards(make_shards):
    """Audio-only records (no frames, as ESC-50's) whose classes sound as `TONES`: the
    splits' clips are numbered from 0, 20, 40 and 60 (clip_NN.wav)."""
    def clips(split, label_sets, num_shards=1, first=0):
        return make_shards(split, label_sets, num_shards, modalities=("audio",),
                           videos=range(first, first + len(label_sets)), sample_rate=RATE,
                           audio_seconds=SECONDS, filename="clip_{:02d}.wav")
    # Both classes in each of the 2 train shards (the SVM holds one out to choose C).
    single = [(c,) for c in [0, 0, 1, 1] * 2]
    multi = [LABEL_SETS[i % 4] for i in range(12)]
    return {"train": shard_pattern(clips("train", single, 2)),
            "test": shard_pattern(clips("test", [(0,), (1,), (0,), (1,)], first=20)),
            "multi_train": shard_pattern(clips("multi_train", multi, 2, first=40)),
            "multi_test": clips("multi_test", LABEL_SETS, first=60)[0]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A BraVe V<->A run: narrow slow_r18 / 8 and broad audio_resnet50 / 8."""
    gin.clear_config()
    config_lib.parse_gin([], [
        "BraVe.narrow_backbone = 'slow_r18'", "BraVe.views = @brave_views()",
        "brave_views.broad = ('audio',)",
        "BraVe.broad_backbones = {'audio': 'audio_resnet50'}",
        "BraVe.backbone_kwargs = {'width_multiplier': 0.125}", "BraVe.hidden_dim = 16",
        "BraVe.embedding_dim = 8", "BraVe.synchronized_bn = False",
        "train_input.num_frames = 4", "train_input.frame_stride = 2",
        "train_input.crop_size = 32", "broad_audio/train_input.sync = 'start'",
        "broad_audio/train_input.audio = @AudioSpec()",
        *[f"AudioSpec.{k} = {v!r}" for k, v in vars(SPEC).items()]])
    directory = save_run(config_lib.method_configurable("BraVe")(),
                         tmp_path_factory.mktemp("brave") / "brave_v_a")
    gin.clear_config()
    return directory


@pytest.fixture(scope="module")
def audio(run_dir):
    gin.clear_config()
    return load_encoder(run_dir, encoder="broad_audio")


def overlay(tmp_path, shards, train="train", test="test", classes=2):
    lines = [f"evaluate.train_files = {shards[train]!r}",
             f"evaluate.test_files = {shards[test]!r}", f"NUM_CLASSES = {classes}",
             "evaluate.batch_size = 4", "evaluate.eval_batch_size = 4",
             "linear_svm.train_epochs = 2", "linear_svm.verbose = False",
             "mlp_probe.epochs = 3", "mlp_probe.batch_norm = True", "mlp_probe.verbose = 0",
             "retrieval.verbose = False"]
    path = tmp_path / "tiny_audio_eval.gin"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(capsys, *argv):
    code = evaluate_lib.main([str(a) for a in argv])
    return code, capsys.readouterr()


def eval_data(shards, train="train", test="test", **test_input):
    return EvalData(sorted(tf.io.gfile.glob(shards[train])), sorted(tf.io.gfile.glob(shards[test])),
                    key="audio",
                    train_input={"audio": SPEC, "start": "anywhere_looped"},
                    test_input={"audio": SPEC, **test_input}, gallery_input={"audio": SPEC},
                    batch_size=4, eval_batch_size=4)


def mean_log_mel(labels) -> np.ndarray:
    """The time-averaged log-mel of a clean clip of these classes."""
    mel = audio_lib.log_mel_spectrogram(
        tones(labels, 999, SECONDS, RATE)[:int(RATE * SPEC.duration)], RATE,
        num_mel_bins=SPEC.num_mel_bins, frame_length=SPEC.frame_length,
        frame_step=SPEC.frame_step, fft_length=SPEC.fft_length,
        lower_edge_hertz=SPEC.lower_edge_hertz, upper_edge_hertz=SPEC.upper_edge_hertz,
        log_offset=SPEC.log_offset, log_scale=SPEC.log_scale)
    return mel.numpy().mean(axis=0)


def average_precision(scores, positives) -> float:
    """Sum over the distinct score thresholds, highest first, of the recall gained
    times the precision of everything scored at least that high (tied scores count
    together)."""
    positives = np.asarray(positives, bool)
    total, recall_before = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        selected = scores >= threshold
        recall = positives[selected].sum() / positives.sum()
        total += (recall - recall_before) * positives[selected].mean()
        recall_before = recall
    return total


# ---------------------------------------------------------------------- the clips


def test_audio_encoder_and_its_log_mel_clips(audio, shards):
    assert (audio.encoder, audio.modality, audio.method_name) == ("broad_audio", "audio",
                                                                  "BraVe")
    assert audio.audio == SPEC and len(audio.backbone.input_shape) == 4
    gin.clear_config()
    inputs = evaluate_lib.split_inputs(audio)
    assert inputs["test"]["audio"] == SPEC
    data = eval_data(shards, num_clips=10)
    batch = next(iter(data.test()))
    # 10 test clips of 0.5 s: ceil(4000 / 128) STFT frames x 16 bins.
    assert batch["audio"].shape == (4, 10, 32, 16, 1)
    features = audio.backbone(batch["audio"][:, 0], training=False)
    assert features.shape == (4, 256)  # 2048 x 1/8


def test_multi_label_training_clips_carry_their_label_sets(shards):
    """Each clip's multi-hot labels are those of its own video: the label set whose
    clean spectrum is nearest to the clip's is the one it comes with."""
    data = eval_data(shards, train="multi_train", test="multi_test")
    centroids = {labels: mean_log_mel(labels) for labels in LABEL_SETS}
    seen = set()
    for batch in data.train(num_classes=3, label_sets=True).take(6):
        for clip, labels, first in zip(batch["audio"].numpy(), batch["labels"].numpy(),
                                       batch["label"].numpy()):
            spectrum = clip[0, ..., 0].mean(axis=0)
            heard = min(centroids, key=lambda s: np.abs(centroids[s] - spectrum).sum())
            assert tuple(np.flatnonzero(labels)) == heard and labels[first] == 1
            seen.add(heard)
    assert seen == set(LABEL_SETS)
    np.testing.assert_array_equal(data.label_sets("test", 3),
                                  [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="video 1 .clip_61.wav. has labels \\[1\\]; "
                                         "expected one or more in \\[0, 1\\)"):
        data.label_sets("test", 1)


def test_audio_at_another_sample_rate_names_the_shard(tmp_path):
    path = str(tmp_path / "rate-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(schema.make_sequence_example(
            [], label=0, filename="loud.wav", waveform=np.zeros(16000, np.float32),
            sample_rate=16000).SerializeToString())
    data = EvalData([path], [path], key="audio", test_input={"audio": SPEC})
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"{path}: video loud.wav has audio at 16000.* expected 8000 Hz"):
        list(data.test())


# -------------------------------------------------------------------- protocols


def test_svm_esc50_on_the_audio_encoder(run_dir, shards, tmp_path, capsys):
    code, out = run(capsys, f"--gin_file={os.path.join(EVAL_CONFIGS, 'svm_esc50.gin')}",
                    f"--gin_file={overlay(tmp_path, shards)}", f"--checkpoint={run_dir}",
                    "--encoder=broad_audio", f"--output_dir={tmp_path}")
    assert code == 0, out.err
    report = json.loads((tmp_path / "eval_svm_esc50.json").read_text())
    assert report["modality"] == "audio" and report["encoder"] == "broad_audio"
    assert report["settings"]["inputs"]["test"]["audio"]["sample_rate"] == 8000.0
    assert report["settings"]["inputs"]["test"]["num_clips"] == 10
    assert report["settings"]["inputs"]["train"]["start"] == "anywhere_looped"
    assert report["metrics"]["num_train_clips"] == 16  # 2 augmented passes over 8 clips
    # Tones an octave and more apart: even random features separate them.
    assert report["metrics"]["top1"] == 1.0
    saved = np.load(tmp_path / "eval_svm_esc50" / "test_scores.npz")
    assert saved["scores"].shape == (4, 2) and saved["labels"].tolist() == [0, 1, 0, 1]
    with Image.open(tmp_path / "eval_svm_esc50" / "confusion.png") as image:
        assert image.format == "PNG"


def test_mlp_audioset_multi_label_map(run_dir, shards, tmp_path, capsys):
    code, out = run(capsys, f"--gin_file={os.path.join(EVAL_CONFIGS, 'mlp_audioset.gin')}",
                    f"--gin_file={overlay(tmp_path, shards, 'multi_train', 'multi_test', 3)}",
                    f"--checkpoint={run_dir}", "--encoder=broad_audio",
                    f"--output_dir={tmp_path}")
    assert code == 0, out.err
    assert "mlp_audioset: mAP=" in out.out
    report = json.loads((tmp_path / "eval_mlp_audioset.json").read_text())
    settings = report["settings"]["protocol"]
    assert settings["hidden_units"] == 512 and settings["multi_label"]
    assert settings["optimizer"]["name"] == "adam"
    saved = np.load(tmp_path / "eval_mlp_audioset" / "test_scores.npz")
    labels, scores = saved["labels"], saved["scores"]
    np.testing.assert_array_equal(labels, [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    # Per-class sigmoids, not a softmax over the classes.
    assert scores.shape == (4, 3) and ((scores >= 0) & (scores <= 1)).all()
    assert not np.allclose(scores.sum(axis=1), 1.0)
    expected = np.mean([average_precision(scores[:, c], labels[:, c]) for c in range(3)])
    assert report["metrics"]["mAP"] == pytest.approx(expected)
    hits = labels[np.arange(4), scores.argmax(axis=1)]
    assert report["metrics"]["top1"] == pytest.approx(hits.mean())
    assert "confusion" not in report["outputs"]  # multi-label: no confusion matrix

    # The classifier ships as a SavedModel that takes log-mel clips.
    output = tmp_path / "saved_model"
    export_lib.export_model_dir(str(tmp_path / "eval_mlp_audioset"), str(output))
    loaded = tf.saved_model.load(str(output))
    mel = tf.random.stateless_normal([2, 32, 16, 1], seed=[1, 2])
    model = tf.keras.models.load_model(tmp_path / "eval_mlp_audioset" / "model.keras")
    np.testing.assert_allclose(loaded.serve(mel)["logits"], model(mel, training=False),
                               atol=1e-4)


def test_retrieval_sheet_pictures_audio_as_spectrograms(audio, shards, tmp_path):
    data = eval_data(shards, num_clips=2)
    result = retrieval.retrieval(audio.backbone, data, ks=(1, 5), num_examples=2,
                                 verbose=False)
    assert result.metrics["num_queries"] == 4 and result.metrics["num_gallery"] == 8
    evaluate_lib.write_outputs(result, data, str(tmp_path / "eval_retrieval"), "audio")
    with Image.open(tmp_path / "eval_retrieval" / "neighbours.png") as image:
        assert image.width > 4 * 112 and 2 * 112 < image.height < 3 * 112
    thumbnails = data.thumbnails("test", [0, 1], size=64)
    for index, tone in ((0, TONES[0]), (1, TONES[1])):
        image = thumbnails[index]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        # Low bands at the bottom: the 500 Hz tone's bright row lies below the 1500 Hz one's.
        thumbnails[index] = int(np.argmax(image.astype(float).sum(axis=(1, 2))))
    assert thumbnails[0] > thumbnails[1]


def test_spectrogram_image_orientation():
    mel = np.zeros((10, 4))
    mel[:, 0] = 1.0  # the lowest band loud
    mel[:3, :] += 0.5  # the first frames loud
    image = figures.spectrogram_image(mel, size=8).astype(float).sum(axis=-1)
    assert image[-1].mean() > image[0].mean()  # low band at the bottom
    assert image[:, 0].mean() > image[:, -1].mean()  # time runs left to right
    with pytest.raises(ValueError, match="expected \\(frames, mel_bins\\)"):
        figures.spectrogram_image(np.zeros(5))


@pytest.mark.parametrize("config, expected", [
    # BraVe §4.2: ESC-50 (50 classes), SVM on 10 epochs of augmented features, 10 test
    # clips (the 30 views' temporal ones).
    ("svm_esc50.gin", {"evaluate.protocol": "linear_svm", "%NUM_CLASSES": 50,
                       "linear_svm.train_epochs": 10, "test/eval_input.num_clips": 10,
                       "test/eval_input.eval_crops": 1,
                       "train/eval_input.start": "anywhere_looped"}),
    # §4.2: AudioSet (527 classes, mAP), one hidden layer of 512 units, Adam.
    ("mlp_audioset.gin", {"evaluate.protocol": "mlp_probe", "%NUM_CLASSES": 527,
                          "mlp_probe.hidden_units": 512, "mlp_probe.multi_label": True,
                          "mlp_probe/OptimizerSpec.name": "adam", "test/eval_input.num_clips": 10}),
])
def test_audio_eval_configs_hold_the_papers_values(config, expected):
    config_lib.parse_gin([os.path.join(EVAL_CONFIGS, config)], [])
    for binding, value in expected.items():
        bound = gin.query_parameter(binding)
        if binding == "evaluate.protocol":
            bound = bound.configurable.name
        assert bound == value, binding
