"""README.md and docs/: the README stays short and keeps its two commands word for word,
every relative link resolves (to a file or folder of the repository, and a `#anchor` to
a heading of the linked page, slugged as GitHub does), every repository path named in
backticks exists, and every docs page is linked from the README."""
from __future__ import annotations

import glob
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
MAX_README_LINES = 200
# The main job: install, then pretrain on the embedded demo data.
MAIN_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
                "python -m video_ssl.train --gin_file=gin_configs/moco_rho3.gin "
                "--gin_file=gin_configs/demo.gin --model_dir=runs/demo")

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_REPO_PATH = re.compile(
    r"`((?:video_ssl|tfrecords_tools|benchmarks|tests|gin_configs|docs)/[^`\s*{}<>]*)`")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped (letters,
    digits, '_' and '-' kept), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated slug gets -1, -2, ..."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose(_read(path)).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: str) -> list[str]:
    """Relative links of a Markdown file that name no existing file or heading."""
    problems = []
    for target in _LINK.findall(_CODE_SPAN.sub("``", _prose(_read(path)))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        if not linked.startswith(REPO + os.sep) or not os.path.exists(linked):
            problems.append(f"{target}: no such file")
        elif anchor and (not linked.endswith(".md") or anchor not in anchors(linked)):
            problems.append(f"{target}: no heading #{anchor} in {os.path.relpath(linked, REPO)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, f"{os.path.relpath(page, REPO)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_repository_path_in_backticks_exists(page):
    missing = [p for p in _REPO_PATH.findall(_read(page))
               if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"{os.path.relpath(page, REPO)} names missing paths: {missing}"


def test_readme_is_short_and_links_every_docs_page():
    text = _read(README)
    assert len(text.splitlines()) <= MAX_README_LINES
    linked = {os.path.normpath(os.path.join(REPO, t.partition("#")[0]))
              for t in _LINK.findall(text)}
    assert not [p for p in PAGES[1:] if p not in linked]


def test_readme_keeps_its_two_commands_word_for_word():
    lines = _read(README).splitlines()
    ci = [line for line in _read(os.path.join(REPO, ".ci", "run")).splitlines()
          if "pytest" in line and not line.startswith("#")]
    assert len(ci) == 1, ".ci/run: expected one line that runs pytest"
    assert ci[0] in lines, ".ci/run's test command is not a line of README.md"
    assert MAIN_COMMAND in lines, "README.md: the main command changed"


def test_slugs_and_link_check(tmp_path, monkeypatch):
    assert slug("Two-stream fusion (CoCLR †)") == "two-stream-fusion-coclr-"
    assert slug("Audio encoders (BraVe's f_b)") == "audio-encoders-braves-f_b"
    assert slug("ρ recipes: ρMoCo, `x.gin`") == "ρ-recipes-ρmoco-xgin"
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    (tmp_path / "a.md").write_text("# Title\n## Part\n## Part\n```\n# not a heading\n```\n"
                                   "[ok](#part-1) [ok](a.md#title) [web](https://x.org/y)\n"
                                   "[bad](#not-a-heading) [bad](b.md) `[not](a link)`\n",
                                   encoding="utf-8")
    assert broken_links(str(tmp_path / "a.md")) == [
        "#not-a-heading: no heading #not-a-heading in a.md", "b.md: no such file"]


def python_blocks(path: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", _read(path), re.S)


def test_extending_page_builds_trains_and_exports_a_method_in_python(tmp_path, monkeypatch):
    """docs/extending.md's example, run as written: a method built, compiled, trained on
    make_view_dataset and exported without gin."""
    import tensorflow as tf
    (block,) = python_blocks(os.path.join(REPO, "docs", "extending.md"))
    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    tf.config.run_functions_eagerly(True)  # the steps untraced: seconds, the same code
    try:
        exec(compile(block, "docs/extending.md", "exec"), {})
    finally:
        tf.config.run_functions_eagerly(False)
    assert (tmp_path / "export" / "saved_model.pb").exists()
