"""PNG figures of evaluation results, drawn with PIL: a confusion matrix (labeled with
the class names) and a sheet of retrieval queries with their nearest train videos
(first frames, or log-mel pictures for audio)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from video_ssl.data.contact_sheet import HIT, MISS, QUERY, framed, tile

# Confusion matrix layout (pixels).
MATRIX_SIDE = 560  # the matrix's side for a few classes; cells shrink to fit many
MIN_LABELED_CELL = 12  # smaller cells get no class labels (the text would not fit)
MIN_WIDTH = 600
FONT_SIZE = 12
MAX_NAME = 28  # characters of a class name shown
PAD = 6


def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 3] + "..."


def _cell_size(classes: int) -> int:
    cell = -(-MATRIX_SIDE // classes)
    # Labels need MIN_LABELED_CELL; beyond ~128 classes the figure would be too large.
    return max(cell, MIN_LABELED_CELL) if classes <= 128 else max(cell, 3)


def save_confusion_png(path: str, confusion: np.ndarray, title: str,
                       class_names: Sequence[str] | None = None) -> tuple[int, int]:
    """Row-normalized confusion matrix (rows: true class, columns: predicted), dark
    cells for high rates, as a PNG at least MIN_WIDTH pixels wide; returns its (width,
    height). Rows and columns are labeled with `class_names` (by label index), else
    with the indices, when the cells are large enough (up to ~128 classes); cells large
    enough also show the rate in percent."""
    confusion = np.asarray(confusion, np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or not len(confusion):
        raise ValueError(f"confusion matrix: expected a square (classes, classes) array, "
                         f"got shape {confusion.shape}")
    classes = len(confusion)
    if class_names is not None and len(class_names) != classes:
        raise ValueError(f"confusion matrix: {len(class_names)} class names for {classes} "
                         "classes; expected one per class")
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    cell = _cell_size(classes)
    labeled = cell >= MIN_LABELED_CELL
    labels = ([_short(str(n)) for n in class_names] if class_names is not None
              else [str(i) for i in range(classes)])
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = _text_size(measure, "Hg", font)[1] + 4
    label_width = max(_text_size(measure, t, font)[0] for t in labels) + PAD if labeled else 0
    size = classes * cell
    # Left: "true class" (rotated) and the row labels; top: title, "predicted class",
    # the column labels (rotated).
    left = PAD + line + label_width
    top = PAD + line + line + label_width
    width = max(MIN_WIDTH, left + size + PAD, PAD + _text_size(measure, title, font)[0] + PAD)
    height = top + size + PAD
    image = Image.new("RGB", (width, height), "white")
    # White (rate 0) to dark blue (rate 1).
    colour = np.stack([255 * (1 - rates), 255 * (1 - 0.85 * rates), 255 * (1 - 0.45 * rates)],
                      axis=-1)
    image.paste(Image.fromarray(np.kron(colour, np.ones((cell, cell, 1))).astype(np.uint8)),
                (left, top))
    draw = ImageDraw.Draw(image)
    draw.rectangle([left - 1, top - 1, left + size, top + size], outline="black")
    draw.text((PAD, PAD), title, fill="black", font=font)
    draw.text((left, PAD + line), "predicted class", fill="black", font=font)
    axis = Image.new("RGB", (_text_size(measure, "true class", font)[0] + 2, line), "white")
    ImageDraw.Draw(axis).text((0, 0), "true class", fill="black", font=font)
    image.paste(axis.rotate(90, expand=True), (PAD, top))
    if labeled:
        for index, text in enumerate(labels):
            text_width, text_height = _text_size(measure, text, font)
            centre = index * cell + (cell - text_height) // 2
            draw.text((left - PAD - text_width, top + centre - 2), text, fill="black",
                      font=font)
            column = Image.new("RGB", (text_width + 2, line), "white")
            ImageDraw.Draw(column).text((0, 0), text, fill="black", font=font)
            column = column.rotate(90, expand=True)
            image.paste(column, (left + index * cell + (cell - column.width) // 2,
                                 top - PAD // 2 - column.height))
    if cell >= 28:  # room for the rate in each cell
        for (row, col), rate in np.ndenumerate(rates):
            if confusion[row].sum():
                text = f"{100 * rate:.0f}"
                text_width, text_height = _text_size(measure, text, font)
                draw.text((left + col * cell + (cell - text_width) // 2,
                           top + row * cell + (cell - text_height) // 2 - 3), text,
                          fill="white" if rate > 0.5 else "black", font=font)
    image.save(path, format="PNG")
    return image.size


def spectrogram_image(log_mel: np.ndarray, size: int = 112) -> np.ndarray:
    """(size, size, 3) uint8 picture of a (frames, mel_bins) log-mel spectrogram: time
    left to right, low bands at the bottom, dark = quiet (min-max scaled), to stand for
    an audio clip where a video's first frame would (retrieval sheets)."""
    mel = np.asarray(log_mel, np.float64)
    if mel.ndim != 2 or not mel.size:
        raise ValueError(f"spectrogram image: expected (frames, mel_bins), got {mel.shape}")
    span = mel.max() - mel.min()
    scaled = (mel - mel.min()) / span if span > 0 else np.zeros_like(mel)
    # Dark blue to yellow through green, readable in colour and grey.
    colour = np.stack([255 * scaled ** 1.5, 255 * scaled, 255 * (0.5 - 0.5 * scaled) + 40],
                      axis=-1)
    image = Image.fromarray(np.clip(colour, 0, 255).astype(np.uint8).transpose(1, 0, 2)[::-1])
    return np.asarray(image.resize((size, size), Image.NEAREST))


def save_retrieval_png(path: str, examples: Sequence[dict], query_frames: dict,
                       gallery_frames: dict) -> tuple[int, int]:
    """One row per example query: its first frame, then its nearest train videos'
    first frames, framed green when the class matches, red when not; returns the
    PNG's (width, height). examples: `Result.neighbours` entries; *_frames: {index:
    (H, W, 3) uint8} as from `EvalData.first_frames`."""
    rows = []
    for example in examples:
        row = [framed(query_frames[example["query"]], QUERY, f"q {example['label']}")]
        for rank, (index, label) in enumerate(zip(example["neighbours"],
                                                  example["neighbour_labels"]), 1):
            colour = HIT if label == example["label"] else MISS
            row.append(framed(gallery_frames[index], colour, f"{rank}: {label}"))
        rows.append(np.stack(row))
    image = Image.fromarray(tile(rows))
    image.save(path, format="PNG")
    return image.size
