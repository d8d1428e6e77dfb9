"""What the CLIs print on bad input: one line naming the file or binding, exit 1,
no traceback (unless --verbose or VIDEO_SSL_TRACEBACK=1), quiet TensorFlow; the
model_dir lock; the first-record audio check; --help without TensorFlow."""
import json
import os
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf

from helpers import EVAL_CONFIGS, REPO, checkpoint_steps, cli, eval_overlay
from video_ssl import console, train as train_lib
from video_ssl.training import bindings, run_lock, runner
from video_ssl.data import preflight, schema
from video_ssl.data.views import AudioSpec, ViewSpec


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("tool", ["train", "evaluate", "export", "import_checkpoint", "extract"])
def test_help_answers_without_tensorflow(tool):
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["{tool}", "--help"]
        try:
            runpy.run_module("video_ssl.{tool}", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        print("tensorflow" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--verbose" in result.stdout
    assert result.stdout.strip().endswith("False")  # TensorFlow never loaded


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        train_lib.main(["--gin_file", "x.gin"])
    assert exit.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "video_ssl.train: error: the following arguments are required: --model_dir "
        "(see --help)")


@pytest.mark.parametrize("binding, expected", [
    ("train.epochs=-1", "train.epochs: expected at least 1, got -1"),
    ("train.global_batch_size=0", "train.global_batch_size: expected at least 1, got 0"),
    ("train.warmup_epochs=-0.5", "train.warmup_epochs: expected at least 0, got -0.5")])
def test_out_of_range_binding_names_it_and_creates_no_model_dir(tmp_path, shards, capsys,
                                                               binding, expected):
    model_dir = tmp_path / "run"
    code = train_lib.main(cli(tmp_path, shards, model_dir, binding))
    assert code == 1
    assert one_line(capsys.readouterr().err) == f"video_ssl.train: error: {expected}"
    assert not model_dir.exists()


def test_wrong_type_binding_names_it_and_creates_no_model_dir(tmp_path, shards, capsys):
    model_dir = tmp_path / "run"
    code = train_lib.main(cli(tmp_path, shards, model_dir, "train.epochs='x'"))
    assert code == 1
    assert one_line(capsys.readouterr().err) == (
        "video_ssl.train: error: train.epochs: expected an int, got 'x'")
    assert not model_dir.exists()


@pytest.mark.parametrize("param, message", [
    ("train.epochz=3", "--gin_param=train.epochz=3: Configurable 'train' doesn't have a "
                       "parameter named 'epochz'"),
    ("train.epochs='x", "--gin_param=train.epochs='x: Unable to parse value"),
    ("train.epochs=[1", "--gin_param=train.epochs=[1: unterminated bracket or string"),
    ("Nothing.at_all=1", "--gin_param=Nothing.at_all=1: No configurable matching 'Nothing'"),
])
def test_gin_parse_errors_name_the_binding(tmp_path, shards, capsys, param, message):
    model_dir = tmp_path / "run"
    assert train_lib.main(cli(tmp_path, shards, model_dir, "train.seed=1", param)) == 1
    assert one_line(capsys.readouterr().err) == f"video_ssl.train: error: {message}"
    assert not model_dir.exists()


def test_gin_file_errors_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.gin"
    bad.write_text("train.epochs = 2\ntrain.seed = 'x\n")
    assert train_lib.main(["--gin_file", str(bad), "--model_dir", str(tmp_path / "r")]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"video_ssl.train: error: {bad}, line 2: Unable to parse value in \"train.seed = 'x\"")


def test_verbose_or_environment_shows_the_traceback(tmp_path, shards, monkeypatch):
    argv = cli(tmp_path, shards, tmp_path / "run", "train.epochs='x'")
    with pytest.raises(ValueError, match="train.epochs: expected an int"):
        train_lib.main([*argv, "--verbose"])
    gin.clear_config()
    monkeypatch.setenv(console.TRACEBACK_VARIABLE, "1")
    with pytest.raises(ValueError, match="train.epochs: expected an int"):
        train_lib.main(argv)


def test_error_line():
    @tf.function
    def check(ok):
        tf.debugging.Assert(ok, [tf.constant("a.tfrecord: video x bad")])

    def failed_assert():  # as the input pipeline's checks fail: in a graph
        try:
            check(tf.constant(False))
        except tf.errors.InvalidArgumentError as error:
            return error
    assert console.error_line(failed_assert()) == "a.tfrecord: video x bad"
    assert console.error_line(TypeError("unsupported operand\nmore")) == (
        "TypeError: unsupported operand")
    assert console.error_line(ValueError("first\nsecond")) == "first"
    assert console.error_line(FileNotFoundError(2, "No such file", "/x/y")) == (
        "/x/y: No such file")


def test_error_line_gives_tensorflow_errors_cause_not_their_preamble():
    """TensorFlow opens some messages with "Graph execution error:" or "in user code:"
    and puts the cause last, after the graph's stack."""
    @tf.function
    def decode(data):
        return tf.io.decode_jpeg(data)

    @tf.function
    def mel(bins):
        return tf.signal.linear_to_mel_weight_matrix(bins, 257, 16000, 20.0, 9000.0)

    jpeg = tf.io.encode_jpeg(tf.zeros((16, 16, 3), tf.uint8)).numpy()
    damaged = jpeg[:200] + b"\0" * 50 + jpeg[250:len(jpeg) // 2]
    with pytest.raises(tf.errors.InvalidArgumentError) as decoding:
        decode(tf.constant(damaged))
    assert decoding.value.message.startswith("Graph execution error:")
    line = console.error_line(decoding.value)
    assert line.startswith("jpeg::Uncompress failed"), line
    with pytest.raises(ValueError) as converting:
        mel(80)
    assert str(converting.value).startswith("in user code:")
    line = console.error_line(converting.value)
    assert line.startswith("ValueError: upper_edge_hertz must not be larger than the Nyquist"), line


def test_check_types_names_the_binding():
    def configurable(a: int, b: float, c: str | None, d: list[str], e, f: bool = False):
        pass
    bindings.check_types(configurable, dict(a=1, b=2, c=None, d=["x"], e=object()), "fn")
    for name, value, expected in [("a", "x", "an int"), ("a", True, "an int"),
                                  ("a", 2.0, "an int"), ("b", "1", "a number"),
                                  ("c", 3, "a string or None"), ("d", "x", "a list of strings"),
                                  ("d", [1], "a list of strings"), ("f", 1, "True or False")]:
        with pytest.raises(ValueError) as error:
            bindings.check_types(configurable, {name: value}, "fn")
        assert str(error.value) == f"fn.{name}: expected {expected}, got {value!r}"


def test_train_verbose_is_checked(tmp_path, shards, capsys):
    assert train_lib.main(cli(tmp_path, shards, tmp_path / "run", "train.verbose='bars'")) == 1
    assert one_line(capsys.readouterr().err) == (
        "video_ssl.train: error: train.verbose: expected 'auto', 0, 1 or 2, got 'bars'")


HOLDER = textwrap.dedent("""
    import sys, time
    from video_ssl.training.run_lock import hold
    with hold(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


def start_holder(model_dir) -> subprocess.Popen:
    """Another process holding model_dir's lock."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(model_dir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_model_dir_lock_names_the_holder_and_is_freed_by_kill_9(tmp_path):
    model_dir = tmp_path / "run"
    holder = start_holder(model_dir)
    try:
        with pytest.raises(run_lock.ModelDirInUse) as error:
            with run_lock.hold(str(model_dir)):
                pass
        assert f"--model_dir={model_dir} is in use by another trainer (pid {holder.pid} " \
               "on host " in str(error.value)
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the lock does not
        holder.wait()
    assert (model_dir / run_lock.LOCK_FILE).exists()
    with run_lock.hold(str(model_dir)):
        written = json.loads((model_dir / run_lock.LOCK_FILE).read_text())
        assert written["pid"] == os.getpid()
    with run_lock.hold(str(model_dir)):  # released on leaving the block
        pass


def _run_cli(argv, **kwargs):
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "video_ssl.train", *argv], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO, **kwargs)


@pytest.mark.slow
def test_second_trainer_on_a_model_dir_stops_with_one_line(tmp_path, shards):
    """A real trainer against a model_dir another process holds: one quiet line on
    stderr (no TensorFlow banner), exit 1, the earlier run's files untouched."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "metrics.json").write_text('{"epochs": [], "final": {"step": 7}}')
    holder = start_holder(model_dir)
    try:
        result = _run_cli(cli(tmp_path, shards, model_dir))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr[-3000:]
    line = one_line(result.stderr)
    assert line.startswith(f"video_ssl.train: error: --model_dir={model_dir} is in use by "
                           f"another trainer (pid {holder.pid} on host ")
    assert (model_dir / "metrics.json").read_text() == '{"epochs": [], "final": {"step": 7}}'
    assert sorted(os.listdir(model_dir)) == ["metrics.json", run_lock.LOCK_FILE]


def _frameless_shard(path, count):
    """Records with labels and file names but no image/encoded feature list."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            example = tf.train.SequenceExample()
            example.context.feature[schema.LABEL_INDEX].int64_list.value.append(index % 2)
            example.context.feature[schema.FILENAME].bytes_list.value.append(
                f"video{index}.mp4".encode())
            example.feature_lists.feature_list["other"].feature.add()
            writer.write(example.SerializeToString())


@pytest.mark.slow
def test_data_error_in_the_graph_is_one_line(tmp_path, shards):
    """A shard without image/encoded: the pipeline's in-graph check, as one line naming
    the shard, the video and the key, with no traceback and no TensorFlow logs."""
    shard = tmp_path / "noframes-00000-of-00001.tfrecord"
    _frameless_shard(shard, 4)
    model_dir = tmp_path / "run"
    result = _run_cli(cli(tmp_path, shards, model_dir, f"train.train_files={str(shard)!r}"))
    assert result.returncode == 1, result.stderr[-3000:]
    line = one_line(result.stderr)
    assert line.startswith(f"video_ssl.train: error: {shard}: video video")
    assert line.endswith(f"has no feature list {schema.FRAMES} (needed for modality rgb)")
    assert checkpoint_steps(model_dir) == []


def _audio_shard(path, sample_rate):
    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(schema.make_sequence_example(
            [jpeg] * 4, filename="clip.mp4", waveform=np.zeros(1600, np.float32),
            sample_rate=sample_rate).SerializeToString())


def test_audio_sample_rate_is_checked_on_the_first_record(tmp_path):
    shard = tmp_path / "audio-00000-of-00001.tfrecord"
    _audio_shard(shard, 16000)
    views = {"clips": ViewSpec(), "audio": ViewSpec(modalities=("rgb", "audio"),
                                                    audio=AudioSpec(sample_rate=48000))}
    with pytest.raises(ValueError) as error:
        preflight.check_audio_sample_rate([str(shard)], views)
    assert str(error.value) == (
        f"{shard}: video clip.mp4 has audio at 16000 Hz ({schema.SAMPLE_RATE}), but view "
        "'audio' expects 48000 Hz (its AudioSpec.sample_rate); resample the audio or set "
        "the view's sample rate")
    views["audio"] = ViewSpec(modalities=("audio",), audio=AudioSpec(sample_rate=16000))
    preflight.check_audio_sample_rate([str(shard)], views)
    preflight.check_audio_sample_rate([str(shard)], {"clips": ViewSpec()})  # no audio asked


def test_unreadable_first_record_names_the_file(tmp_path):
    shard = tmp_path / "junk.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(b"\xff not a protocol buffer")
    views = {"audio": ViewSpec(modalities=("audio",))}
    with pytest.raises(ValueError, match=f"{shard}: the first record cannot be read as a "
                                         "SequenceExample"):
        preflight.check_audio_sample_rate([str(shard)], views)


def _damaged_shards(tmp_path, good_shard):
    """One shard of each damage kind, made from a good one (4 videos of 16 frames)."""
    data = open(good_shard, "rb").read()
    corrupted = bytearray(data)
    # Inside the first record's data (after its 8-byte length and 4-byte length CRC),
    # not in a header: its checksum fails.
    corrupted[12 + int.from_bytes(data[:8], "little") // 2] ^= 0xFF
    paths = {kind: tmp_path / f"{kind}-00000-of-00001.tfrecord"
             for kind in ("corrupted", "truncated", "protocol", "jpeg", "jpeg_body")}
    paths["corrupted"].write_bytes(bytes(corrupted))
    paths["truncated"].write_bytes(data[:-100])
    with tf.io.TFRecordWriter(str(paths["protocol"])) as writer:
        writer.write(b"\xff\xfe not a protocol buffer")
    jpeg = tf.io.encode_jpeg(np.zeros((32, 32, 3), np.uint8)).numpy()
    with tf.io.TFRecordWriter(str(paths["jpeg"])) as writer:
        writer.write(schema.make_sequence_example(
            [jpeg, b"\x89PNG\r\n", jpeg, jpeg] * 4, filename="v.mp4").SerializeToString())
    # Record 1's frames: a JPEG header, then its data stops (decoding fails, cropped too).
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    full = tf.io.encode_jpeg(noise).numpy()
    sos = full.index(b"\xff\xda")
    cut = full[:sos + 2 + int.from_bytes(full[sos + 2:sos + 4], "big") + 20]
    with tf.io.TFRecordWriter(str(paths["jpeg_body"])) as writer:
        for name, frame in (("ok.mp4", full), ("cut.mp4", cut)):
            writer.write(schema.make_sequence_example([full] + [frame] * 15,
                                                      filename=name).SerializeToString())
    return paths


JPEG_BODY = ": record 1 (video cut.mp4): frame 1 of image/encoded is a damaged JPEG (its " \
            "header reads, its data does not decode)"


def _pipeline_error(path) -> tf.errors.OpError:
    from video_ssl.data import pipeline
    dataset = pipeline.make_dataset(str(path), training=True, batch_size=1, num_frames=4,
                                    frame_stride=1, crop_size=32)
    with pytest.raises(tf.errors.OpError) as error:
        for _ in dataset.take(8):
            pass
    return error.value


def test_damaged_shards_are_named(tmp_path, shards):
    """TensorFlow's own messages name no file; the error line or the search after the
    failure does, with the record."""
    from video_ssl.data import reader
    good = sorted(tf.io.gfile.glob(shards))
    paths = _damaged_shards(tmp_path, good[0])
    every = [*good, *map(str, paths.values())]
    expected = {
        "corrupted": ": its checksum does not match (the file is damaged)",
        "truncated": ": the file ends inside it",
        "protocol": " is not a tf.train.SequenceExample",
        "jpeg_body": JPEG_BODY,
    }
    for kind, ending in expected.items():
        error = _pipeline_error(paths[kind])
        located = reader.locate_damaged_record(every, error.message)
        assert located.startswith(f"{paths[kind]}: record "), (kind, located)
        assert located.endswith(ending), (kind, located)
    assert reader.locate_damaged_record(every, "some other failure") is None
    line = console.error_line(_pipeline_error(paths["jpeg"]))
    assert line == f"{paths['jpeg']}: video v.mp4: frame 1 of image/encoded is not a JPEG"


def test_make_dataset_names_damaged_records_and_refuses_an_empty_input(tmp_path, shards):
    """Iterated from Python, make_dataset's errors name the file and record, as the
    CLIs' do; an input without records is an error, not zero batches."""
    from video_ssl.data import pipeline, reader
    paths = _damaged_shards(tmp_path, sorted(tf.io.gfile.glob(shards))[0])
    for kind, error_type, ending in [
            ("corrupted", tf.errors.DataLossError, ": its checksum does not match (the file "
                                                   "is damaged)"),
            ("jpeg_body", tf.errors.InvalidArgumentError, JPEG_BODY)]:
        dataset = pipeline.make_dataset(str(paths[kind]), training=False, batch_size=1,
                                        num_frames=4, frame_stride=1, crop_size=32)
        with pytest.raises(error_type) as error:
            list(dataset)
        assert error.value.message.startswith(f"{paths[kind]}: record "), kind
        assert error.value.message.endswith(ending), kind
    empty = tmp_path / "empty-00000-of-00001.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(reader.DataPathError) as error:
        pipeline.make_dataset(str(tmp_path / "empty-*"), training=True, batch_size=1)
    assert str(error.value) == (f"'{tmp_path}/empty-*': 1 file(s) ({empty}) hold no records; "
                                "expected at least one video")


@pytest.mark.slow
def test_damaged_shard_in_training_is_one_line(tmp_path, shards, capsys):
    """A record with a bad checksum, and one whose JPEG frames stop after their header."""
    paths = _damaged_shards(tmp_path, sorted(tf.io.gfile.glob(shards))[0])
    for kind, ending in [("corrupted", ": its checksum does not match (the file is damaged)"),
                         ("jpeg_body", JPEG_BODY)]:
        model_dir = tmp_path / f"run-{kind}"
        code = train_lib.main(cli(tmp_path, shards, model_dir, "train.steps_per_epoch=2",
                                  f"train.train_files={str(paths[kind])!r}"))
        assert code == 1
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"video_ssl.train: error: {paths[kind]}: record "), line
        assert line.endswith(ending), line


def test_empty_input_with_steps_per_epoch_is_one_line(tmp_path, shards, capsys):
    """train.steps_per_epoch bound: the input is not counted, but an empty one is still
    refused before anything is built, naming the files and what was needed."""
    empty = tmp_path / "empty-00000-of-00001.tfrecord"
    empty.write_bytes(b"")
    model_dir = tmp_path / "run"
    code = train_lib.main(cli(tmp_path, shards, model_dir, "train.steps_per_epoch=3",
                              f"train.train_files={str(empty)!r}"))
    assert code == 1
    assert one_line(capsys.readouterr().err) == (
        f"video_ssl.train: error: train.train_files='{empty}': 1 file(s) ({empty}) hold no "
        "records; train.steps_per_epoch=3 needs batches of train.global_batch_size=4 videos "
        "(the input repeats: at least one video)")
    assert not model_dir.exists()


@pytest.mark.skipif(bool(tf.config.list_logical_devices("GPU")), reason="float16 runs on GPUs")
def test_float16_on_the_cpu_is_one_line_before_training(tmp_path, shards, capsys):
    """Slow R-18's pool1 has no float16 CPU kernel (test_precision trains a backbone
    without 3D pooling in float16 on the CPU)."""
    model_dir = tmp_path / "run"
    code = train_lib.main(cli(tmp_path, shards, model_dir, "train.precision='mixed_float16'"))
    assert code == 1
    assert one_line(capsys.readouterr().err) == (
        "video_ssl.train: error: train.precision='mixed_float16': TensorFlow has no float16 "
        "kernel for 3D max pooling on the CPU (layer pool1) and this run has no GPU; use "
        "train.precision='mixed_bfloat16' or 'float32' on the CPU")
    assert not model_dir.exists()


def test_audio_spec_past_nyquist_names_the_bindings():
    """Checked when gin builds it, not as TensorFlow's 'in user code:' at the first batch."""
    from video_ssl.data import input_spec  # noqa: F401  (registers AudioSpec)
    gin.parse_config("AudioSpec.sample_rate = 16000.0\nAudioSpec.upper_edge_hertz = 9000.0")
    with pytest.raises(ValueError) as error:
        gin.get_configurable("AudioSpec")()
    assert console.error_line(error.value) == (
        "AudioSpec.lower_edge_hertz=80, AudioSpec.upper_edge_hertz=9000: expected 0 <= lower "
        "< upper <= 8000 Hz, the Nyquist frequency of AudioSpec.sample_rate=16000")
    AudioSpec(sample_rate=16000.0, upper_edge_hertz=8000.0)  # Nyquist itself is fine
    with pytest.raises(ValueError, match=r"AudioSpec\.frame_step=0: expected > 0"):
        AudioSpec(frame_step=0)


def test_audio_asked_of_a_shard_without_audio_names_shard_and_key(shards):
    from video_ssl.data import pipeline
    dataset = pipeline.make_dataset(shards, training=False, batch_size=1, num_frames=4,
                                    frame_stride=2, crop_size=32, modalities=("rgb", "audio"))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        next(iter(dataset))
    line = console.error_line(error.value)
    assert line.startswith(os.path.dirname(shards) + "/train-0000"), line
    assert line.endswith(f"has no feature list {schema.WAVEFORM} (needed for modality audio)")


@pytest.mark.slow
def test_damaged_shard_in_evaluation_is_one_line(tmp_path, shards, capsys):
    """A linear probe whose test split has a record with a bad checksum, or one whose
    JPEG frames stop after their header."""
    from video_ssl import evaluate as evaluate_lib
    model_dir = tmp_path / "run"
    assert train_lib.main(cli(tmp_path, shards, model_dir, "train.epochs=1",
                              "train.steps_per_epoch=1")) == 0
    capsys.readouterr()
    paths = _damaged_shards(tmp_path, sorted(tf.io.gfile.glob(shards))[0])
    for kind, ending in [("corrupted", ": its checksum does not match (the file is damaged)"),
                         ("jpeg_body", JPEG_BODY)]:
        overlay = eval_overlay(tmp_path, {"train": shards, "test": str(paths[kind])})
        code = evaluate_lib.main([
            f"--gin_file={os.path.join(EVAL_CONFIGS, 'linear_ucf101.gin')}",
            f"--gin_file={overlay}", f"--checkpoint={model_dir}",
            f"--output_dir={tmp_path / kind}"])
        assert code == 1
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"video_ssl.evaluate: error: {paths[kind]}: record "), line
        assert line.endswith(ending), line


@pytest.mark.slow
def test_only_the_chief_locks_the_model_dir(tmp_path, shards, monkeypatch):
    """A non-chief worker of a multi-worker run trains in the model_dir that its chief
    (here: another process) holds, and leaves nothing there."""
    model_dir = tmp_path / "run"
    holder = start_holder(model_dir)
    monkeypatch.setattr(runner, "is_chief", lambda strategy: False)
    try:
        code = train_lib.main(cli(tmp_path, shards, model_dir, "train.epochs=1"))
    finally:
        holder.kill()
        holder.wait()
    assert code == 0
    assert sorted(os.listdir(model_dir)) == [run_lock.LOCK_FILE]


def test_import_checkpoint_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    from video_ssl import import_checkpoint
    text = tmp_path / "notes.pyth"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    output = tmp_path / "run"
    for fmt, path, expected in (
            ("pyslowfast", tmp_path / "missing.pyth", "missing.pyth: no such file"),
            ("pyslowfast", text, "notes.pyth: not a file torch.save wrote"),
            ("coclr", text, "notes.pyth: not a file torch.save wrote"),
            ("brave", empty, "empty.npy")):
        code = import_checkpoint.main([f"--format={fmt}", f"--input={path}",
                                       f"--output={output}"])
        line = one_line(capsys.readouterr().err)
        assert code == 1 and line.startswith("video_ssl.import_checkpoint: error: "), line
        assert expected in line, line
        assert not output.exists() and not (tmp_path / "run.tmp").exists()
