"""Models: video/audio backbones (registry) and heads. Know nothing of methods."""
from video_ssl.models.backbones import available_backbones, build_backbone  # noqa: F401
from video_ssl.models.flops import count_flops  # noqa: F401
