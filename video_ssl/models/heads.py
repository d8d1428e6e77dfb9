"""MLP heads and SwAV prototypes used by the self-supervised methods.

BatchNorm here follows the PyTorch references (momentum 0.1 == Keras 0.9, eps 1e-5).
"""
from __future__ import annotations

import keras
import tensorflow as tf


def mlp_head(input_dim: int, *, hidden_dim: int = 2048, output_dim: int = 128,
             num_layers: int = 3, batch_norm: bool = True, synchronized_bn: bool = False,
             output_batch_norm: bool = False, name: str = "projector") -> keras.Sequential:
    """`num_layers` linear layers; every hidden one is Linear -> [BN] -> ReLU (no bias
    when followed by BN), the last is Linear with bias, or Linear -> BN (no bias) when
    `output_batch_norm`.

    SimCLR/SwAV projector: 3 layers, 2048 hidden, 128 out, BN. MoCo: the same without BN.
    BYOL projector/predictor: 2 layers, 4096 hidden, 256 out, BN. BraVe: 2 layers,
    4096 hidden, 128 out, BN, and BN on the projector's output.
    """
    if num_layers < 1:
        raise ValueError(f"mlp_head {name!r}: num_layers must be >= 1, got {num_layers}")
    layers = [keras.Input((input_dim,))]
    for index in range(num_layers - 1):
        layers.append(keras.layers.Dense(hidden_dim, use_bias=not batch_norm,
                                         name=f"{name}_linear{index}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, synchronized=synchronized_bn,
                name=f"{name}_bn{index}"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu{index}"))
    layers.append(keras.layers.Dense(output_dim, use_bias=not output_batch_norm,
                                     name=f"{name}_linear{num_layers - 1}"))
    if output_batch_norm:
        layers.append(keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, synchronized=synchronized_bn, name=f"{name}_bn_out"))
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="video_ssl")
class Prototypes(keras.layers.Layer):
    """SwAV prototypes: scores `z @ C^T` of (already normalized) embeddings against
    `num_prototypes` learned vectors C (no bias).

    The method calls `normalize()` before each step so the rows of C are unit vectors
    when used (as the reference does, in place, rather than normalizing inside `call`,
    which would change the gradient).
    """

    def __init__(self, num_prototypes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.num_prototypes = num_prototypes

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.num_prototypes, input_shape[-1]), name="kernel",
            initializer=keras.initializers.RandomUniform(-1.0, 1.0),
            # normalize() assigns inside the replicated step; all replicas agree.
            aggregation="only_first_replica")
        self.normalize()

    def normalize(self):
        """Rescales every prototype to unit length in place."""
        self.kernel.assign(tf.math.l2_normalize(self.kernel, axis=1))

    def call(self, embeddings):
        return tf.matmul(embeddings, self.kernel, transpose_b=True)

    def get_config(self):
        return {**super().get_config(), "num_prototypes": self.num_prototypes}
