"""PNG figures of evaluation results, drawn with PIL: a confusion matrix and a sheet of
retrieval queries with their nearest train videos."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from video_ssl.data.contact_sheet import tile

MARGIN = 28  # pixels around the matrix for class indices and the axis name
TITLE = 18  # pixels above the top margin for the title
HIT, MISS, QUERY = (40, 180, 60), (210, 50, 40), (230, 230, 230)
BORDER = 3


def save_confusion_png(path: str, confusion: np.ndarray, title: str) -> tuple[int, int]:
    """Row-normalized confusion matrix (rows: true class, columns: predicted), dark
    cells for high rates, as a PNG; returns its (width, height)."""
    confusion = np.asarray(confusion, np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or not len(confusion):
        raise ValueError(f"confusion matrix: expected a square (classes, classes) array, "
                         f"got shape {confusion.shape}")
    classes = len(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    cell = int(np.clip(480 // classes, 2, 32))
    # White (rate 0) to dark blue (rate 1).
    colour = np.stack([255 * (1 - rates), 255 * (1 - 0.85 * rates), 255 * (1 - 0.45 * rates)],
                      axis=-1)
    cells = np.kron(colour, np.ones((cell, cell, 1))).astype(np.uint8)
    size = classes * cell
    top = TITLE + MARGIN
    image = Image.new("RGB", (size + 2 * MARGIN, top + size + MARGIN), "white")
    image.paste(Image.fromarray(cells), (MARGIN, top))
    draw = ImageDraw.Draw(image)
    draw.rectangle([MARGIN - 1, top - 1, MARGIN + size, top + size], outline="black")
    draw.text((4, 4), title, fill="black")
    draw.text((MARGIN, top + size + 6), "predicted class ->  (rows: true class)",
              fill="black")
    if cell >= 14:  # room for class indices
        for index in range(classes):
            centre = index * cell + cell // 2 - 3
            draw.text((MARGIN + centre, top - 14), str(index), fill="black")
            draw.text((8, top + centre - 2), str(index), fill="black")
    image.save(path, format="PNG")
    return image.size


def _framed(frame: np.ndarray, colour, text: str) -> np.ndarray:
    """The frame inside a coloured border, `text` in its top-left corner."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=colour, width=BORDER)
    draw.rectangle([BORDER, BORDER, BORDER + 6 * len(text) + 4, BORDER + 12], fill=(0, 0, 0))
    draw.text((BORDER + 2, BORDER), text, fill=(255, 255, 255))
    return np.asarray(image)


def save_retrieval_png(path: str, examples: Sequence[dict], query_frames: dict,
                       gallery_frames: dict) -> tuple[int, int]:
    """One row per example query: its first frame, then its nearest train videos'
    first frames, framed green when the class matches, red when not; returns the
    PNG's (width, height). examples: `Result.neighbours` entries; *_frames: {index:
    (H, W, 3) uint8} as from `EvalData.first_frames`."""
    rows = []
    for example in examples:
        row = [_framed(query_frames[example["query"]], QUERY, f"q {example['label']}")]
        for rank, (index, label) in enumerate(zip(example["neighbours"],
                                                  example["neighbour_labels"]), 1):
            colour = HIT if label == example["label"] else MISS
            row.append(_framed(gallery_frames[index], colour, f"{rank}: {label}"))
        rows.append(np.stack(row))
    image = Image.fromarray(tile(rows))
    image.save(path, format="PNG")
    return image.size
