"""Reading video files for `video_ssl.extract`, only the frames the clips need, in
worker processes (`workers.Pool`) or, with num_workers=0, in this one; either way the
same values, in the input's order.

A file's frames are those a shard converted by `videos_to_tfrecords` at the model's
frame rate and short side would hold (`video_files.frame_schedule`, read from the
packets' timestamps without decoding). The clips' frame indices come from the caller
(`plan(num_frames, frame_rate)`, the evaluation pipeline's own sampling), and only
those frames are decoded (`video_files.decode_frames`: from the key frame before each
clip to its last frame) and JPEG-encoded as the converter encodes them. The other
frames stay empty strings: the pipeline decodes only the frames it gathers (and reads
the first one's size from its header, so the first is always filled). A flow encoder's
flow frames are computed from those JPEGs, each from a frame and the next, with the
settings its run recorded (`optical_flow.VideoFlow`), as `compute_flow` computes them
from a shard's frames.

No TensorFlow here: the workers import this module.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator

import numpy as np

from video_ssl.console import error_line
from video_ssl.data import optical_flow, video_files
from video_ssl.extraction import workers

# Files in flight per worker: enough to keep each busy while the model runs.
FILES_PER_WORKER = 4


@dataclasses.dataclass(frozen=True)
class Reading:
    """What to read of each file: "rgb" frames at `fps` (None: the file's own) with the
    short side at `short_side`, their "flow" computed with `flow`
    (`optical_flow.VideoFlow`'s settings), or the "audio" waveform at `sample_rate`."""
    modality: str
    fps: float | None = None
    short_side: int = 0
    sample_rate: float | None = None
    flow: dict | None = None


def probe(path: str, start: float, end: float | None, fps: float | None
          ) -> tuple[float, list[int]]:
    """(frame rate, the source frame each stored frame shows) of a file's segment."""
    if end is not None and end <= start:
        raise video_files.VideoDecodeError(f"{path}: segment end {end} s is not after "
                                           f"start {start} s")
    frame_rate = float(fps) if fps else video_files.source_frame_rate(path)
    schedule = video_files.frame_schedule(path, fps=fps, start=start, end=end)
    if not schedule:
        raise video_files.VideoDecodeError(f"{path}: no video frames")
    return frame_rate, schedule


def read_frames(path: str, num_frames: int, wanted: dict[int, int], short_side: int
                ) -> list[bytes]:
    """num_frames JPEGs: the stored frames `wanted` ({index: source pts}) encoded as
    the converter encodes them, the others empty but the first."""
    rgb, _ = video_files.decode_frames(path, list(wanted.values()), short_side=short_side)
    jpegs = {pts: video_files.encode_jpeg(frame) for pts, frame in rgb.items()}
    frames = [b""] * num_frames
    for index, pts in wanted.items():
        frames[index] = jpegs[pts]
    if not frames[0]:  # only its header is read: the frames' size
        frames[0] = frames[min(wanted)]
    return frames


def read_flow(path: str, num_frames: int, wanted: dict[int, int], short_side: int,
              settings: dict) -> list[bytes]:
    """num_frames - 1 flow JPEGs: flow frame i (frame i to i + 1) for each i with i
    and i + 1 in `wanted`, as `compute_flow` computes it from the stored JPEGs; the
    others empty but the first."""
    frames = read_frames(path, num_frames, wanted, short_side)
    video_flow = optical_flow.VideoFlow(**settings)
    flows = [b""] * (num_frames - 1)
    for i in sorted(i for i in wanted if i + 1 in wanted):
        flows[i] = video_flow.from_jpegs(frames[i:i + 2])[0]
    if not flows[0]:  # only its header is read: the flow frames' size
        flows[0] = next(f for f in flows if f)
    return flows


def read_waveform(path: str, start: float, end: float | None, sample_rate: float
                  ) -> np.ndarray:
    """The mono waveform of a file's segment at `sample_rate`."""
    waveform = video_files.read_audio(path, sample_rate=int(sample_rate), start=start, end=end)
    if waveform is None or not waveform.size:
        raise video_files.VideoDecodeError(f"{path}: no audio (the model takes audio)")
    return waveform


def _steps(entry, reading: Reading, plan: Callable) -> Iterator[tuple]:
    """One file's tasks: yields (function, args), is sent each one's value, and
    returns what was read (a dict of plain values)."""
    if reading.modality == "audio":
        waveform = yield read_waveform, (entry.path, entry.start, entry.end,
                                         reading.sample_rate)
        return {"waveform": waveform}
    frame_rate, schedule = yield probe, (entry.path, entry.start, entry.end, reading.fps)
    indices = [int(i) for i in plan(len(schedule), frame_rate)]
    if reading.modality == "flow":
        if len(schedule) < 2:
            raise video_files.VideoDecodeError(f"{entry.path}: 1 frame; flow needs 2")
        # Frame i takes flow frame min(i, N - 2), from frames i and i + 1
        # (`decode.flow_indices`).
        pairs = {min(i, len(schedule) - 2) for i in indices}
        wanted = {j: schedule[j] for i in pairs for j in (i, i + 1)}
        flows = yield read_flow, (entry.path, len(schedule), wanted, reading.short_side,
                                  reading.flow)
        return {"flow": flows, "flow_bound": reading.flow["bound"], "frame_rate": frame_rate}
    frames = yield read_frames, (entry.path, len(schedule),
                                 {i: schedule[i] for i in indices}, reading.short_side)
    return {"frames": frames, "frame_rate": frame_rate}


def read_files(entries: Iterable, reading: Reading, plan: Callable, num_workers: int
               ) -> Iterator[dict | str]:
    """For each entry (`video_list.VideoEntry`) in order: what was read, or the
    one-line reason it could not be. plan(num_frames, frame_rate) -> the stored frame
    indices the clips take (called in this process)."""
    entries = list(entries)
    if num_workers < 1:
        for entry in entries:
            yield _read_here(_steps(entry, reading, plan))
        return
    with workers.Pool(num_workers) as pool:
        steps, done, started = {}, {}, 0

        def advance(index, value):
            try:
                function, args = steps[index].send(value)
            except StopIteration as stop:
                done[index] = stop.value
                del steps[index]
            except Exception as error:  # noqa: BLE001 -- this file is skipped, with why
                done[index] = " ".join(error_line(error).split())
                del steps[index]
            else:
                pool.submit(index, function, *args)

        for index in range(len(entries)):
            while started < min(len(entries), index + FILES_PER_WORKER * num_workers):
                steps[started] = _steps(entries[started], reading, plan)
                advance(started, None)
                started += 1
            while index not in done:
                for key, ok, value in pool.results():
                    if ok:
                        advance(key, value)
                    else:
                        steps.pop(key).close()
                        done[key] = value
            yield done.pop(index)


def _read_here(steps: Iterator[tuple]) -> dict | str:
    value = None
    try:
        while True:
            function, args = steps.send(value)
            value = function(*args)
    except StopIteration as stop:
        return stop.value
    except Exception as error:  # noqa: BLE001 -- this file is skipped, with why
        return " ".join(error_line(error).split())
