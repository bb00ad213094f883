"""`snakemake --lint` is clean for the demo and paper configs, and `--report` gives a self-contained
HTML report with the metric table, the figures and their captions."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tiny_run import ROOT, VENV_BIN, env_for, real_tiny_run

# Report entries (results/<run>/...) and the caption file each one shows.
REPORTED = {
    "summary/table.md": "table.rst",
    "figures/label_efficiency.png": "label_efficiency.rst",
    "figures/teacher_vs_mos.png": "teacher_vs_mos.rst",
    "figures/training_curves.png": "training_curves.rst",
    "figures/pair_confidence.png": "pair_confidence.rst",
}


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The checkout's Snakefile run in ``cwd``, its own working directory (never the checkout's)."""
    return subprocess.run(
        [str(VENV_BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(cwd), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_for(ROOT),
        cwd=cwd,
    )


@pytest.mark.parametrize("configfile", ["config/demo.yaml", "config/config.yaml"])
def test_lint_is_clean(configfile, tmp_path):
    proc = snakemake("--lint", "--configfile", str(ROOT / configfile), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Lints for" not in out


def embedded_results(html: str) -> dict:
    """The report's `var results = {...}` blob: one entry per reported file, with its caption (HTML)
    and its content as a data URI."""
    marker = "var results = "
    start = html.index(marker, html.index('<script id="results">')) + len(marker)
    results, _ = json.JSONDecoder().raw_decode(html, start)
    return results


def caption_words(rst: Path) -> str:
    """The caption's first words as the report renders them (the first line of the .rst file)."""
    return " ".join(rst.read_text().split()[:6])


@pytest.mark.slow
def test_report_embeds_table_figures_and_captions(tmp_path_factory, tmp_path):
    run = real_tiny_run(tmp_path_factory)
    report = tmp_path / "report.html"
    proc = snakemake("--configfile", str(run.configfile), "--report", str(report), cwd=run.workdir)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    html = report.read_text()

    results = embedded_results(html)
    prefix = f"{run.results.relative_to(run.workdir)}/"
    assert {key.removeprefix(prefix) for key in results} == set(REPORTED)
    for rel, caption in REPORTED.items():
        entry = results[prefix + rel]
        assert caption_words(ROOT / "workflow/report" / caption) in " ".join(entry["caption"].split()), rel
        header, _, data = entry["data_uri"].partition(";base64,")
        content = base64.b64decode(data)
        # Self-contained: the file itself is inside the HTML, byte for byte.
        assert content == (run.results / rel).read_bytes(), rel
        if rel.endswith(".png"):
            assert header.startswith("data:image/png") and content[:8] == b"\x89PNG\r\n\x1a\n", rel
    table = base64.b64decode(results[prefix + "summary/table.md"]["data_uri"].partition(";base64,")[2]).decode()
    for row in ("Teacher (zero-shot)", "Teacher + linear calibration", "CFT-only", "LEAF (leaf)"):
        assert row in table
    # Nothing is fetched from elsewhere when the report is opened.
    assert 'src="http' not in html and "src='http" not in html
