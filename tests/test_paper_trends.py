"""benchmarks/paper_trends.py: the verdict test on synthetic numbers, the tables' plan,
the report and docs blocks, and its smoke mode end to end through the CLIs."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "paper_trends.py")


@pytest.fixture(scope="module")
def trends():
    spec = importlib.util.spec_from_file_location("paper_trends", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


# ------------------------------------------------------------------ the statistics


def test_welch_matches_scipy(trends):
    a, b = [0.31, 0.27, 0.35], [0.22, 0.25, 0.21, 0.24]
    difference, p = trends.welch(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert difference == pytest.approx(np.mean(a) - np.mean(b))
    assert p == pytest.approx(expected.pvalue)


@pytest.mark.parametrize("a, b, expected", [
    ([0.40, 0.42, 0.41], [0.30, 0.31, 0.29], "holds"),
    ([0.30, 0.31, 0.29], [0.40, 0.42, 0.41], "reversed"),
    ([0.30, 0.36, 0.27], [0.29, 0.33, 0.25], "within noise"),  # a lead inside the spread
    ([0.50], [0.20], "within noise"),                         # one seed: no test
    ([0.30, 0.30, 0.30], [0.20, 0.20, 0.20], "holds"),        # no spread, a difference
    ([0.30, 0.30, 0.30], [0.30, 0.30, 0.30], "within noise"),
])
def test_verdicts(trends, a, b, expected):
    assert trends.verdict(*trends.welch(a, b)) == expected


def test_summary_of_a_table(trends):
    table = trends.rho_table()
    base = {"random_init": (0.19, 0.30), "moco_rho1": (0.25, 0.35), "moco_rho2": (0.30, 0.40)}
    units = {name: {str(s): {"knn": knn + 0.01 * s, "linear": linear - 0.01 * s}
                    for s in range(3)} for name, (knn, linear) in base.items()}
    result = trends.summarize(table, units)
    cell = result["rows"]["ρMoCo ρ=2"]["kNN"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(0.31)
    assert cell["sd"] == pytest.approx(0.01)
    assert result["rows"]["ρBYOL ρ=1"]["linear"]["n"] == 0  # not run: no value, no verdict
    verdicts = {(c["better"], c["worse"], c["column"]): c["verdict"]
                for c in result["comparisons"]}
    assert verdicts[("ρMoCo ρ=2", "ρMoCo ρ=1", "kNN")] == "holds"
    assert verdicts[("ρMoCo ρ=1", "random init", "linear")] == "holds"
    assert not any("ρBYOL" in key[0] for key in verdicts)
    text = trends.table_markdown("rho", result)
    assert "| ρMoCo ρ=2 | 0.31 ± 0.01 | 0.39 ± 0.01 |" in text
    assert "| ρMoCo ρ=2 > ρMoCo ρ=1 | kNN | +0.050 |" in text


def test_every_claim_names_rows_of_its_table(trends):
    for make in trends.TABLES.values():
        table = make()
        labels = {r.label for r in table.rows}
        units = {u.name for u in table.units}
        assert {c.better for c in table.claims} | {c.worse for c in table.claims} <= labels
        assert {r.unit for r in table.rows} <= units
        assert {r.random for r in table.rows if r.random} <= labels
        for unit in table.units:  # a random init reuses a run trained before it
            if unit.base:
                names = [u.name for u in table.units]
                assert names.index(unit.base) < names.index(unit.name)


# ------------------------------------------------------------------ plan and resuming


def test_dry_run_plans_each_unit_and_skips_finished_ones(trends, tmp_path, capsys):
    out = str(tmp_path / "runs")
    assert trends.main(["--dry_run", "--tables", "coclr", "--seeds", "2", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "6 units to run" in text and "estimated" in text
    assert "--fuse_with=" in text and "--random_init" in text and "train.seed=1" in text
    marker = tmp_path / "runs" / "coclr" / "ubernce" / "seed1" / trends.DONE
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"metrics": {}}))
    trends.main(["--dry_run", "--tables", "coclr", "--seeds", "2", "--out", out])
    assert "5 units to run" in capsys.readouterr().out


def test_bad_table_is_one_line(trends, capsys):
    with pytest.raises(SystemExit):
        trends.main(["--dry_run", "--tables", "rho,simclr"])
    assert "--tables=rho,simclr: expected names from rho, coclr, brave" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        trends.main(["--dry_run", "--tables", "brave", "--units", "v_v,moco_rho1"])
    assert "--units=v_v,moco_rho1: expected names from random_init, v_a," in \
        capsys.readouterr().err


# ------------------------------------------------------------------ reports and docs


def test_units_run_reports_every_finished_unit(trends, tmp_path):
    """A run restricted with --units still reports the table's other finished units."""
    out = tmp_path / "runs"
    for name in ("random_init", "v_f"):
        for seed in range(2):
            marker = out / "brave" / name / f"seed{seed}" / trends.DONE
            marker.parent.mkdir(parents=True)
            marker.write_text(json.dumps({"metrics": {"knn": 0.2 + seed / 100, "svm": 0.3}}))
    args = trends.parse_flags(["--tables", "brave", "--units", "v_f", "--seeds", "2",
                               "--out", str(out), "--results", str(tmp_path / "R.md"),
                               "--json", str(tmp_path / "t.json")])
    table = trends.brave_table()
    only_v_f = trends.dataclasses.replace(
        table, units=tuple(u for u in table.units if u.name == "v_f"))
    trends.update_reports(args, trends.Settings(str(out), 2), [only_v_f], "cmd")
    rows = json.loads((tmp_path / "t.json").read_text())["brave"]["rows"]
    assert rows["random init"]["kNN"]["n"] == 2 and rows["V↔F"]["kNN"]["n"] == 2
    assert "| random init | 0.21 ± 0.01 |" in (tmp_path / "R.md").read_text()


def test_blocks_replace_only_their_content(trends):
    text = "intro\n<!-- t begin -->\nold\n<!-- t end -->\nafter\n"
    assert trends.replace_block(text, "t", "new\n", "page.md") == \
        "intro\n<!-- t begin -->\nnew\n<!-- t end -->\nafter\n"
    with pytest.raises(ValueError, match="page.md: no '<!-- u begin -->'"):
        trends.replace_block(text, "u", "new\n", "page.md")


def test_docs_pages_hold_each_tables_block(trends):
    for name, make in trends.TABLES.items():
        text = open(os.path.join(REPO, make().doc), encoding="utf-8").read()
        assert f"<!-- paper_trends:{name} begin -->" in text
        assert f"<!-- paper_trends:{name} end -->" in text


def test_write_docs_writes_complete_tables_only(trends, tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    for name, make in trends.TABLES.items():
        (tmp_path / make().doc).write_text(
            f"keep\n<!-- paper_trends:{name} begin -->\nhand\n<!-- paper_trends:{name} end -->\n")
    monkeypatch.setattr(trends, "REPO", str(tmp_path))
    full = {str(s): {"knn": 0.2 + 0.01 * s, "linear": 0.3} for s in range(3)}
    table = trends.rho_table()
    rho = trends.summarize(table, {u.name: full for u in table.units})
    brave = trends.brave_table()
    partial = trends.summarize(brave, {"v_v": {"0": {"knn": 0.2, "svm": 0.3, "knn_broad": 0.1}}})
    written = trends.write_docs({"rho": rho, "brave": partial}, seeds=3)
    assert written == ["docs/recipes.md"]
    recipes = (tmp_path / "docs" / "recipes.md").read_text()
    assert recipes.startswith("keep\n") and "hand" not in recipes and "ρBYOL ρ=3" in recipes
    assert "hand" in (tmp_path / "docs" / "brave.md").read_text()


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_smoke_runs_the_clis_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "smoke"
    command = [sys.executable, SCRIPT, "--smoke", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    result = json.loads((out / "paper_trends.json").read_text())["rho"]
    for label in ("random init", "ρMoCo ρ=1"):
        for column in ("kNN", "linear"):
            cell = result["rows"][label][column]
            assert cell["n"] == 1 and 0.0 <= cell["mean"] <= 1.0
    assert {c["verdict"] for c in result["comparisons"]} == {"within noise"}  # one seed
    assert "<!-- paper_trends begin -->" in (out / "RESULTS.md").read_text()
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "0 units to run" in again.stdout


def test_results_section_is_replaced_in_place(trends, tmp_path):
    results_md, json_path = tmp_path / "RESULTS.md", tmp_path / "trends.json"
    results_md.write_text("# Other benchmark\n\nkept\n")
    table = trends.brave_table()
    result = trends.summarize(table, {"v_v": {"0": {"knn": 0.2, "svm": 0.3, "knn_broad": 0.1}}})
    for _ in range(2):
        trends.write_reports({"brave": result}, str(results_md), str(json_path), "cmd")
    text = results_md.read_text()
    assert text.startswith("# Other benchmark\n\nkept\n")
    assert text.count("<!-- paper_trends begin -->") == 1 and "| V↔V | 0.20 | 0.30 | 0.10 |" in text
    assert json.loads(json_path.read_text())["brave"]["rows"]["V↔V"]["SVM"]["mean"] == 0.3


def test_a_failing_command_is_reported_and_the_others_go_on(trends, tmp_path, monkeypatch,
                                                            capsys):
    calls = []

    def failing_call(argv, stdout, **_):
        calls.append(argv)
        stdout.write("video_ssl.train: error: --gin_file=x.gin: no such file\n")
        return 1

    monkeypatch.setattr(trends.subprocess, "call", failing_call)
    out = tmp_path / "runs"
    code = trends.main(["--tables", "brave", "--units", "v_v,v_f", "--seeds", "1", "--out",
                        str(out), "--json", str(tmp_path / "t.json"), "--results",
                        str(tmp_path / "R.md")])
    text = capsys.readouterr().out
    assert code == 1 and len(calls) == 2  # each unit's training tried once, then skipped
    assert text.count("FAILED (exit 1;") == 2 and "no such file" in text
    assert "2 unit(s) failed" in text
    assert not list(out.rglob(trends.DONE)) and not list(out.rglob(trends.TRAINED))
    assert "| V↔F | – | – | – |" in (tmp_path / "R.md").read_text()
