"""Contact sheets: rows of frames (and optical flow, and a waveform strip) -> one PNG.

Used by `tfrecords_tools.inspect` to show one stored video, by pipeline previews to
show augmented clips, and for the nearest-neighbour sheets of evaluation and
extraction (`framed`, `captioned` cells). Pure numpy + PIL.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 2  # pixels between tiles and around the sheet
BACKGROUND = 32  # dark grey, so black frames stay visible
WAVEFORM_HEIGHT = 48
# Neighbour sheets: a query's frame, and a neighbour of the same class or not.
QUERY, HIT, MISS = (230, 230, 230), (40, 180, 60), (210, 50, 40)
BORDER = 3
CAPTION_LINE = 12  # pixels per caption line (PIL's default font)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 passes through; floats are read as [0, 1] and clipped."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(..., H, W, 2) flow (dx, dy) -> uint8 RGB: hue is direction, brightness is speed.

    max_magnitude defaults to the largest speed in `flow`, so faint motion stays visible.
    """
    flow = np.asarray(flow, np.float32)
    dx, dy = flow[..., 0], flow[..., 1]
    magnitude = np.hypot(dx, dy)
    scale = max_magnitude or float(magnitude.max()) or 1.0
    hsv = np.empty(flow.shape[:-1] + (3,), np.uint8)
    hsv[..., 0] = ((np.arctan2(dy, dx) + np.pi) * (90.0 / np.pi)).astype(np.uint8) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = np.round(np.clip(magnitude / scale, 0.0, 1.0) * 255).astype(np.uint8)
    flat = hsv.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_HSV2RGB).reshape(hsv.shape)


def waveform_strip(waveform: np.ndarray, width: int, height: int = WAVEFORM_HEIGHT) -> np.ndarray:
    """(S,) samples -> (height, width, 3) uint8 min/max envelope, scaled to its peak."""
    strip = np.full((height, width, 3), BACKGROUND, np.uint8)
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if not peak:
        return strip
    columns = np.array_split(waveform / peak, width)
    mid = (height - 1) / 2.0
    for x, samples in enumerate(columns):
        if samples.size:
            top = int(round(mid - samples.max() * mid))
            bottom = int(round(mid - samples.min() * mid))
            strip[top:bottom + 1, x] = (90, 200, 255)
    strip[int(round(mid)), :] = (110, 110, 110)
    return strip


def framed(frame: np.ndarray, colour, text: str = "") -> np.ndarray:
    """The (H, W, 3) uint8 frame inside a `colour` border, `text` (if any) in its
    top-left corner, white on black."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=colour, width=BORDER)
    if text:
        draw.rectangle([BORDER, BORDER, BORDER + 6 * len(text) + 4, BORDER + 12], fill=(0, 0, 0))
        draw.text((BORDER + 2, BORDER), text, fill=(255, 255, 255))
    return np.asarray(image)


def captioned(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """The (H, W, 3) uint8 frame over a dark strip of CAPTION_LINE pixels per line
    holding `lines`; a line too wide for the frame keeps its end ("...name.mp4")."""
    frame = np.asarray(frame, np.uint8)
    height, width = frame.shape[:2]
    image = Image.new("RGB", (width, height + CAPTION_LINE * len(lines)), (BACKGROUND,) * 3)
    image.paste(Image.fromarray(frame), (0, 0))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()  # about 10 px high
    for index, line in enumerate(lines):
        shown = line
        while len(shown) > 4 and draw.textlength(shown, font=font) > width - 4:
            shown = "..." + shown[4:]
        draw.text((2, height + index * CAPTION_LINE), shown, fill=(230, 230, 230), font=font)
    return np.asarray(image)


def tile(rows: Sequence[np.ndarray], waveform: np.ndarray | None = None) -> np.ndarray:
    """Rows of images -> one (H, W, 3) uint8 sheet.

    rows: each (N, h, w, 3) (any N, h, w; uint8, or floats in [0, 1]), drawn left to
    right, rows top to bottom, PAD pixels apart. waveform: drawn as a strip under
    them spanning the sheet's width.
    """
    rows = [to_uint8(r) for r in rows]
    if not rows or any(r.ndim != 4 or r.shape[-1] != 3 or not len(r) for r in rows):
        raise ValueError(f"tile: expected non-empty rows of (N, H, W, 3) images, got shapes "
                         f"{[np.shape(r) for r in rows]}")
    width = max(len(r) * (r.shape[2] + PAD) for r in rows) + PAD
    height = sum(r.shape[1] + PAD for r in rows) + PAD
    if waveform is not None:
        height += WAVEFORM_HEIGHT + PAD
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    y = PAD
    for row in rows:
        h, w = row.shape[1:3]
        for i, image in enumerate(row):
            x = PAD + i * (w + PAD)
            sheet[y:y + h, x:x + w] = image
        y += h + PAD
    if waveform is not None:
        sheet[y:y + WAVEFORM_HEIGHT, PAD:width - PAD] = waveform_strip(
            waveform, width - 2 * PAD, WAVEFORM_HEIGHT)
    return sheet


def save_contact_sheet(path: str, rows: Sequence[np.ndarray],
                       waveform: np.ndarray | None = None) -> tuple[int, int]:
    """Writes `tile(rows, waveform)` as a PNG; returns its (width, height)."""
    image = Image.fromarray(tile(rows, waveform))
    image.save(path, format="PNG")
    return image.size
