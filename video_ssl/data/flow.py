"""Optical flow storage: (dx, dy) <-> 3-channel JPEG, the schema's layout.

Each flow frame is stored as one JPEG whose channels hold (dx, dy, 128), each scaled
from [-bound, bound] pixels to [0, 255]. CoCLR's released files put (128, dy, dx)
in RGB order instead: pass `channels=(2, 1)` to read those.
"""
from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """(H, W, 2) float pixels -> (H, W, 3) uint8 (dx, dy, 128), clipped to +-bound."""
    q = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    out = np.full(flow.shape[:2] + (3,), 128, np.uint8)
    out[..., :2] = np.round(q).astype(np.uint8)
    return out


def encode_flow_jpeg(flow: np.ndarray, bound: float, quality: int = 95) -> bytes:
    """(H, W, 2) float pixels -> JPEG bytes in the schema's layout."""
    rgb = quantize_flow(flow, bound)
    # Full-resolution chroma (4:4:4): the default 4:2:0 smears dx/dy across object edges.
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality),
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], params)
    if not ok:
        raise ValueError(f"could not JPEG-encode a flow frame of shape {flow.shape}")
    return buf.tobytes()


def dequantize_flow(rgb: tf.Tensor, bound: tf.Tensor, channels=(0, 1)) -> tf.Tensor:
    """(..., H, W, 3) uint8 -> (..., H, W, 2) float32 pixels in [-bound, bound]."""
    q = tf.gather(tf.cast(rgb, tf.float32), list(channels), axis=-1)
    return q * (2.0 * bound / 255.0) - bound
