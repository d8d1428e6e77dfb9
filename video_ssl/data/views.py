"""What a method asks the input pipeline for: `ViewSpec`, one view of a video (clip
count and shape, temporal sampling and how it relates to the first view, training crop
and augmentation, evaluation crops), with its `AugmentSpec` (the augmentation after
the crop and the RGB normalization; defined in `augment`, importable from here) and
its `AudioSpec`, the log-mel settings of its "audio" modality. All are frozen
dataclasses that check their values when built, so a bad one fails where it is
configured. `view_from_options` builds a `ViewSpec` from flat keywords (its own
fields and `AugmentSpec`'s), as `make_dataset` and the `train_input` bindings give them.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from video_ssl.data import modalities as modalities_lib
from video_ssl.data.augment import AugmentSpec

CROPS = ("random_resized", "scale_jitter")
# Where a training clip may start: "within" the video (uniform in [0, T - span]), or
# "anywhere_looped" (uniform in [0, T], the frames past the end looped from the start).
STARTS = ("within", "anywhere_looped")
# How a view's clip starts follow the first (reference) view's: independently, or with
# the same start, or the same centre.
SYNCS = (None, "start", "centre")


@dataclasses.dataclass(frozen=True)
class AudioSpec:
    """Log-mel settings for the "audio" modality (DMVR's defaults; BraVe: frame 320,
    step 160, log_scale 10000, log_offset 1).

    sample_rate: what every file must hold (files without a sample rate are assumed to
    hold it). duration: seconds of audio per clip; None = the clip's duration at the
    view's target_fps (or the default frame rate), so shapes stay static. Past the
    end of the waveform the audio loops from its start (as the frames do).
    """
    sample_rate: float = 48000.0
    duration: float | None = None
    num_mel_bins: int = 80
    frame_length: int = 2048
    frame_step: int = 1024
    fft_length: int | None = None
    lower_edge_hertz: float = 80.0
    upper_edge_hertz: float = 7600.0
    log_offset: float = 1e-6
    log_scale: float = 1.0

    def __post_init__(self):
        # Checked here, where gin builds it: in the graph, a bad value fails only when
        # the first batch is read, with TensorFlow's message naming no binding.
        for name in ("sample_rate", "num_mel_bins", "frame_length", "frame_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AudioSpec.{name}={getattr(self, name)!r}: expected > 0")
        nyquist = self.sample_rate / 2
        if not 0 <= self.lower_edge_hertz < self.upper_edge_hertz <= nyquist:
            raise ValueError(
                f"AudioSpec.lower_edge_hertz={self.lower_edge_hertz:g}, "
                f"AudioSpec.upper_edge_hertz={self.upper_edge_hertz:g}: expected 0 <= lower "
                f"< upper <= {nyquist:g} Hz, the Nyquist frequency of "
                f"AudioSpec.sample_rate={self.sample_rate:g}")


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """One view of a video: `num_clips` clips of `num_frames` frames at `crop_size`.

    Temporal: frame_stride counts stored frames, or frames at target_fps when given;
    same_window makes all clips share one window (rho = 1: two spatial augmentations of
    one clip); min_gap/max_gap bound the distance between clip starts in seconds;
    frame_rate_jitter scales each clip's stride by U[1 - j, 1 + j]. start (training):
    "within" draws each clip's start uniformly in [0, T - span] (T the video's length,
    span the clip's; a shorter video starts at 0 and loops), "anywhere_looped" in
    [0, T], the frames past the end looped from the video's start (BraVe's broad view:
    even a view as long as the video gets a random offset). An audio-only view with an
    `AudioSpec.duration` spans that duration.
    one_clip_prob (training, two-clip views): per video, the probability of the
    official CoCLR code's one-clip pair (its OneClipTransform): both clips are cut from
    one window (each with its own crop and flip) and exactly one of them, drawn at
    random, gets the photometric ops (`AugmentSpec.photometric_prob` does not apply to
    the pair); otherwise each clip has its own window and photometric gate.
    sync: how this view's clip starts follow the first view's (the reference, whose
    own sync must be None), in training and evaluation: None draws them independently
    (BraVe's visual broad views: Table 4 shows syncing them hurts), "start" gives every
    clip the reference's start (BraVe's audio; Table 4's synced row), "centre" the
    reference's centre (the longer window then holds the shorter one); the reference
    has one clip or as many as this view. A synced view has no starts of its own: it
    keeps start "within".
    Spatial (training): crop "random_resized" (area_range, aspect_range) or
    "scale_jitter" (short_side_range); `augmentation` is the rest (`AugmentSpec`: flip,
    photometric ops, normalization, which evaluation clips keep); defer_augmentation
    stops training RGB clips after the decoded crop (uint8 canvases plus "rgb_size" and
    "augment_seed" for `augment.augment_batch`).
    Evaluation: num_clips uniformly spaced clips (or sliding windows
    every eval_window_stride stored frames) x eval_crops (1, 3 or 10) crops of
    crop_size after resizing the short side to short_side (default crop_size * 8 / 7,
    256 for 224), clip-major along the clip axis.
    """
    num_clips: int = 1
    num_frames: int = 8
    frame_stride: float = 8
    crop_size: int = 224
    modalities: tuple[str, ...] = ("rgb",)
    target_fps: float | None = None
    same_window: bool = False
    min_gap: float = 0.0
    max_gap: float | None = None
    frame_rate_jitter: float = 0.0
    one_clip_prob: float = 0.0
    start: str = "within"
    sync: str | None = None
    crop: str = "random_resized"
    area_range: tuple[float, float] = (0.2, 0.766)
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    short_side_range: tuple[int, int] = (256, 320)
    augmentation: AugmentSpec = AugmentSpec()
    defer_augmentation: bool = False
    eval_crops: int = 1
    short_side: int | None = None
    eval_window_stride: float | None = None
    audio: AudioSpec = AudioSpec()

    def __post_init__(self):
        for name in _TUPLES:  # lists from gin or JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = set(self.modalities) - set(modalities_lib.NAMES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities {self.modalities}: expected a non-empty "
                             f"subset of {modalities_lib.NAMES}")
        for name, kind in (("augmentation", AugmentSpec), ("audio", AudioSpec)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"ViewSpec.{name}={getattr(self, name)!r}: expected an "
                                 f"{kind.__name__}")
        if self.start not in STARTS:
            raise ValueError(f"start={self.start!r}: expected one of {STARTS}")
        if self.sync not in SYNCS:
            raise ValueError(f"sync={self.sync!r}: expected one of {SYNCS}")
        if self.sync is not None and self.start != "within":
            raise ValueError(f"start={self.start!r} with sync={self.sync!r}: a synced view "
                             "takes its starts from the first view; leave start 'within'")
        if self.crop not in CROPS:
            raise ValueError(f"crop={self.crop!r}: expected one of {CROPS}")
        if self.eval_crops not in (1, 3, 10):
            raise ValueError(f"eval_crops={self.eval_crops}: expected 1, 3 or 10")
        if isinstance(self.one_clip_prob, bool) or not isinstance(
                self.one_clip_prob, (int, float)) or not 0 <= self.one_clip_prob <= 1:
            raise ValueError(f"ViewSpec.one_clip_prob={self.one_clip_prob!r}: expected a "
                             "probability in [0, 1]")
        if self.num_clips < 1 or self.num_frames < 1:
            raise ValueError(f"num_clips={self.num_clips}, num_frames={self.num_frames}: "
                             "expected >= 1")
        if self.defer_augmentation and "rgb" not in self.modalities:
            raise ValueError(f"defer_augmentation=True defers RGB augmentation, but modalities "
                             f"{tuple(self.modalities)} have no rgb")

    def audio_samples(self, default_frame_rate: float) -> int:
        """Static number of waveform samples per clip."""
        duration = self.audio.duration
        if duration is None:
            fps = self.target_fps or default_frame_rate
            duration = self.num_frames * self.frame_stride / fps
        return int(round(duration * self.audio.sample_rate))


_TUPLES = ("modalities", "area_range", "aspect_range", "short_side_range")
VIEW_FIELDS = tuple(f.name for f in dataclasses.fields(ViewSpec))
AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentSpec))


def view_from_options(options: Mapping, *, where: str = "ViewSpec") -> ViewSpec:
    """The `ViewSpec` of flat keywords: its own fields and `AugmentSpec`'s (which make
    its `augmentation`, unless that is given whole). An unknown keyword is a one-line
    ValueError naming it and `where` the keywords came from."""
    unknown = sorted(set(options) - set(VIEW_FIELDS) - set(AUGMENT_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown keyword{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)}; expected ViewSpec fields {VIEW_FIELDS} or "
                         f"AugmentSpec fields {AUGMENT_FIELDS}")
    view = {k: v for k, v in options.items() if k in VIEW_FIELDS}
    augmentation = {k: v for k, v in options.items() if k in AUGMENT_FIELDS}
    if augmentation:
        if "augmentation" in view:
            raise ValueError(f"{where}: augmentation given whole and as keywords "
                             f"{sorted(augmentation)}; expected one of them")
        view["augmentation"] = AugmentSpec(**augmentation)
    return ViewSpec(**view)
