"""Tiny ρ-family methods on random clips, for the tests of the methods and their layer."""
import keras
import tensorflow as tf

from video_ssl import optim
from video_ssl.methods.byol import BYOL
from video_ssl.methods.moco import MoCo
from video_ssl.methods.rho import rho_views
from video_ssl.methods.simclr import SimCLR
from video_ssl.methods.swav import SwAV

BATCH, FRAMES, SIZE, TOTAL_STEPS = 4, 4, 32, 10
SMALL = dict(hidden_dim=16, embedding_dim=8)
METHODS = {
    "moco": lambda **kw: MoCo(**{"queue_size": 64, **SMALL, **kw}),
    "byol": lambda **kw: BYOL(**SMALL, **kw),
    "simclr": lambda **kw: SimCLR(**SMALL, **kw),
    "swav": lambda **kw: SwAV(num_prototypes=10, freeze_prototypes_steps=1, **SMALL, **kw),
}


def tiny_backbone(synchronized_bn: bool = False) -> keras.Model:
    """Same contract as the registry backbones, (B, T, H, W, 3) -> (B, D), but tiny."""
    inputs = keras.Input((FRAMES, SIZE, SIZE, 3))
    x = keras.layers.Conv3D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(synchronized=synchronized_bn)(x)
    x = keras.layers.GlobalAveragePooling3D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, x)


def make_method(name, rho, strategy=None, eager=False, **kwargs):
    """A tiny method; `eager` skips graph tracing, which dominates the cost at this size."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        method = METHODS[name](views=rho_views(rho),
                               backbone=tiny_backbone(name in ("byol", "simclr", "swav")),
                               total_steps=TOTAL_STEPS, **kwargs)
        method.compile(optimizer=optim.build_optimizer(
            "sgd" if name == "moco" else "lars", base_learning_rate=0.4,
            global_batch_size=BATCH, total_steps=TOTAL_STEPS, weight_decay=1e-4),
            jit_compile=False, run_eagerly=eager)
    return method


def make_batch(num_clips, seed=0):
    rgb = tf.random.stateless_normal((BATCH, num_clips, FRAMES, SIZE, SIZE, 3), seed=[seed, 1])
    return {"views": {"clips": {"rgb": rgb}}, "label": tf.zeros((BATCH,), tf.int32)}


def fit_one_step(method, batch):
    history = method.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1,
                         steps_per_epoch=1, verbose=0, shuffle=False)
    return history.history["loss"][0]
