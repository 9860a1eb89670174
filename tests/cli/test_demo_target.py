"""``make demo`` writes only untracked output; ``make publish-demo`` is what refreshes ``reports/demo``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from medrec.demo import PAGE1_PNG, PAGE1_WIDTH_PX, publish_report

REPO = Path(__file__).resolve().parents[2]


def _recipe(target: str) -> list[list[str]]:
    """The commands of ``target`` in the Makefile, split into words (variables left as written)."""
    lines = (REPO / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(":")[0].strip() == target and ":" in line)
    commands = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        commands.append(shlex.split(line.strip()))
    assert commands, f"target {target} has no recipe"
    return commands


def _demo_out(words: list[str]) -> str:
    for flag in ("-o", "--out"):
        if flag in words:
            return words[words.index(flag) + 1]
    return "medrec-demo"  # medrec demo's default


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)


@pytest.fixture
def git_checkout():
    if shutil.which("git") is None or _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout")


def test_make_demo_writes_only_into_an_ignored_folder(git_checkout):
    demos = [words for words in _recipe("demo") if "demo" in words and any(w.endswith("medrec") for w in words)]
    assert len(demos) == 1, _recipe("demo")
    words = demos[0]
    assert not any(word.startswith("--publish") for word in words), words
    out = _demo_out(words)
    # every file the demo writes lies under its folder: the folder must be ignored, and hold nothing tracked
    probe = f"{out}/run/evaluation/report.html"
    assert _git("check-ignore", "-q", probe).returncode == 0, f"{out}/ is not in .gitignore"
    assert _git("ls-files", "--", out).stdout == ""


def test_make_publish_demo_refreshes_the_committed_report():
    publishes = [words for words in _recipe("publish-demo") if "--publish" in words]
    assert len(publishes) == 1
    words = publishes[0]
    assert words[words.index("--publish") + 1] == "reports/demo"
    phony = next(line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith(".PHONY"))
    assert "publish-demo" in phony.split()


def test_publishing_draws_the_first_page_of_the_report(tmp_path):
    pytest.importorskip("pypdfium2")
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    report = tmp_path / "evaluation"
    (report / "figures").mkdir(parents=True)
    pdf = canvas.Canvas(str(report / "report.pdf"), pagesize=A4)
    pdf.setFillColorRGB(0, 0, 0)
    pdf.rect(0, A4[1] / 2, A4[0], A4[1] / 2, fill=1)  # the top half of page 1 black
    pdf.showPage()
    pdf.save()
    (report / "report.html").write_text("<html></html>")
    (report / "report.json").write_text("{}")
    (report / "figures" / "roc.png").write_bytes(b"png")
    published = tmp_path / "published"
    (published / "figures").mkdir(parents=True)
    (published / "figures" / "old.png").write_bytes(b"stale")

    publish_report(report, published)

    from PIL import Image

    with Image.open(published / PAGE1_PNG) as image:
        assert image.size == (PAGE1_WIDTH_PX, round(PAGE1_WIDTH_PX * A4[1] / A4[0]))
        assert image.getpixel((PAGE1_WIDTH_PX // 2, 10)) == (0, 0, 0)  # drawn from the PDF, not copied
        assert image.getpixel((PAGE1_WIDTH_PX // 2, image.size[1] - 10)) == (255, 255, 255)
    assert sorted(p.name for p in (published / "figures").iterdir()) == ["roc.png"]
