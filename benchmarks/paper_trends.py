"""The papers' headline comparisons at demo scale, over seeds, with computed verdicts.

    python benchmarks/paper_trends.py [--tables rho,coclr,brave] [--seeds 3] \
        [--units v_v,v_f,random_init] [--out benchmarks/runs/paper_trends] [--dry_run] \
        [--write_docs] [--smoke]

Tables (each run on the demo data: `gin_configs/demo.gin`, `gin_configs/eval/demo.gin`,
the commands of the docs' demo sections):
- rho: ρ-paper Table 2, ρMoCo and ρBYOL at ρ = 1, 2, 3; kNN and linear probe top-1.
- coclr: CoCLR Table 1, InfoNCE-RGB/-Flow, CoCLR-RGB/-Flow (cycle 2 of the schedule),
  UberNCE-RGB, two-stream (`evaluate --fuse_with`); kNN, linear top-1, retrieval R@1.
- brave: BraVe Tables 1-2, V↔V, V↔V+RC, V↔F, V↔A and V↔V+RC with τ_b = τ_n (the
  narrow view's 4 frames at 5 fps); narrow kNN and SVM top-1, broad kNN.
Every table has a random-init row: the kNN of the same backbone before its first step
(the run's `knn_top1_random_init`, seeded by train.seed) and the probe on
`evaluate --random_init=s` (the backbone drawn with seed s).

Seed s (0 .. --seeds - 1) sets `train.seed=s` (initialization, data order, augmentation
draws) and `evaluate.seed=s` (the probe's initialization, clip order and augmentation).
kNN is the online monitor's last value in metrics.json (k = 20, one centre clip per test
video); the probes are `python -m video_ssl.evaluate`'s top-1 / recall@1.

Verdicts: for each comparison "A > B" that a paper reports (its table and numbers cited)
and for every row against its random init, Welch's two-sample t-test of the seeds'
values (unequal variances, two-sided, α = 0.05): "holds" when p < α and mean A > mean B,
"reversed" when p < α and mean A < mean B, "within noise" otherwise (and with fewer than
two seeds a side). The noise is the seeds' only: the 100 test videos are the same in
every run.

Each (run, seed) is a unit: train (skipped when the model_dir holds a finished run: the
trainer resumes an interrupted one), then its evaluations (each skipped when its report
exists), then `TRENDS_DONE.json` with the unit's metrics and wall seconds; a re-run
skips finished units. A failing command is reported with its log and the unit skipped;
the others go on. After every unit the results JSON (--json) and RESULTS.md's section
(between `<!-- paper_trends begin/end -->`) are rewritten from all finished units;
--write_docs writes each complete table (every unit, every seed) into its docs page,
between `<!-- paper_trends:<table> begin/end -->`.

--smoke: one unit of the rho table (ρMoCo ρ=1 against random init), one seed, two steps
of a slow_r18/8 on 2 x 32^2 clips of a 16-video demo build (tests/test_paper_trends.py);
its JSON and RESULTS.md go into --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
from scipy import stats  # scikit-learn's dependency

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALPHA = 0.05
DONE = "TRENDS_DONE.json"
TRAINED = "TRENDS_TRAINED"  # the training command returned 0 (it resumes otherwise)
# The probes' metric in their eval_<name>.json.
PROTOCOL_METRIC = {"linear_ucf101": "top1", "svm_ucf101": "top1", "retrieval_ucf101": "recall@1"}


@dataclasses.dataclass(frozen=True)
class Eval:
    """One `video_ssl.evaluate` run of a unit: `protocol` (gin_configs/eval/<protocol>.gin)
    on the unit's `checkpoint` (a stage folder of its run, '' for the run itself), fused
    with `fuse_with` when set; its metrics are stored as `<id>` (or `<id>_<stream>` and
    `<id>_fused` when fused)."""
    id: str
    protocol: str
    checkpoint: str = ""
    fuse_with: str | None = None
    estimate_s: float = 40.0


@dataclasses.dataclass(frozen=True)
class Unit:
    """A training run (`recipe` + demo.gin + `params`) and its evaluations; with `base`
    set, no training: the random initialization of unit `base`'s backbones. `knn`: metric
    id -> (stage folder, key of metrics.json's final entry)."""
    name: str
    recipe: str | None
    evals: tuple[Eval, ...]
    knn: dict
    params: tuple[str, ...] = ()
    base: str | None = None
    estimate_s: float = 0.0  # training wall seconds (the estimates' comment below)


@dataclasses.dataclass(frozen=True)
class Row:
    """A table row: `columns` maps a column to the metric id it reads in `unit`."""
    label: str
    unit: str
    columns: dict
    random: str | None = None  # the label of its random-init row


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's comparison `better` > `worse` (row labels), with its source."""
    better: str
    worse: str
    source: str


@dataclasses.dataclass(frozen=True)
class Table:
    """A paper comparison's runs (`units`), what it shows (`rows`) and tests (`claims`)."""
    name: str
    title: str
    doc: str  # the docs page its block goes into
    units: tuple[Unit, ...]
    rows: tuple[Row, ...]
    claims: tuple[Claim, ...]
    tested: tuple[str, ...]  # the columns the verdicts test


# Training wall seconds on the shared 2-core CPU (load 3-5), measured 2026-12-07 for the
# docs' demo sections (/work/demo/times.txt: ρMoCo ρ=3 235, CoCLR's schedule 612,
# UberNCE 155, V↔V 167, V↔F 145; evaluations 18 (SVM), 30-47 (linear), 32-38 (retrieval));
# ρ=1 and 2 from this script's calibration at load 8-9 (446 and 464 s, V↔V 347 there),
# scaled by V↔V's ratio; ρBYOL as ρMoCo; V↔A and V↔V+RC from their older times' ratios
# to V↔F's. The first finished unit rescales the rest (printed). Calibration:
# benchmarks/RESULTS.md.
RHO_TRAIN_S = {1: 215, 2: 225, 3: 235}


LINEAR = Eval("linear", "linear_ucf101", estimate_s=35)
SVM = Eval("svm", "svm_ucf101", estimate_s=18)


def rho_table() -> Table:
    units, rows = [], [Row("random init", "random_init", {"kNN": "knn", "linear": "linear"})]
    for method, label in (("moco", "ρMoCo"), ("byol", "ρBYOL")):
        for rho in (1, 2, 3):
            name = f"{method}_rho{rho}"
            units.append(Unit(name, f"{name}.gin", (LINEAR,), {"knn": ("", "knn_top1")},
                              estimate_s=RHO_TRAIN_S[rho]))
            rows.append(Row(f"{label} ρ={rho}", name, {"kNN": "knn", "linear": "linear"},
                            "random init"))
    units.insert(1, Unit("random_init", None, (LINEAR,),
                         {"knn": ("", "knn_top1_random_init")}, base="moco_rho1"))
    numbers = {"ρMoCo": ("61.0 / 65.8 / 67.3", "90.8 / 91.0 / 92.8"),
               "ρBYOL": ("60.6 / 65.8 / 68.3", "91.2 / 92.7 / 93.8")}
    claims = tuple(
        Claim(f"{m} ρ={hi}", f"{m} ρ={hi - 1}",
              f"ρ-paper Table 2 (K400 linear ρ=1/2/3: {numbers[m][0]}; "
              f"UCF101 fine-tuned: {numbers[m][1]})")
        for m in ("ρMoCo", "ρBYOL") for hi in (2, 3))
    return Table("rho", "ρ-paper Table 2: ρMoCo and ρBYOL at ρ = 1, 2, 3", "docs/recipes.md",
                 tuple(units), tuple(rows), claims, ("kNN", "linear"))


def coclr_table() -> Table:
    evals = (("linear_ucf101", "linear", 47), ("retrieval_ucf101", "r1", 37))
    schedule = Unit(
        "coclr", "coclr_ucf101.gin",
        tuple(Eval(f"{short}_{stage}", protocol, f"{stage}_rgb", f"{stage}_flow", seconds)
              for protocol, short, seconds in evals for stage in ("infonce", "cycle2")),
        {"knn_infonce_rgb": ("infonce_rgb", "knn_top1"),
         "knn_infonce_flow": ("infonce_flow", "knn_top1"),
         "knn_cycle2_rgb": ("cycle2_rgb", "knn_top1"),
         "knn_cycle2_flow": ("cycle2_flow", "knn_top1")}, estimate_s=612)
    random = Unit(
        "random_init", None,
        tuple(Eval(short, protocol, "infonce_rgb", "infonce_flow", seconds)
              for protocol, short, seconds in evals),
        {"knn_rgb": ("infonce_rgb", "knn_top1_random_init"),
         "knn_flow": ("infonce_flow", "knn_top1_random_init")}, base="coclr")
    uber = Unit("ubernce", "ubernce_rgb.gin",
                tuple(Eval(short, protocol, estimate_s=seconds - 10)
                      for protocol, short, seconds in evals),
                {"knn": ("", "knn_top1")}, estimate_s=155)

    def cols(knn, suffix):
        return {**({"kNN": knn} if knn else {}), "linear": f"linear{suffix}", "R@1": f"r1{suffix}"}

    rows = (
        Row("random init, RGB", "random_init", cols("knn_rgb", "_rgb")),
        Row("random init, flow", "random_init", cols("knn_flow", "_flow")),
        Row("random init, two-stream", "random_init", cols(None, "_fused")),
        Row("InfoNCE-RGB", "coclr", cols("knn_infonce_rgb", "_infonce_rgb"), "random init, RGB"),
        Row("InfoNCE-Flow", "coclr", cols("knn_infonce_flow", "_infonce_flow"),
            "random init, flow"),
        Row("InfoNCE two-stream", "coclr", cols(None, "_infonce_fused"),
            "random init, two-stream"),
        Row("UberNCE-RGB", "ubernce", cols("knn", ""), "random init, RGB"),
        Row("CoCLR-RGB", "coclr", cols("knn_cycle2_rgb", "_cycle2_rgb"), "random init, RGB"),
        Row("CoCLR-Flow", "coclr", cols("knn_cycle2_flow", "_cycle2_flow"),
            "random init, flow"),
        Row("CoCLR two-stream", "coclr", cols(None, "_cycle2_fused"), "random init, two-stream"),
    )
    t1 = "CoCLR Table 1 (linear / R@1"
    claims = (
        Claim("CoCLR-RGB", "InfoNCE-RGB", f"{t1}: 70.2 / 51.8 vs 46.8 / 33.1)"),
        Claim("UberNCE-RGB", "CoCLR-RGB", f"{t1}: 78.0 / 71.6 vs 70.2 / 51.8)"),
        Claim("CoCLR-Flow", "InfoNCE-Flow", f"{t1}: 68.7 / 48.4 vs 66.8 / 45.2)"),
        Claim("InfoNCE-Flow", "InfoNCE-RGB", f"{t1}: 66.8 / 45.2 vs 46.8 / 33.1)"),
        Claim("CoCLR two-stream", "CoCLR-RGB", f"{t1}: 72.1 / 55.6 vs 70.2 / 51.8)"),
    )
    return Table("coclr", "CoCLR Table 1: InfoNCE, UberNCE, CoCLR; RGB, flow, two-stream",
                 "docs/coclr.md", (schedule, random, uber), rows, claims,
                 ("kNN", "linear", "R@1"))


def brave_table() -> Table:
    # τ_b = τ_n: the broad view as long as the narrow one (4 frames at 5 fps, 0.8 s).
    same_extent = ("BROAD_FRAMES=4", "BROAD_FPS=5.0")
    specs = (  # unit, recipe, label, broad encoder, estimate, params
        ("v_v", "brave_v_v.gin", "V↔V", "broad_rgb", 167, ()),
        ("v_vrc", "brave_v_vrc.gin", "V↔V+RC", "broad_rgb", 250, ()),
        ("v_vrc_short", "brave_v_vrc.gin", "V↔V+RC, τ_b = τ_n", "broad_rgb", 280, same_extent),
        ("v_f", "brave_v_f.gin", "V↔F", "broad_flow", 145, ()),
        ("v_a", "brave_v_a.gin", "V↔A", "broad_audio", 380, ()),
    )
    units = [Unit("random_init", None, (SVM,), {"knn": ("", "knn_top1_random_init")},
                  base="v_v")]
    rows = [Row("random init", "random_init", {"kNN": "knn", "SVM": "svm"})]
    for name, recipe, label, broad, seconds, params in specs:
        units.append(Unit(name, recipe, (SVM,), {"knn": ("", "knn_top1"),
                                                 "knn_broad": ("", f"knn_top1_{broad}")},
                          params, estimate_s=seconds))
        rows.append(Row(label, name, {"kNN": "knn", "SVM": "svm",
                                      "broad kNN": "knn_broad"}, "random init"))
    units.insert(0, units.pop(1))  # V↔V first: the random init reuses its model_dir
    claims = (
        Claim("V↔V+RC", "V↔V", "BraVe Table 2 (HMDB51 / UCF101 linear: 65.1 / 90.0 vs "
              "61.3 / 89.9)"),
        Claim("V↔F", "V↔V", "BraVe Table 2 (65.6 / 91.1 vs 61.3 / 89.9)"),
        Claim("V↔F", "V↔V+RC", "BraVe Table 2 (65.6 / 91.1 vs 65.1 / 90.0)"),
        Claim("V↔V+RC", "V↔V+RC, τ_b = τ_n", "BraVe Table 1 (RGB+RC, τ_n 1.3 s: τ_b 10 s "
              "65.1 / 90.0 vs τ_b 1.3 s 59.4 / 88.1)"),
    )
    return Table("brave", "BraVe Tables 1-2: the broad view's modality and extent",
                 "docs/brave.md", tuple(units), tuple(rows), claims, ("kNN", "SVM"))


TABLES = {"rho": rho_table, "coclr": coclr_table, "brave": brave_table}


# ------------------------------------------------------------------ the statistics

def welch(a, b) -> tuple[float, float]:
    """Welch's t-test of mean(a) - mean(b): (difference, two-sided p); p is nan with
    fewer than two values a side, 0 or 1 when both sides have no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return difference, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return difference, 0.0 if difference else 1.0
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return difference, float(2 * stats.t.sf(abs(t), df))


def verdict(difference: float, p: float, alpha: float = ALPHA) -> str:
    """The paper's direction (a positive difference) by the test: "holds", "reversed"
    or "within noise" (p >= alpha, or untestable)."""
    if math.isnan(p) or p >= alpha:
        return "within noise"
    return "holds" if difference > 0 else "reversed"


def summarize(table: Table, units: dict) -> dict:
    """The table's results from its finished units ({unit: {seed: metrics}}): each row's
    values per column and seed, mean and sd; each claim's and each row-vs-random-init
    comparison's difference, p and verdict per tested column."""
    rows = {}
    for row in table.rows:
        seeds = units.get(row.unit, {})
        cells = {}
        for column, metric in row.columns.items():
            values = {s: m[metric] for s, m in sorted(seeds.items())
                      if m.get(metric) is not None}
            v = np.array(list(values.values()), float)
            cells[column] = {"values": values, "n": len(v),
                             "mean": float(v.mean()) if len(v) else None,
                             "sd": float(v.std(ddof=1)) if len(v) > 1 else None}
        rows[row.label] = cells
    comparisons = []
    pairs = [(c.better, c.worse, c.source) for c in table.claims]
    pairs += [(r.label, r.random, "beats its random initialization (issue 23's target)")
              for r in table.rows if r.random]
    for better, worse, source in pairs:
        for column in table.tested:
            a, b = rows[better].get(column), rows[worse].get(column)
            if not a or not b or not a["n"] or not b["n"]:
                continue
            difference, p = welch(list(a["values"].values()), list(b["values"].values()))
            comparisons.append({"better": better, "worse": worse, "column": column,
                                "source": source, "difference": difference,
                                "p": None if math.isnan(p) else p,
                                "verdict": verdict(difference, p)})
    return {"title": table.title, "rows": rows, "comparisons": comparisons}


# ------------------------------------------------------------------ running

@dataclasses.dataclass
class Settings:
    out: str
    seeds: int
    train_params: tuple[str, ...] = ()
    eval_params: tuple[str, ...] = ()


def unit_dir(settings: Settings, table: Table, name: str, seed: int) -> str:
    return os.path.join(settings.out, table.name, name, f"seed{seed}")


def eval_report(output_dir: str, e: Eval, random_init: bool) -> str:
    """The report `video_ssl.evaluate` writes last for `e` (the fused one when fused)."""
    name = e.protocol + ("_random_init" if random_init else "")
    return os.path.join(output_dir, f"eval_{name}{'_fused' if e.fuse_with else ''}.json")


def commands(settings: Settings, table: Table, unit: Unit, seed: int) -> list:
    """The unit's steps: (label, argv, the file that says it finished, estimated
    seconds)."""
    directory = unit_dir(settings, table, unit.name, seed)
    model_dir = unit_dir(settings, table, unit.base, seed) if unit.base else directory
    steps = []
    if unit.recipe:
        argv = [sys.executable, "-m", "video_ssl.train",
                f"--gin_file=gin_configs/{unit.recipe}", "--gin_file=gin_configs/demo.gin",
                f"--model_dir={directory}"]
        argv += [f"--gin_param={p}" for p in
                 (f"train.seed={seed}", *unit.params, *settings.train_params)]
        steps.append(("train", argv, os.path.join(directory, TRAINED), unit.estimate_s))
    for e in unit.evals:
        output_dir = os.path.join(directory, "evals", e.id)
        argv = [sys.executable, "-m", "video_ssl.evaluate",
                f"--gin_file=gin_configs/eval/{e.protocol}.gin",
                "--gin_file=gin_configs/eval/demo.gin",
                f"--checkpoint={os.path.join(model_dir, e.checkpoint)}".rstrip("/"),
                f"--output_dir={output_dir}"]
        if e.fuse_with:
            argv.append(f"--fuse_with={os.path.join(model_dir, e.fuse_with)}")
        if unit.base:
            argv.append(f"--random_init={seed}")
        argv += [f"--gin_param={p}" for p in (f"evaluate.seed={seed}", *settings.eval_params)]
        steps.append((e.id, argv, eval_report(output_dir, e, bool(unit.base)), e.estimate_s))
    return steps


def collect(settings: Settings, table: Table, unit: Unit, seed: int) -> dict:
    """The unit's metrics from its run's metrics.json and its evaluations' reports."""
    directory = unit_dir(settings, table, unit.name, seed)
    model_dir = unit_dir(settings, table, unit.base, seed) if unit.base else directory
    metrics = {}
    for metric, (stage, key) in unit.knn.items():
        with open(os.path.join(model_dir, stage, "metrics.json")) as f:
            metrics[metric] = json.load(f)["final"].get(key)
    for e in unit.evals:
        with open(eval_report(os.path.join(directory, "evals", e.id), e, bool(unit.base))) as f:
            report = json.load(f)
        key = PROTOCOL_METRIC[e.protocol]
        if e.fuse_with:
            metrics[f"{e.id}_fused"] = report["metrics"][key]
            for stream in report["streams"]:
                metrics[f"{e.id}_{stream['stream']}"] = stream["metrics"][key]
        else:
            metrics[e.id] = report["metrics"][key]
    return metrics


def is_done(settings, table, unit, seed) -> bool:
    return os.path.exists(os.path.join(unit_dir(settings, table, unit.name, seed), DONE))


def run_unit(settings: Settings, table: Table, unit: Unit, seed: int) -> bool:
    """Runs the unit's unfinished steps, then writes its marker; False (reported, marker
    not written) when a step fails."""
    directory = unit_dir(settings, table, unit.name, seed)
    os.makedirs(os.path.join(directory, "logs"), exist_ok=True)
    start = time.time()
    for label, argv, marker, _ in commands(settings, table, unit, seed):
        if os.path.exists(marker):
            continue
        log = os.path.join(directory, "logs", f"{label}.log")
        step_start = time.time()
        with open(log, "w") as f:
            f.write(shlex.join(argv) + "\n")
            f.flush()
            code = subprocess.call(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        print(f"  {table.name}/{unit.name} seed {seed} {label}: "
              f"{time.time() - step_start:.0f} s" + (f", FAILED (exit {code}; {log}: "
                                                     f"{last_line(log)})" if code else ""),
              flush=True)
        if code:
            return False
        if label == "train":
            write_text(marker, "")
    try:
        metrics = collect(settings, table, unit, seed)
    except (OSError, KeyError, ValueError) as error:
        print(f"  {table.name}/{unit.name} seed {seed}: FAILED reading its results "
              f"({error})", flush=True)
        return False
    write_json(os.path.join(directory, DONE),
               {"metrics": metrics, "wall_s": round(time.time() - start, 1)})
    return True


def last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][-200:] if lines else "no output"


def write_text(path: str, text: str) -> None:
    """Writes under a temporary name, then renames: never half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_json(path: str, data) -> None:
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def finished(settings: Settings, table: Table) -> dict:
    """{unit: {seed: metrics}} of the table's finished units."""
    result = {}
    for unit in table.units:
        for seed in range(settings.seeds):
            path = os.path.join(unit_dir(settings, table, unit.name, seed), DONE)
            if os.path.exists(path):
                with open(path) as f:
                    result.setdefault(unit.name, {})[str(seed)] = json.load(f)["metrics"]
    return result


# ------------------------------------------------------------------ reports

def fmt(cell) -> str:
    if not cell or cell["mean"] is None:
        return "–"
    if cell["sd"] is None:
        return f"{cell['mean']:.2f}"
    return f"{cell['mean']:.2f} ± {cell['sd']:.2f}"


def table_markdown(name: str, result: dict) -> str:
    """The table's rows (mean ± sd over seeds, n) and its verdicts, as Markdown."""
    columns = list(dict.fromkeys(c for cells in result["rows"].values() for c in cells))
    n = max((c["n"] for cells in result["rows"].values() for c in cells.values()), default=0)
    lines = [f"**{result['title']}** (`--tables {name}`; {n} seed{'s' * (n != 1)}, "
             f"mean ± sd; measured {result.get('measured', '?')})", "",
             "| row | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, cells in result["rows"].items():
        lines.append(f"| {label} | " + " | ".join(fmt(cells.get(c)) for c in columns) + " |")
    lines += ["", "| comparison | measure | difference | p (Welch) | verdict | direction "
              "from |", "|---|---|---|---|---|---|"]
    for c in result["comparisons"]:
        p = "–" if c["p"] is None else f"{c['p']:.3f}"
        lines.append(f"| {c['better']} > {c['worse']} | {c['column']} | "
                     f"{c['difference']:+.3f} | {p} | {c['verdict']} | {c['source']} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, tag: str, block: str, where: str) -> str:
    """`text` with what lies between `<!-- tag begin -->` and `<!-- tag end -->`
    replaced by `block`."""
    pattern = re.compile(rf"(<!-- {re.escape(tag)} begin -->\n).*?(<!-- {re.escape(tag)} "
                         rf"end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{where}: no '<!-- {tag} begin -->' ... '<!-- {tag} end -->' block")
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), text, count=1)


def write_reports(results: dict, results_md: str, json_path: str, command: str) -> None:
    """The JSON (all tables) and RESULTS.md's section from it."""
    write_json(json_path, results)
    body = ["# Paper trends at demo scale (benchmarks/paper_trends.py, issue 23)", "",
            "```bash", command, "```", "",
            "Generated from `" + os.path.relpath(json_path, REPO) + "`; the test and "
            "verdicts: the script's docstring (Welch's t-test over seeds, α = 0.05).", ""]
    for name in TABLES:
        if name in results:
            body.append(table_markdown(name, results[name]))
    section = "\n".join(body)
    text = open(results_md).read() if os.path.exists(results_md) else ""
    tag = "paper_trends"
    if f"<!-- {tag} begin -->" not in text:
        text = text.rstrip("\n") + f"\n\n<!-- {tag} begin -->\n<!-- {tag} end -->\n"
    write_text(results_md, replace_block(text, tag, section, results_md))


def write_docs(results: dict, seeds: int) -> list[str]:
    """Each complete table (all rows, `seeds` seeds each) into its docs page; returns the
    pages written."""
    written = []
    for name, make in TABLES.items():
        table, result = make(), results.get(name)
        complete = result and not result.get("smoke") and all(
            cell["n"] >= seeds for cells in result["rows"].values() for cell in cells.values())
        if not complete:
            print(f"--write_docs: {name} not complete with {seeds} seeds; {table.doc} kept")
            continue
        path = os.path.join(REPO, table.doc)
        text = replace_block(open(path).read(), f"paper_trends:{name}",
                             table_markdown(name, result), table.doc)
        write_text(path, text)
        written.append(table.doc)
    return written


# ------------------------------------------------------------------ entry point

SMOKE_TRAIN = ("train.global_batch_size=4", "train.epochs=1", "train.steps_per_epoch=2",
               "train.checkpoint_every_steps=2", "train.knn_every_epochs=1",
               "train.knn_batch_size=8", "train.verbose=0", "BN_GROUP_SIZE=2",
               "QUEUE_SIZE=16", "HEAD_HIDDEN_DIM=16", "EMBEDDING_DIM=8",
               "BACKBONE_KWARGS={'width_multiplier': 0.125}", "train_input.num_frames=2",
               "train_input.crop_size=32")
SMOKE_EVAL = ("evaluate.batch_size=4", "evaluate.eval_batch_size=4", "linear_probe.epochs=1",
              "linear_probe.warmup_epochs=0", "eval_input.crop_size=32",
              "train/eval_input.short_side_range=(36, 45)", "test/eval_input.crop_size=32",
              "test/eval_input.short_side=32", "test/eval_input.num_clips=2",
              "test/eval_input.eval_crops=1")


def smoke_table() -> Table:
    table = rho_table()
    # Estimates: the smoke's own times at load 3-6 (training 69 s, evaluations 22-27 s).
    units = tuple(dataclasses.replace(u, estimate_s=70.0 if u.recipe else 0.0, evals=tuple(
        dataclasses.replace(e, estimate_s=25.0) for e in u.evals))
        for u in table.units if u.name in ("moco_rho1", "random_init"))
    rows = tuple(r for r in table.rows if r.unit in ("moco_rho1", "random_init"))
    return dataclasses.replace(table, units=units, rows=rows, claims=())


def smoke_settings(out: str, build: bool) -> Settings:
    """16 train / 8 test demo videos in `out`/data (built once, when `build`)."""
    data = os.path.join(out, "data")
    if build:
        from video_ssl.data import demo  # TensorFlow: only the smoke builds data here
        demo.ensure_demo_dataset(data, num_workers=1, num_train=16, num_test=8,
                                 num_frames=20, videos_per_shard=8)
    train, test = (repr(os.path.join(data, f"{split}-*.tfrecord")) for split in ("train", "test"))
    return Settings(out, 1, SMOKE_TRAIN + (
        f"train.train_files={train}", f"train.knn_bank_files={train}",
        f"train.knn_query_files={test}"), SMOKE_EVAL + (
        f"evaluate.train_files={train}", f"evaluate.test_files={test}"))


def plan(settings: Settings, tables: list[Table]) -> tuple[list, float]:
    """The units left to run, (table, unit, seed, estimated seconds), and their total."""
    todo = []
    for table in tables:
        for seed in range(settings.seeds):
            for unit in table.units:
                if not is_done(settings, table, unit, seed):
                    seconds = sum(s[3] for s in commands(settings, table, unit, seed))
                    todo.append((table, unit, seed, seconds))
    return todo, sum(t[3] for t in todo)


def hms(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def parse_flags(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default="rho,coclr,brave",
                        help="comma-separated, of: " + ", ".join(TABLES))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per unit")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "runs",
                                                      "paper_trends"),
                        help="runs, logs and markers (resumable)")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "RESULTS.md"))
    parser.add_argument("--json", default=os.path.join(REPO, "benchmarks", "paper_trends.json"))
    parser.add_argument("--units", default=None,
                        help="comma-separated unit names: run only these of each table "
                             "(e.g. v_v,v_f,random_init)")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and budget only")
    parser.add_argument("--write_docs", action="store_true",
                        help="then write each complete table into its docs page")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny end-to-end check: ρMoCo ρ=1 vs random init, one seed, "
                             "two steps; JSON and RESULTS.md into --out")
    args = parser.parse_args(argv)
    names = [n for n in args.tables.split(",") if n]
    unknown = [n for n in names if n not in TABLES]
    if unknown or not names:
        parser.error(f"--tables={args.tables}: expected names from {', '.join(TABLES)}")
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: expected at least 1")
    known = {u.name for n in names for u in TABLES[n]().units}
    if args.units and not set(args.units.split(",")) <= known:
        parser.error(f"--units={args.units}: expected names from {', '.join(sorted(known))}")
    args.tables = names
    return args


def main(argv=None) -> int:
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        tables = [smoke_table()]
        args.results = os.path.join(args.out, "RESULTS.md")
        args.json = os.path.join(args.out, "paper_trends.json")
        settings = smoke_settings(args.out, build=not args.dry_run)
    else:
        tables = [TABLES[n]() for n in args.tables]
        if args.units:
            keep = args.units.split(",")
            tables = [dataclasses.replace(t, units=tuple(u for u in t.units if u.name in keep))
                      for t in tables]
        settings = Settings(args.out, args.seeds)
    todo, total = plan(settings, tables)
    print(f"paper_trends: {len(todo)} units to run ({', '.join(t.name for t in tables)}; "
          f"{settings.seeds} seed(s)), estimated {hms(total)} on the shared 2-core CPU; "
          f"runs in {settings.out}", flush=True)
    for table, unit, seed, seconds in todo:
        print(f"  {table.name}/{unit.name} seed {seed}: ~{seconds:.0f} s")
        if args.dry_run:
            for label, argv, _, _ in commands(settings, table, unit, seed):
                print("      " + shlex.join(argv[1:]).replace(REPO + "/", ""))
    if args.dry_run:
        return 0
    command = "python benchmarks/paper_trends.py" + (" --smoke" if args.smoke else
                                                      f" --seeds {args.seeds}")
    failed, estimated, measured = 0, 0.0, 0.0
    for index, (table, unit, seed, seconds) in enumerate(todo):
        start = time.time()
        if not run_unit(settings, table, unit, seed):
            failed += 1
            continue
        estimated, measured = estimated + seconds, measured + time.time() - start
        left = sum(t[3] for t in todo[index + 1:]) * measured / estimated
        print(f"{table.name}/{unit.name} seed {seed} done in {time.time() - start:.0f} s "
              f"(estimated {seconds:.0f}); left: ~{hms(left)} at the measured rate "
              f"({measured / estimated:.2f}x the estimates)", flush=True)
        update_reports(args, settings, tables, command)
    update_reports(args, settings, tables, command)
    if args.write_docs:
        with open(args.json) as f:
            print("docs written:", ", ".join(write_docs(json.load(f), args.seeds)) or "none")
    if failed:
        print(f"paper_trends: {failed} unit(s) failed (their logs above); re-run to retry")
    return 1 if failed else 0


def update_reports(args, settings: Settings, tables: list[Table], command: str) -> None:
    results = {}
    if os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)
    for table in tables:
        # All of the table's units, also those --units left out this time: its rows
        # and verdicts come from every finished run on disk.
        table = table if args.smoke else TABLES[table.name]()
        result = summarize(table, finished(settings, table))
        result["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
        result["smoke"] = args.smoke
        results[table.name] = result
    write_reports(results, args.results, args.json, command)


if __name__ == "__main__":
    sys.exit(main())
