"""Dense optical flow between consecutive frames with OpenCV, encoded in the schema's layout.

A video of N frames gets N - 1 flow frames: flow frame t is the motion from frame t to
frame t + 1 (the reader gives the last frame the last flow frame, `decode.flow_indices`;
the demo data has N - 1 too). Values are (dx, dy) in pixels of the frames the flow was
computed on, positive dx when content moves right and positive dy when it moves down,
clipped to +-bound and stored by `flow.encode_flow_jpeg`.

Flow is computed on grayscale frames, as CoCLR's extraction. Algorithms:
- "tvl1": `cv2.optflow.DualTVL1OpticalFlow_create()` with OpenCV's defaults (CoCLR).
- "dis": DIS with `cv2.DISOPTICAL_FLOW_PRESET_MEDIUM`, ~300x faster than TV-L1 at
  128x128 (benchmarks/RESULTS.md).
- "farneback": `cv2.calcOpticalFlowFarneback` with the parameters of OpenCV's tutorial
  (it has no defaults).

No TensorFlow here: the flow tool's worker processes import only OpenCV, NumPy and
(through video_files) PyAV, so they start fast.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Iterable

import cv2
import numpy as np

from video_ssl.data import flow as flow_lib
from video_ssl.data import video_files

ALGORITHMS = ("tvl1", "dis", "farneback")
# The project's flow (CoCLR's): TV-L1 clipped at 20 px, on frames as stored. Used for
# runs that do not record theirs.
DEFAULT_SETTINGS = {"algorithm": "tvl1", "bound": 20.0, "short_side": 0}
SETTINGS_KEYS = tuple(DEFAULT_SETTINGS)
# pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags (OpenCV's tutorial).
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)

Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]


class FlowError(ValueError):
    """A video whose flow cannot be computed; the message says why (no file name: the
    caller knows where the frames came from)."""


def make_estimator(algorithm: str) -> Estimator:
    """The bare OpenCV call: (previous, next) grayscale uint8 (H, W), C-contiguous ->
    (H, W, 2) float32 flow in pixels."""
    if algorithm == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if algorithm == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda prev, nxt: dis.calc(prev, nxt, None)
    if algorithm == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, *FARNEBACK_PARAMS)
    raise ValueError(f"algorithm={algorithm!r}; expected one of {ALGORITHMS}")


def decode_gray(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W) uint8 luma (the JPEG's Y channel: BT.601, as RGB2GRAY)."""
    gray = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE) if jpeg else None
    if gray is None:
        raise FlowError(f"not a decodable image ({len(jpeg)} bytes)")
    return gray


def to_gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) gray uint8 -> C-contiguous (H, W) uint8 gray."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (
            frame.ndim == 3 and frame.shape[2] != 3):
        raise FlowError(f"frame of shape {frame.shape} and dtype {frame.dtype}; "
                        "expected uint8 (H, W, 3) RGB or (H, W) gray")
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return np.ascontiguousarray(gray)  # DIS rejects strided views


class VideoFlow:
    """Flow JPEGs for whole videos with one algorithm, bound and size.

    short_side > 0 first shrinks frames (INTER_AREA) so that their shorter side has that
    many pixels; frames already that small keep their size (never enlarged). Flow is
    then in pixels of the shrunk frames, as the reader expects (it reads flow values in
    pixels of the stored flow frames).

    Make one per process and reuse it: it holds the OpenCV algorithm object.
    """

    def __init__(self, algorithm: str, *, bound: float, short_side: int = 0,
                 jpeg_quality: int = flow_lib.JPEG_QUALITY):
        if not bound > 0:
            raise ValueError(f"bound={bound}; expected a positive number of pixels")
        if short_side < 0:
            raise ValueError(f"short_side={short_side}; expected >= 0 (0 keeps the size)")
        self.estimate = make_estimator(algorithm)
        self.bound = float(bound)
        self.short_side = int(short_side)
        self.jpeg_quality = int(jpeg_quality)

    def from_frames(self, frames: Iterable[np.ndarray]) -> list[bytes]:
        """N uint8 frames, RGB (H, W, 3) or gray (H, W), in order (any iterable, consumed
        once, so a decoder can stream them) -> N - 1 flow JPEGs. Raises FlowError."""
        flows, previous, first_shape = [], None, None
        count = 0
        for count, frame in enumerate(frames, 1):
            gray = to_gray(frame)
            if first_shape is None:
                first_shape = gray.shape
            elif gray.shape != first_shape:
                raise FlowError(f"frame {count - 1} is {gray.shape[0]}x{gray.shape[1]} but "
                                f"frame 0 is {first_shape[0]}x{first_shape[1]}")
            gray = self._shrink(gray)
            if previous is not None:
                try:
                    field = self.estimate(previous, gray)
                except cv2.error as e:
                    raise FlowError(f"frames {count - 2}-{count - 1}: OpenCV failed: "
                                    f"{str(e).strip().splitlines()[-1]}") from None
                flows.append(flow_lib.encode_flow_jpeg(field, self.bound, self.jpeg_quality))
            previous = gray
        if count < 2:
            raise FlowError(f"{count} frame(s); flow needs at least 2")
        return flows

    def from_jpegs(self, jpegs: Iterable[bytes]) -> list[bytes]:
        """N encoded frames -> N - 1 flow JPEGs; each frame is decoded once, to gray."""
        def decoded():
            for t, jpeg in enumerate(jpegs):
                try:
                    yield decode_gray(jpeg)
                except FlowError as e:
                    raise FlowError(f"frame {t}: {e}") from None
        return self.from_frames(decoded())

    def _shrink(self, gray: np.ndarray) -> np.ndarray:
        if not 0 < self.short_side < min(gray.shape):
            return gray
        height, width = video_files.resized_shape(*gray.shape, self.short_side)
        return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)


def shard_settings(files: list[str]) -> dict | None:
    """The flow settings (`SETTINGS_KEYS`) in the manifest `PREFIX.flow.json` that
    `compute_flow` wrote beside shards `PREFIX-NNNNN-of-NNNNN.tfrecord`; None when
    there is none (the shards have no flow, or it was computed elsewhere)."""
    manifests = {re.sub(r"-\d{5,}-of-\d{5,}\.tfrecord$", "", path) + ".flow.json"
                 for path in files}
    found = []
    for path in sorted(manifests):
        if os.path.exists(path):
            with open(path) as f:
                manifest = json.load(f)
            found.append({k: manifest.get(k) for k in SETTINGS_KEYS})
    # Shards of several flows record none of them.
    return found[0] if found and all(f == found[0] for f in found) else None
