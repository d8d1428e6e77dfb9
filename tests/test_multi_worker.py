"""Multi-worker training for real: worker processes on 127.0.0.1 started by
`video_ssl.launch` (TF_CONFIG, MultiWorkerMirroredStrategy), the loss they agree on
against one process over the same global batch, the chief-only outputs, a killed
worker and the resume; TF_CONFIG checks and the connect timeout."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import CONFIGS, REPO, checkpoint_steps
from video_ssl import config as config_lib, distribute, optim, train as train_lib
from video_ssl.data.reader import count_records, match_files
from video_ssl.methods.base import training_view
from video_ssl.training import launcher, runner

CHIEF_OUTPUTS = {"checkpoints", "export", "input_spec.json", "metrics.json",
                 "operative_config.gin", "tensorboard", "train.lock"}
GLOBAL_BATCH = 4


def overlay(tmp_path, shards, **bindings):
    """Any rho recipe made tiny (slow_r18/8 on 4x32x32 clips, global batch 4 = 2 per
    worker), one step per epoch, a checkpoint every step. (MoCo's runs add
    QUEUE_SIZE: a macro no binding of another recipe refers to is refused.)"""
    lines = {
        "train.train_files": repr(shards), "train.global_batch_size": GLOBAL_BATCH,
        "train.epochs": 2, "train.steps_per_epoch": 1, "train.warmup_epochs": 0,
        "train.checkpoint_every_steps": 1, "train.tensorboard_every_steps": 1,
        "BACKBONE": "'slow_r18'", "BACKBONE_KWARGS": "{'width_multiplier': 0.125}",
        "HEAD_HIDDEN_DIM": 16, "EMBEDDING_DIM": 8,
        "train_input.num_frames": 4, "train_input.frame_stride": 2,
        "train_input.crop_size": 32, **bindings}
    path = tmp_path / "tiny.gin"
    path.write_text("\n".join(f"{k} = {v}" for k, v in lines.items()) + "\n")
    return str(path)


def train_flags(recipe, gin_file, model_dir, *params):
    return [f"--gin_file={os.path.join(CONFIGS, recipe)}", f"--gin_file={gin_file}",
            *[f"--gin_param={p}" for p in params], f"--model_dir={model_dir}"]


def environment(tmp_path):
    """The workers' environment: the repo and tmp_path importable (gin `import`s), and
    a TMPDIR of their own, to show what the non-chief worker leaves behind."""
    worker_tmp = tmp_path / "worker_tmp"
    worker_tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
            "TMPDIR": str(worker_tmp)}, worker_tmp


def worker_folders(worker_tmp):
    """The non-chief workers' temporary output folders (autograph writes there too)."""
    return [name for name in os.listdir(worker_tmp) if name.startswith("video_ssl-worker-")]


def launch_command(flags, num_workers=2):
    return [sys.executable, "-m", "video_ssl.launch", f"--num_workers={num_workers}",
            "--grace_s=2", "--", *flags]


def worker_lines(stdout, index):
    prefix = f"[worker {index}] "
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


@pytest.mark.slow
def test_two_workers_train_simclr_as_one_process_does(tmp_path, shards, mirrored):
    """Both workers exit 0 and log the same loss; the chief alone writes model_dir; the
    loss of step 2 equals one process's MirroredStrategy step over the same global
    batch (each worker's half, from the input context of its worker index) from the
    chief's step-1 checkpoint. SyncBN (the recipe's) spans the two replicas both ways."""
    model_dir = tmp_path / "run"
    gin_file = overlay(tmp_path, shards)
    flags = train_flags("simclr_rho2.gin", gin_file, model_dir)
    env, worker_tmp = environment(tmp_path)
    result = subprocess.run(launch_command(flags), env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = []
    for index in (0, 1):
        lines = worker_lines(result.stdout, index)
        assert "Epoch 2/2" in lines, lines
        losses.append([float(m) for m in re.findall(r" - loss: ([0-9.]+)", "\n".join(lines))])
    assert len(losses[0]) == 2 and losses[0] == losses[1]  # averaged over the workers
    assert set(os.listdir(model_dir)) == CHIEF_OUTPUTS
    assert checkpoint_steps(model_dir) == [1, 2]
    assert (model_dir / "export" / "saved_model.pb").exists()
    assert worker_folders(worker_tmp) == []  # the non-chief's folder is gone
    logged = json.loads((model_dir / "metrics.json").read_text())["epochs"][1]["loss"]

    # One process, two replicas (the session's two logical CPUs), the same data.
    config_lib.parse_gin([os.path.join(CONFIGS, "simclr_rho2.gin"), gin_file], [])
    with mirrored.scope():
        method = config_lib.method_configurable("SimCLR")()
        method.compile(optimizer=optim.build_optimizer(
            global_batch_size=GLOBAL_BATCH, total_steps=2, warmup_steps=0, steps_per_epoch=1))
        method.optimizer.build(method.trainable_variables)
    checkpoint = os.path.join(model_dir, "checkpoints", "ckpt-1")
    tf.train.Checkpoint(model=method).restore(checkpoint).assert_existing_objects_matched()
    keras.utils.set_random_seed(0)  # train.seed: tf.data's seeds pair with the global one
    halves = []
    for worker in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        batches = iter(runner.view_dataset(match_files(shards), method.views,
                                              global_batch_size=GLOBAL_BATCH, seed=0,
                                              input_context=context))
        next(batches)  # step 1's
        halves.append(next(batches))
    data = mirrored.experimental_distribute_values_from_function(
        lambda context: halves[context.replica_id_in_sync_group])
    step = tf.function(lambda d: mirrored.run(method.train_step, args=(d,)), autograph=False)
    loss = float(mirrored.reduce("MEAN", step(data)["loss"], axis=None))
    np.testing.assert_allclose(logged, loss, rtol=1e-5)


# Imported by a gin file: every step takes at least a second, so that a worker can be
# killed mid-run whatever the machine's speed.
THROTTLE = """
import time, gin, keras
@gin.configurable
class Throttle(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(1.0)
"""


@pytest.mark.slow
def test_killed_worker_stops_the_job_and_a_rerun_resumes(tmp_path, shards):
    """MoCo (shuffle-BN gathers across the workers, the queue takes both workers' keys):
    SIGKILL worker 1 once the chief has checkpointed; the launcher stops worker 0 and
    exits 128 + 9 naming the worker; the same command resumes both workers from the
    chief's newest checkpoint and finishes."""
    model_dir = tmp_path / "run"
    (tmp_path / "throttle.py").write_text(THROTTLE)
    gin_file = overlay(tmp_path, shards, **{"train.epochs": 4, "QUEUE_SIZE": 32})
    with open(gin_file, "a") as f:
        f.write("import throttle\ntrain.extra_callbacks = [@Throttle()]\n")
    command = launch_command(train_flags("moco_rho2.gin", gin_file, model_dir))
    env, worker_tmp = environment(tmp_path)

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    stdout, stderr = [], []
    readers = [threading.Thread(target=lines.extend, args=(pipe,), daemon=True)
               for lines, pipe in ((stdout, process.stdout), (stderr, process.stderr))]
    for reader in readers:
        reader.start()
    deadline = time.time() + 300
    while not checkpoint_steps(model_dir):
        assert process.poll() is None, "".join(stderr)[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    started = next(line for line in stderr if line.startswith("video_ssl.launch: started"))
    pids = re.search(r"\(pids (\d+), (\d+);", started).groups()
    os.kill(int(pids[1]), signal.SIGKILL)
    process.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=10)
    assert process.returncode == 128 + signal.SIGKILL, "".join(stdout + stderr)[-3000:]
    messages = [line for line in stderr if line.startswith("video_ssl.launch: ")]
    assert "video_ssl.launch: worker 1 was killed by SIGKILL; stopping the other worker\n" \
        in messages, messages
    assert messages[-1].startswith("video_ssl.launch: stopped: worker 1 was killed by "
                                   "SIGKILL (exit status 137); re-run the same command")
    killed_at = max(checkpoint_steps(model_dir))
    assert 1 <= killed_at < 4

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for index in (0, 1):
        assert any(line.startswith("Resuming from ") and line.endswith(
            f"ckpt-{killed_at} at step {killed_at} of 4")
            for line in worker_lines(rerun.stdout, index)), rerun.stdout[-3000:]
    assert max(checkpoint_steps(model_dir)) == 4
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["final"]["step"] == 4 and np.isfinite(metrics["final"]["loss"])
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert set(os.listdir(model_dir)) == CHIEF_OUTPUTS
    # The killed worker's folder stays in its TMPDIR (never in model_dir); the rerun's
    # non-chief removed its own.
    assert len(worker_folders(worker_tmp)) == 1


def test_a_worker_that_never_starts_is_named(tmp_path, shards, monkeypatch, capsys):
    """Worker 0 of a two-worker TF_CONFIG whose worker 1 never starts: one line naming
    worker 1 and its address after make_strategy.connect_timeout_s, exit 1, no model_dir
    (the workers meet before TensorFlow's strategy, which would wait forever)."""
    address = [f"127.0.0.1:{port}" for port in launcher.free_ports(2)]
    monkeypatch.setenv("TF_CONFIG", launcher.tf_config(address, 0))
    model_dir = tmp_path / "run"
    flags = train_flags("moco_rho2.gin", overlay(tmp_path, shards, QUEUE_SIZE=32), model_dir,
                        "train.strategy='multi_worker'", "make_strategy.connect_timeout_s=1")
    assert train_lib.main(flags) == 1
    line = capsys.readouterr().err.strip()
    assert line == ("video_ssl.train: error: train.strategy='multi_worker': worker 0 waited 1 s "
                    "(make_strategy.connect_timeout_s) for the cluster: no answer from worker 1 "
                    f"({address[1]}); start every task of TF_CONFIG, each with its own task "
                    "index"), line
    assert not model_dir.exists()


def test_workers_meet_before_the_strategy():
    """Three workers starting a second apart all get through; a task whose port is taken
    (the same index started twice) is one line."""
    addresses = [f"127.0.0.1:{port}" for port in launcher.free_ports(3)]
    results, servers = {}, []

    def worker(index):
        time.sleep(index)
        config = distribute.parse_tf_config(launcher.tf_config(addresses, index))
        distribute.wait_for_cluster(config, timeout_s=20)
        # TensorFlow's server then listens on the port (the others may still be waiting).
        servers.append(socket.create_server(("127.0.0.1", int(addresses[index][10:]))))
        results[index] = "met"
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {0: "met", 1: "met", 2: "met"}
    with pytest.raises(ValueError, match=r"worker 0 cannot listen on port \d+ of its "
                                         r"TF_CONFIG address 127.0.0.1:\d+ \(.*\); is another "
                                         r"task with the same index running\?"):
        distribute.wait_for_cluster(
            distribute.parse_tf_config(launcher.tf_config(addresses, 0)), timeout_s=1)
    for server in servers:
        server.close()


@pytest.mark.parametrize("text, message", [
    (None, "train.strategy='multi_worker' needs the TF_CONFIG environment variable"),
    ("{'cluster': 1}", "TF_CONFIG: not valid JSON (Expecting property name"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG: expected an object with 'cluster' and 'task'"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     "TF_CONFIG: cluster jobs ['ps']; expected 'worker' and/or 'chief'"),
    ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG: cluster['worker'] = ['a:1', 'b']; expected a non-empty list of 'host:port'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG: task {'type': 'worker', 'index': 2} names no task of the cluster "
     "{'worker': 2}"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG: task {'type': 'chief', 'index': 0} names no task"),
])
def test_malformed_tf_config_is_one_line(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        distribute.parse_tf_config(text)
    assert "\n" not in str(error.value)


def test_good_tf_config_and_the_trainer_refusing_a_bad_one(tmp_path, shards, monkeypatch,
                                                           capsys):
    config = distribute.parse_tf_config(launcher.tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1))
    assert config == {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                      "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["x:1"]}, "task": {}}')
    model_dir = tmp_path / "run"
    code = train_lib.main(train_flags("moco_rho2.gin", overlay(tmp_path, shards, QUEUE_SIZE=32),
                                      model_dir, "train.strategy='multi_worker'"))
    assert code == 1
    assert capsys.readouterr().err.startswith("video_ssl.train: error: TF_CONFIG: task {} "
                                              "names no task of the cluster")
    assert not model_dir.exists()


def test_launcher_flags_and_ports(capsys):
    for argv, message in ((["--num_workers=0", "--", "--model_dir=x"], "expected at least 1"),
                          (["--num_workers=2"], "no video_ssl.train flags")):
        with pytest.raises(SystemExit) as exit_:
            launcher.main(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    ports = launcher.free_ports(3)
    assert len(set(ports)) == 3
    assert launcher.exit_status(-signal.SIGKILL) == 137 and launcher.exit_status(3) == 3
    assert launcher.describe(-signal.SIGKILL) == "was killed by SIGKILL"


def _launch(argv, monkeypatch):
    """launcher.main(argv) in this process, its SIGTERM handler undone afterwards."""
    monkeypatch.setattr(launcher.signal, "signal", lambda *args: None)
    return launcher.main(argv)


def test_no_resume_advice_after_a_configuration_error(tmp_path, monkeypatch, capsys):
    """The real trainer, refusing its flags (no --model_dir) in both workers."""
    monkeypatch.chdir(REPO)
    code = _launch(["--num_workers=2", "--", f"--gin_file={tmp_path}/x.gin"], monkeypatch)
    assert code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: --model_dir" in err
    stopped = [line for line in err.splitlines() if "video_ssl.launch: stopped:" in line]
    assert len(stopped) == 1 and stopped[0].endswith("exited with status 2 (exit status 2)")
    assert "resume" not in err


def test_resume_advice_after_a_worker_was_killed(monkeypatch, capsys):
    monkeypatch.setattr(launcher, "train_command", lambda flags: [
        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    code = _launch(["--num_workers=1", "--", "--model_dir=x"], monkeypatch)
    assert code == 128 + signal.SIGKILL
    assert capsys.readouterr().err.splitlines()[-1] == (
        "video_ssl.launch: stopped: worker 0 was killed by SIGKILL (exit status 137); "
        "re-run the same command to resume from the chief's newest checkpoint")


def test_shards_on_another_file_system_go_through_gfile(shards):
    """Shards on a bucket are read through tf.io.gfile (globbing, counting, reading);
    TensorFlow's in-memory ram:// file system stands in for gs:// here. Worker 1's input
    pipeline reads its own shard."""
    for path in match_files(shards):
        tf.io.gfile.makedirs("ram://bucket/shards")
        tf.io.gfile.copy(path, "ram://bucket/shards/" + os.path.basename(path), overwrite=True)
    files = match_files("ram://bucket/shards/train-*.tfrecord", "train.train_files")
    assert [os.path.basename(f) for f in files] == [os.path.basename(f)
                                                     for f in match_files(shards)]
    assert count_records(files) == 8
    for key, value in {"num_frames": 4, "frame_stride": 2, "crop_size": 32}.items():
        gin.bind_parameter(f"train_input.{key}", value)
    views = {"clips": training_view(num_clips=2, modalities=("rgb",))}
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    batch = next(iter(runner.view_dataset(files, views, global_batch_size=4, seed=0,
                                             input_context=context)))
    assert batch["views"]["clips"]["rgb"].shape[:2] == (2, 2)  # 2 videos, 2 clips
    # The shards fixture: shard k holds videos k, k + 2, ...; class = index % 2.
    assert batch["label"].numpy().tolist() == [1, 1]


def test_a_lost_worker_is_named():
    """What a worker reports when another one dies mid-run (TensorFlow's message, as a
    two-worker run on this machine printed it when worker 1 was killed)."""
    message = (
        "Graph execution error:\n\nDetected at node StatefulPartitionedCall defined at (most "
        "recent call last):\n  File \"train.py\", line 1, in <module>\n\n"
        "{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
        "replica:0/task:0/device:CPU:0}} Collective ops is aborted by: Error reported from "
        "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs for an "
        "earlier error, or scheduler events (e.g. preemption, eviction) to debug further.\n"
        "The error could be from a previous operation. Restart your program to reset. "
        "[Op:CollectiveReduceV2] name: ")
    error = tf.errors.UnavailableError(None, None, message)
    assert distribute.lost_workers(error) == ("lost /job:worker/replica:0/task:1 (it stopped "
                                              "sending heartbeats)")
    aborted = tf.errors.AbortedError(None, None, "Graph execution error:\n\n{{function_node "
                                     "x}} Collective ops is aborted by: the leader went away "
                                     "[Op:CollectiveReduceV2]")
    assert distribute.lost_workers(aborted) == ("lost contact with the cluster (Collective ops "
                                                "is aborted by: the leader went away)")
    assert distribute.lost_workers(tf.errors.InvalidArgumentError(None, None, "bad")) is None
