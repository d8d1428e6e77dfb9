"""benchmarks/scene_probe.py: the pair similarities on hand-made features and the demo
clips it cuts."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from video_ssl.data import clips as clips_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location(
        "scene_probe", os.path.join(REPO, "benchmarks", "scene_probe.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _pairs(scene_weight, class_weight):
    """4 videos (classes 0, 0, 1, 1), 2 scenes each, 2 clips per scene; a clip's features
    are its scene's code and its class's code (orthogonal one-hots) plus a little noise."""
    rng = np.random.default_rng(0)
    videos, scenes, labels, features = [], [], [], []
    for video in range(4):
        for scene in range(2):
            for _ in range(2):
                code = np.zeros(16)
                code[2 * video + scene] = scene_weight
                code[8 + video // 2] = class_weight
                features.append(code + rng.normal(0, 0.01, 16))
                videos.append(video), scenes.append(scene), labels.append(video // 2)
    return np.array(features), np.array(videos), np.array(scenes), np.array(labels)


def test_scene_and_class_contrasts_follow_what_the_features_hold(probe):
    by_scene = probe.similarities(*_pairs(scene_weight=3.0, class_weight=1.0))
    by_class = probe.similarities(*_pairs(scene_weight=1.0, class_weight=3.0))
    assert by_scene["scene"] > 0.5 > by_scene["class"] > 0
    assert by_class["class"] > 0.5 > by_class["scene"] > 0
    # Other scenes of one video share only the class code, like other videos of the class.
    assert by_scene["other scene"] == pytest.approx(by_scene["same class"], abs=0.01)
    assert by_scene["scene"] == pytest.approx(by_scene["same scene"] - by_scene["other scene"])


def test_demo_clips_stay_inside_one_scene(probe):
    from video_ssl.data import demo
    from video_ssl.data.views import AugmentSpec, ViewSpec
    view = ViewSpec(num_frames=4, frame_stride=2, crop_size=32,
                    augmentation=AugmentSpec(mean=0.5, std=0.25))
    clips, videos, scenes, labels = probe.demo_clips(view, 2)
    assert clips.shape[1:] == (4, 32, 32, 3) and clips.dtype == np.float32
    assert -2.0 <= clips.min() and clips.max() <= 2.0  # (x - 0.5) / 0.25 for x in [0, 1]
    # The first clip is frames 0, 2, 4, 6 of video 0 cut as evaluation cuts them.
    frames = demo.demo_video("test", 0).frames[[0, 2, 4, 6]] / np.float32(255)
    np.testing.assert_allclose(clips[0], clips_lib.eval_rgb_crops(view, frames, 1)[0],
                               atol=1e-6)
    assert set(videos) == {0, 1} and list(labels[videos == 1][:1]) == [1]
    for index in (0, 1):
        scene = demo.demo_video("test", index).scene
        starts = np.arange(0, 100 - 6, probe.CLIP_EVERY)
        kept = starts[scene[starts] == scene[starts + 6]]
        assert (videos == index).sum() == len(kept) < len(starts)  # clips across a cut dropped
        assert list(scenes[videos == index]) == list(scene[kept])
