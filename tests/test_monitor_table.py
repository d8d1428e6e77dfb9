"""benchmarks/monitor_table.py: the monitored epochs of a metrics.json, one value per
encoder (primary first), as Markdown rows."""
from __future__ import annotations

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "monitor_table", os.path.join(REPO, "benchmarks", "monitor_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _monitors(suffix, knn, std, rank):
    return {f"knn_top1{suffix}": knn, f"embedding_std{suffix}": std,
            f"effective_rank{suffix}": rank, f"alignment{suffix}": 0.5,
            f"uniformity{suffix}": -1.25}


def test_rows_hold_the_monitored_epochs_primary_encoder_first(tmp_path, capsys):
    epochs = [{"epoch": 0, "step": 0, **_monitors("", 0.19, 0.02, 28.2),
               **_monitors("_broad_flow", 0.1, 0.03, 23.0)},
              {"epoch": 1, "step": 12, "loss": 0.9},  # not monitored
              {"epoch": 2, "step": 24, "loss": 0.876, **_monitors("", 0.26, 0.053, 69.4),
               **_monitors("_broad_flow", 0.29, 0.049, 70.0)}]
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"epochs": epochs, "final": {"knn_top1_random_init": 0.19}}))
    table = _module()
    assert table.rows(str(tmp_path), None) == [
        ["0", "–", "0.19 / 0.10", "0.020 / 0.030", "28 / 23", "0.50 / -1.25"],
        ["2", "0.88", "0.26 / 0.29", "0.053 / 0.049", "69 / 70", "0.50 / -1.25"]]
    assert [r[0] for r in table.rows(str(tmp_path), {2})] == ["2"]
    assert table.main([str(tmp_path), "--names=V↔F", "--epochs=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| **V↔F** 2 | 0.88 | 0.26 / 0.29 |")
