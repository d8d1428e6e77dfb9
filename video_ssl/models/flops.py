"""Multiply-add counter: `count_flops(model, input_shape)`.

The model's forward pass (inference mode) is traced once into a TensorFlow graph for the
given input shape; every convolution and matrix product in that graph then contributes
its multiply-adds, computed from its static output and kernel shapes:

- Conv2D / Conv3D (grouped too): output elements × kernel volume × input channels per group;
- DepthwiseConv2dNative: output elements × kernel area;
- MatMul / BatchMatMul: output elements × contracted dimension.

Not counted (as in the papers' "FLOPs", which are multiply-adds of convs and FC layers):
BatchNorm, activations, pooling, residual additions, bias additions, the temporal shift
and gating multiplications. Reading the traced graph rather than the Keras layer list
means custom layers and nested models are counted without special cases.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

_CONVOLUTIONS = ("Conv2D", "Conv3D")
_MATMULS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def _static_shape(tensor, op) -> list[int]:
    shape = tensor.shape
    if shape.rank is None or None in shape.as_list():
        raise ValueError(f"count_flops: op {op.name!r} ({op.type}) has a dynamic shape "
                         f"{shape}; expected a fully defined input_shape")
    return shape.as_list()


def _op_macs(op) -> int:
    if op.type in _CONVOLUTIONS:
        kernel = _static_shape(op.inputs[1], op)  # [*spatial, in_channels / groups, out]
        return math.prod(_static_shape(op.outputs[0], op)) * math.prod(kernel[:-1])
    if op.type == "DepthwiseConv2dNative":
        kernel = _static_shape(op.inputs[1], op)  # [kh, kw, in, multiplier]
        return math.prod(_static_shape(op.outputs[0], op)) * kernel[0] * kernel[1]
    if op.type in _MATMULS:
        left = _static_shape(op.inputs[0], op)
        transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        contracted = left[-2] if transposed else left[-1]
        return math.prod(_static_shape(op.outputs[0], op)) * contracted
    return 0


def count_flops(model: keras.Model, input_shape) -> int:
    """Multiply-adds of one forward pass of `model` on a float32 input of `input_shape`
    (batch dimension included, e.g. (1, 8, 224, 224, 3))."""
    shape = tuple(input_shape)
    if any(not isinstance(size, int) or size < 1 for size in shape):
        raise ValueError(f"count_flops: input_shape {shape}: expected positive integers, "
                         "batch dimension included")
    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return sum(_op_macs(op) for op in graph.get_operations())
