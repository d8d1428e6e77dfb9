"""The method contract, checked for every method there is (found, not listed): each
concrete `Method` subclass is built from a gin recipe that trains it (under demo.gin and
a tiny overlay), declares views and encoders that fit each other, runs one step of the
project's training loop on real shards, writes an `input_spec.json` that reads back to
the same views and encoders, and exports every encoder as a SavedModel that reloads and
gives the encoder's features. A new method needs no test code of its own here: a module
in video_ssl/methods/ and a gin file binding `train.method = @ItsName`."""
import functools
import glob
import json
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from gin_query import bound
import video_ssl.train  # noqa: F401  (registers train, which the recipes bind)
from video_ssl import config as config_lib
from video_ssl.data import demo, input_spec, modalities
from video_ssl.data.views import ViewSpec
from video_ssl.methods.base import (INPUT_SPEC_FILE, Encoder, Method, all_concrete_methods,
                                    read_input_spec)
from video_ssl.training import loop, runner, stages as stages_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "gin_configs")
# After demo.gin: narrower networks, smaller heads and queues, 32^2 clips; CoCLR steps
# before its queue is full (its recipe waits, coclr_common.gin), so one step trains.
TINY = ["BACKBONE_KWARGS = {'width_multiplier': 0.125}", "train_input.crop_size = 32",
        "NARROW_CROP = 32", "HEAD_HIDDEN_DIM = 16", "EMBEDDING_DIM = 8", "QUEUE_SIZE = 16",
        "NUM_PROTOTYPES = 8", "AUDIO_SECONDS = 1.0",
        "cotraining/QueueNCE.wait_for_full_queue = False"]
BATCH = 2

config_lib.register_configurables()
METHODS = sorted(cls.__name__ for cls in all_concrete_methods())


@functools.lru_cache(maxsize=None)
def recipes() -> dict[str, tuple[str, str | None]]:
    """Method name -> (gin recipe, stage scope or None) of a recipe that trains it, alone
    or as a stage of its schedule: the shortest file name first (moco_rho1.gin, the
    cheapest ρ, before moco_aug_plus.gin), then name order."""
    found = {}
    for path in sorted(glob.glob(os.path.join(CONFIGS, "*.gin")),
                       key=lambda p: (len(os.path.basename(p)), p)):
        if path.endswith(("_base.gin", "_common.gin")):  # included by recipes
            continue
        gin.clear_config()
        try:
            config_lib.parse_gin([path], [])
            stages = [name for name, _ in gin.query_parameter("run_schedule.stages")] \
                if stages_lib.scheduled() else [None]
            for scope in stages:
                key = f"{scope}/train.method" if scope else "train.method"
                found.setdefault(gin.query_parameter(key).selector, (path, scope))
        except ValueError:  # a base file: no recipe on its own
            continue
        finally:
            gin.clear_config()
    return found


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Tiny demo shards: RGB, exact flow and 8 kHz audio."""
    root = tmp_path_factory.mktemp("demo")
    return demo.build(root, num_workers=1, num_train=4, num_test=1, num_frames=20)["train"]


def test_every_method_is_found_and_at_most_three_below_keras_model():
    assert {"MoCo", "BYOL", "SimCLR", "SwAV", "InfoNCE", "UberNCE", "CoCLR",
            "BraVe"} <= set(METHODS)
    for cls in all_concrete_methods():  # method -> family base -> Method -> keras.Model
        assert cls.__mro__.index(keras.Model) <= 3, [c.__name__ for c in cls.__mro__]


@pytest.mark.parametrize("name", METHODS)
def test_method_keeps_the_contract(name, shards, tmp_path):
    assert name in recipes(), f"no gin file in gin_configs/ trains {name}"
    path, scope = recipes()[name]
    gin.clear_config()
    config_lib.parse_gin([path, os.path.join(CONFIGS, "demo.gin")], TINY)
    try:
        with gin.config_scope(scope):
            method = config_lib.method_configurable(name)()
            _check_declaration(method)
            optimizer = bound("train.optimizer").scoped_configurable_fn(
                global_batch_size=BATCH, total_steps=1, warmup_steps=0, steps_per_epoch=1)
            dataset = runner.view_dataset([shards], method.views, global_batch_size=BATCH,
                                             seed=0)
    finally:
        gin.clear_config()
    method.compile(optimizer=optimizer)
    method.optimizer.build(method.trainable_variables)
    method.configure(total_steps=1, steps_per_epoch=1)
    before = [v.numpy().copy() for v in method.trainable_variables]
    # The loop's code path without tracing its graph (the methods' own tests compile
    # their steps, with and without XLA): seconds per method instead of tens.
    tf.config.run_functions_eagerly(True)
    try:
        history = loop.fit(method, dataset, [], strategy=tf.distribute.get_strategy(),
                           start_step=0, epochs=1, steps_per_epoch=1, verbose=0)
    finally:
        tf.config.run_functions_eagerly(False)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, v.numpy()) for b, v in
               zip(before, method.trainable_variables)), "one step changed no weight"

    (tmp_path / INPUT_SPEC_FILE).write_text(json.dumps(method.input_spec(), indent=1))
    spec = read_input_spec(str(tmp_path))  # as evaluation, export and init_checkpoints do
    assert spec["method"] == name and spec["primary_encoder"] == list(method.encoders)[0]
    assert {n: input_spec.view_from_json(v) for n, v in spec["views"].items()} == method.views
    assert {n: Encoder(**e) for n, e in spec["encoders"].items()} == method.encoders

    batch = next(iter(dataset))
    runner.export_encoders(method, str(tmp_path / "export"))
    for encoder_name, encoder in method.encoders.items():
        folder = tmp_path / "export" / (encoder_name if encoder_name != method.primary_encoder
                                        else "")
        clip = tf.convert_to_tensor(batch["views"][encoder.view][encoder.modality])[:1, 0]
        served = tf.saved_model.load(str(folder))  # kept: its variables live with it
        served = served.serve(clip)["features"]
        expected = method.encoder_model(encoder_name)(clip, training=False)
        np.testing.assert_allclose(served.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=encoder_name)


def _check_declaration(method: Method) -> None:
    """Views are ViewSpecs; every encoder is a Keras model reading its view's modality."""
    assert method.views and all(isinstance(v, ViewSpec) for v in method.views.values())
    assert method.encoders and method.primary_encoder == next(iter(method.encoders))
    for name, encoder in method.encoders.items():
        assert encoder.view in method.views, name
        assert encoder.modality in method.views[encoder.view].modalities, name
        model = method.encoder_model(name)
        assert isinstance(model, keras.Model) and len(model.output_shape) == 2, name
        assert model.input_shape[-1] == modalities.channels(encoder.modality), name
