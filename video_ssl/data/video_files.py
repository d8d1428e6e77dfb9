"""Decoding video files with PyAV: frames at a target fps, short-side resize, JPEG, audio.

No TensorFlow here on purpose: the converter's worker processes import only this
module, so they start fast. Times are seconds from the container's start (what a
player shows), so `start`/`end` cut video and audio alike.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import av
import cv2
import numpy as np

# About half the bytes of quality 95 (cv2's default, used by the Model Garden's
# converter) with no visible loss at 256 px; decoding speed barely depends on it.
DEFAULT_JPEG_QUALITY = 90
# Frames wider or taller than this (long side / short side) get a warning: the widest
# formats in use are 2.76:1 (Ultra Panavision) and 32:9 (3.56:1, ultrawide screens), so
# beyond 4:1 a video is most likely mis-encoded, and a square training crop sees at most
# a quarter of each frame (a 10000x10 video is stored as 64000x64 frames at 64 px).
MAX_ASPECT_RATIO = 4.0


class VideoDecodeError(Exception):
    """A video file that cannot be opened or decoded; the message names the file."""


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """One video ready to be written: JPEG frames, and the mono waveform if any."""
    frames: list[bytes]
    frame_rate: float
    height: int
    width: int
    waveform: np.ndarray | None = None
    sample_rate: float | None = None
    warnings: tuple[str, ...] = ()  # converted, but something looks wrong (truncated file)


def _open(path: str):
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoDecodeError(f"{path}: cannot open: {getattr(e, 'strerror', None) or e}") from e


def _origin(container) -> float:
    return (container.start_time or 0) / av.time_base


def _video_stream(container, path: str):
    if not container.streams.video:
        raise VideoDecodeError(f"{path}: no video stream")
    return container.streams.video[0]


def source_frame_rate(path: str) -> float:
    """The video stream's average frame rate (frames per second)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise VideoDecodeError(f"{path}: video stream has no frame rate")
        return float(rate)


def declared_duration(path: str) -> float | None:
    """Seconds of video the file's header declares (the video stream's duration, else
    the container's); None when it declares none. FFmpeg estimates it from the bit
    rate for containers without one (MPEG, AVI without an index)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.duration:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base if container.duration else None


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the shorter side is `short_side`; 0 keeps the size."""
    if short_side <= 0:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


# Needed frames closer than this are decoded in one pass rather than after a new seek
# (a seek decodes from the key frame before anyway).
_SEEK_GAP_S = 1.0
# AVFMT_NOTIMESTAMPS | AVFMT_TS_DISCONT: raw streams and MPEG program streams, whose
# seeks land on frames that do not decode as they do in sequence; read from the start.
_NO_SEEK_FORMATS = 0x80 | 0x200


class _Resampler:
    """Which decoded frame each output frame shows: fps=None keeps every frame of
    [start, end); otherwise one output frame per 1/fps seconds from `start`, the frame
    whose presentation time is nearest to it (frames are repeated or dropped as
    needed). Fed the frames' times in presentation order."""

    def __init__(self, fps: float | None, start: float, end: float | None):
        self.fps, self.start, self.end = fps, start, end
        self.k = 0  # index of the next target time, start + k / fps
        self.previous = None  # time of the last frame fed
        self.finished = False  # past `end`: no more output

    def add(self, t: float) -> list[bool]:
        """The output frames due once a frame at `t` seconds is decoded: for each,
        True when it shows the previous frame, False when this one."""
        start, end, fps = self.start, self.end, self.fps
        due = []
        if not fps:
            if end is not None and t >= end:
                self.finished = True
            elif t >= start:
                due.append(False)
            return due
        # Every target time up to t takes the nearer of the previous and this frame.
        while (target := start + self.k / fps) <= t:
            if end is not None and target >= end:
                self.finished = True
                return due
            due.append(self.previous is not None and target - self.previous < t - target)
            self.k += 1
        self.previous = t
        return due

    def tail(self, frame_duration: float) -> int:
        """How many output frames after the last frame's time still show it: targets
        before the video's end (the last frame's time plus its duration)."""
        if not self.fps or self.previous is None:
            return 0
        stop = self.previous + frame_duration
        stop = stop if self.end is None else min(self.end, stop)
        count = 0
        while self.start + self.k / self.fps < stop - 1e-6:
            count += 1
            self.k += 1
        return count


def _can_seek(container) -> bool:
    return not container.format.flags & _NO_SEEK_FORMATS


def _seek(container, stream, start: float) -> None:
    """To the key frame at or before `start` seconds; the frames before `start` that
    follow it are skipped by the caller (all frames before it where seeks are unsafe)."""
    if start > 0 and _can_seek(container):
        container.seek(int((_origin(container) + start) / stream.time_base), stream=stream)


def _seconds(pts: int, time_base) -> float:
    """A timestamp in seconds, computed as PyAV's `Frame.time` computes it (so that a
    packet's time and its frame's are the same float)."""
    return float(pts) * time_base.numerator / time_base.denominator


def _last_duration(duration, time_base, stream, fps) -> float:
    return (float(duration * time_base) if duration
            else 1.0 / float(stream.average_rate or fps))


def _rgb_converter(short_side: int):
    """frame -> (H, W, 3) uint8 RGB, upright as displayed, the short side at
    `short_side` (0 keeps the size; the first frame's shape is every frame's)."""
    shape = None

    def to_rgb(frame):
        nonlocal shape
        if shape is None:
            shape = resized_shape(frame.height, frame.width, short_side)
        rgb = frame.to_ndarray(format="rgb24", height=shape[0], width=shape[1],
                               interpolation="AREA")
        # Phone videos store a display rotation (counterclockwise degrees) instead
        # of rotated pixels; players apply it, so do we.
        return np.rot90(rgb, round(frame.rotation / 90) % 4)
    return to_rgb


def iter_frames(path: str, *, fps: float | None = None, short_side: int = 0,
                start: float = 0.0, end: float | None = None) -> Iterator[np.ndarray]:
    """Yields (H, W, 3) uint8 RGB frames of [start, end) seconds, upright as displayed.

    fps=None keeps every source frame; otherwise one frame per 1/fps seconds, the
    one whose presentation time is nearest to each target time (frames are
    repeated or dropped as needed).
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        origin = _origin(container)
        _seek(container, stream, start)
        to_rgb = _rgb_converter(short_side)
        resampler = _Resampler(fps, start, end)
        previous = None  # the last decoded frame
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                for shows_previous in resampler.add(frame.time - origin):
                    yield to_rgb(previous if shows_previous else frame)
                if resampler.finished:
                    return
                previous = frame
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{path}: decoding failed: {e}") from e
        if previous is not None:
            duration = _last_duration(previous.duration, previous.time_base, stream, fps)
            for _ in range(resampler.tail(duration)):
                yield to_rgb(previous)


def frame_schedule(path: str, *, fps: float | None = None, start: float = 0.0,
                   end: float | None = None) -> list[int]:
    """The source frame (its presentation timestamp) each frame `iter_frames` would
    yield shows, read from the packets' timestamps without decoding anything."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        origin, time_base = _origin(container), stream.time_base
        _seek(container, stream, start)
        try:
            packets = sorted((p.pts, p.duration) for p in container.demux(stream)
                             if p.pts is not None)
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{path}: reading failed: {e}") from e
    resampler = _Resampler(fps, start, end)
    shown, previous = [], None
    for pts, duration in packets:
        shown += [previous[0] if shows_previous else pts
                  for shows_previous in resampler.add(_seconds(pts, time_base) - origin)]
        if resampler.finished:
            return shown
        previous = (pts, duration)
    if previous is not None:
        shown += [previous[0]] * resampler.tail(
            _last_duration(previous[1], time_base, stream, fps))
    return shown


def decode_frames(path: str, wanted: list[int], *, short_side: int = 0
                  ) -> tuple[dict[int, np.ndarray], int]:
    """({pts: (H, W, 3) uint8 RGB}, frames decoded) for the source frames of
    presentation timestamps `wanted` (from `frame_schedule`), converted as
    `iter_frames` converts them. Each run of nearby wanted frames is decoded from
    the key frame before it up to its last frame; a file whose seeks land past the
    frame asked for (or of a format that cannot seek well) is decoded from its start
    up to the last frame wanted."""
    wanted = sorted(set(wanted))
    runs = [[wanted[0]]] if wanted else []
    found, decoded = {}, 0
    to_rgb = _rgb_converter(short_side)
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        seek = _can_seek(container)
        gap = int(_SEEK_GAP_S / stream.time_base) if seek else None
        for pts in wanted[1:]:
            if gap is None or pts - runs[-1][-1] <= gap:
                runs[-1].append(pts)
            else:
                runs.append([pts])
        for run in runs:
            decoded += _decode_run(container, stream, run, seek, found, to_rgb, path)
    if seek and len(found) < len(wanted):  # a seek landed late: once more from the start
        with _open(path) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            decoded += _decode_run(container, stream, wanted, False, found, to_rgb, path)
    missing = len(wanted) - len(found)
    if missing:
        raise VideoDecodeError(f"{path}: {missing} of the {len(wanted)} frames needed "
                               "could not be decoded")
    return found, decoded


def _decode_run(container, stream, run: list[int], seek: bool, found: dict, to_rgb,
                path: str) -> int:
    """Decodes up to the frame `run[-1]` (from the key frame before `run[0]` when
    `seek`), converting the frames of `run` not in `found` yet; returns the count."""
    wanted, decoded = set(run), 0
    try:
        if seek:
            container.seek(run[0], stream=stream)
        for frame in container.decode(stream):
            decoded += 1
            if frame.pts is None:
                continue
            if frame.pts in wanted and frame.pts not in found:
                found[frame.pts] = to_rgb(frame)
            if frame.pts >= run[-1]:
                break
    except av.FFmpegError as e:
        raise VideoDecodeError(f"{path}: decoding failed: {e}") from e
    return decoded


def read_audio(path: str, *, sample_rate: int, start: float = 0.0,
               end: float | None = None) -> np.ndarray | None:
    """Mono float32 waveform in [-1, 1] at `sample_rate` of [start, end) seconds.

    None when the file has no audio stream. Channels are downmixed and resampled by
    PyAV's AudioResampler (FFmpeg's swresample).
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=int(sample_rate))
        chunks, first_time = [], None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = frame.time - _origin(container)
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{path}: audio decoding failed: {e}") from e
    if not chunks:
        return None
    waveform = np.concatenate(chunks).astype(np.float32)
    # Align sample 0 with time 0: pad when the audio starts late, cut when early.
    offset = round((first_time or 0.0) * sample_rate)
    waveform = (np.concatenate([np.zeros(offset, np.float32), waveform]) if offset > 0
                else waveform[-offset:])
    lo = max(0, round(start * sample_rate))
    hi = None if end is None else max(lo, round(end * sample_rate))
    return np.clip(waveform[lo:hi], -1.0, 1.0)


def encode_jpeg(rgb: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """(H, W, 3) uint8 RGB -> baseline JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not JPEG-encode a frame of shape {rgb.shape}")
    return buf.tobytes()


def decode_video(path: str, *, fps: float | None = None, short_side: int = 0,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY, sample_rate: int | None = 48000,
                 start: float = 0.0, end: float | None = None) -> DecodedVideo:
    """Decodes one file (or its [start, end) segment) into JPEG frames and audio.

    sample_rate=None skips audio. Raises VideoDecodeError naming the file when it
    cannot be read or holds no frames in the segment; warns (in `warnings`) when it
    holds much less video than its header declares, or when its frames' aspect ratio
    exceeds MAX_ASPECT_RATIO.
    """
    if end is not None and end <= start:
        raise VideoDecodeError(f"{path}: segment end {end} s is not after start {start} s")
    frame_rate = float(fps) if fps else source_frame_rate(path)
    frames, shape = [], None
    for rgb in iter_frames(path, fps=fps, short_side=short_side, start=start, end=end):
        shape = rgb.shape
        frames.append(encode_jpeg(rgb, jpeg_quality))
    if not frames:
        raise VideoDecodeError(f"{path}: no video frames decoded"
                               + (f" in [{start}, {end}) s" if start or end is not None else ""))
    waveform = None
    if sample_rate:
        waveform = read_audio(path, sample_rate=sample_rate, start=start, end=end)
        if waveform is not None and not waveform.size:
            waveform = None
    warnings = (truncation_warning(len(frames) / frame_rate, declared_duration(path), start,
                                   end), aspect_warning(shape[0], shape[1]))
    return DecodedVideo(frames=frames, frame_rate=frame_rate, height=shape[0], width=shape[1],
                        waveform=waveform,
                        sample_rate=None if waveform is None else float(sample_rate),
                        warnings=tuple(w for w in warnings if w))


def aspect_warning(height: int, width: int) -> str | None:
    """A warning when frames are more than MAX_ASPECT_RATIO times wider than high (or
    higher than wide)."""
    ratio = max(height, width) / max(1, min(height, width))
    if ratio <= MAX_ASPECT_RATIO:
        return None
    return (f"frames of {width}x{height} pixels: aspect ratio {ratio:.0f}:1 exceeds "
            f"{MAX_ASPECT_RATIO:g}:1 (a mis-encoded video? square training crops see a "
            "sliver of each frame)")


def truncation_warning(decoded: float, declared: float | None, start: float = 0.0,
                       end: float | None = None) -> str | None:
    """A warning when `decoded` seconds fall short of what the header declares for
    [start, end) by more than 5% (at least 1 s): a truncated .mkv/.webm/.flv decodes
    without an error up to where it was cut. The slack absorbs containers whose
    declared duration includes a preroll or audio that outlasts the video."""
    if declared is None:
        return None
    expected = (declared if end is None else min(end, declared)) - start
    if decoded >= expected - max(1.0, 0.05 * expected):
        return None
    segment = ("" if not start and end is None
               else f" of the segment [{start:g}, {end or declared:g}) s")
    return (f"only {decoded:.1f} s of video decoded{segment}, the header declares "
            f"{declared:.1f} s: the file may be truncated")
