"""What `video_ssl.extract` embeds of each video (`--clips`, `--window_s`, `--stride_s`,
`--crops`): checked here, without TensorFlow, so that a bad combination is a usage
error before anything loads; `extraction.clips` cuts the clips.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sampling:
    """clips: uniform clips per video (None with windows); window_s, stride_s: sliding
    windows (window_s None = the model's clip); crops: 1 or 3."""
    clips: int | None = None
    window_s: float | None = None
    stride_s: float | None = None
    crops: int = 1

    def __post_init__(self):
        if self.clips is not None and self.clips < 1:
            raise ValueError(f"--clips={self.clips}: expected at least 1")
        if (self.clips is None) == (self.stride_s is None):
            raise ValueError("expected either --clips=N or [--window_s=S] --stride_s=S "
                             "(sliding windows)")
        if self.stride_s is not None and not (self.stride_s > 0 and (
                self.window_s is None or self.window_s > 0)):
            raise ValueError(f"--window_s={self.window_s}, --stride_s={self.stride_s}: "
                             "expected positive seconds")
        if self.crops not in (1, 3):
            raise ValueError(f"--crops={self.crops}: expected 1 or 3")

    def settings(self) -> dict:
        return dataclasses.asdict(self)
