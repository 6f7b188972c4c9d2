"""The probekit command: fast --help, one-line errors with status 2, and each command's output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from figure_checks import figure_specs, problems

import probekit as pk
from probekit.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_does_not_import_transformer_lens():
    code = (
        "import sys\n"
        "from probekit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^    (\w+)\s", proc.stdout, flags=re.M)
    assert listed == [
        "info",
        "cache",
        "audit",
        "ablate",
        "grid",
        "modularity",
        "shatter",
        "choose",
        "report",
        "train",
        "demo",
    ]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["frobnicate"], "invalid choice"),
        (["info"], "the following arguments are required: path"),
        (["info", "/nonexistent/model"], "does not exist"),
        (
            ["cache", "x", "--data", "y", "--names", "h", "--out", "o", "--batch-size", "zero"],
            "invalid int",
        ),
        (["train", "no-such-recipe"], "is not a recipe"),
        (["demo", "--only", "no_such_analysis"], "unknown analyses"),
        (["demo", "--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, expected):
    proc = subprocess.run(
        [sys.executable, "-m", "probekit.cli", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


@pytest.fixture(scope="module")
def rnn_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rnn")
    model = pk.load(torch.nn.GRU(3, 8, batch_first=True))
    model.save(path)
    return path


def test_info_reports_format_hooks_and_fingerprint(rnn_dir, capsys):
    assert main(["info", str(rnn_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "probekit-rnn"
    assert info["family"] == "rnn" and info["kind"] == "gru" and info["hidden_size"] == 8
    assert "hook_hidden" in info["hooks"] and "hook_gate_z" in info["hooks"]
    assert info["fingerprint"] == pk.fingerprint(pk.load(rnn_dir))
    assert main(["info", str(rnn_dir)]) == 0
    text = capsys.readouterr().out
    assert "probekit-rnn" in text and info["fingerprint"] in text


def test_info_on_shipped_transformer(capsys):
    assert main(["info", str(ROOT / "checkpoints" / "cyclic-lm")]) == 0
    text = capsys.readouterr().out
    assert "(hf)" in text and "gpt2" in text
    assert "blocks.{0..1}.hook_resid_post" in text


def test_cache_then_report(rnn_dir, tmp_path, capsys):
    data = torch.randn(20, 7, 3)
    torch.save(data, tmp_path / "x.pt")
    out = tmp_path / "store"

    def cache_argv(model_dir):
        return [
            "cache", str(model_dir), "--data", str(tmp_path / "x.pt"),
            "--names", "hook_hidden", "hook_gate_z", "--out", str(out),
            "--batch-size", "8", "--dtype", "float32", "--quiet",
        ]  # fmt: skip

    argv = cache_argv(rnn_dir)
    assert main(argv) == 0
    store = pk.ActivationStore.open(out)
    _, reference = pk.load(rnn_dir).run_with_cache(
        data, names_filter=["hook_hidden", "hook_gate_z"]
    )
    for name in ("hook_hidden", "hook_gate_z"):
        assert torch.allclose(store[name], reference[name], atol=1e-6)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "hook_gate_z" in page and store.meta["model_fingerprint"] in page
    # a mismatching model is refused with status 2 and a clear line
    other = tmp_path / "other"
    pk.load(torch.nn.GRU(3, 8, batch_first=True)).save(other)
    capsys.readouterr()
    assert main(cache_argv(other)) == 2
    assert "written by model" in capsys.readouterr().err


def test_report_index_of_pages(tmp_path):
    for name in ("a_page", "b_page"):
        (tmp_path / f"{name}.html").write_text("<html></html>")
    assert main(["report", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text()
    assert 'href="a_page.html"' in index and 'href="b_page.html"' in index


@pytest.mark.slow
def test_demo_writes_an_index_linking_every_analysis(tmp_path):
    """The README's main job, end to end on the shipped checkpoint (quick mode)."""
    proc = subprocess.run(
        [sys.executable, "-m", "probekit.cli", "demo", "--out", str(tmp_path), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = (tmp_path / "index.html").read_text()
    unlabelled = {}
    for script in sorted((ROOT / "analyses").glob("*.py")):
        if not script.name.startswith("_"):
            # linked by file name, so the index works wherever --out is
            assert f'href="{script.stem}.html"' in index
            page = (tmp_path / f"{script.stem}.html").read_text()
            assert '<script src="plotly.min.js"></script>' in page  # one shared plotly.js
            for fig_id, spec in figure_specs(page).items():
                if problems(spec):
                    unlabelled[f"{script.stem}:{fig_id}"] = problems(spec)
    assert (tmp_path / "plotly.min.js").is_file()
    assert unlabelled == {}, unlabelled  # every axis and colour bar titled, no "trace N"
    # every study states its verdict, and the demo says what each study cost
    verdicts = re.findall(r"class=\"note\">(reproduced|partly|not): ", index)
    assert len(verdicts) == len(
        [s for s in (ROOT / "analyses").glob("*.py") if not s.name.startswith("_")]
    ), index
    assert "[demo]   total" in proc.stdout


def test_analysis_modules_import_without_transformer_lens():
    """The RNN-only paths (modularity, grid) and the others must not pay for transformer_lens."""
    code = (
        "import sys, importlib\n"
        "for m in ('probes', 'memorization', 'ablation', 'modularity', 'grid', 'edit',"
        " 'shattering'):\n"
        "    importlib.import_module('probekit.' + m)\n"
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_scoring_a_hugging_face_checkpoint_needs_no_transformer_lens():
    """runner(path) of a Hugging Face directory scores and decodes with the plain model: the
    memorization studies do not pay TransformerLens's import."""
    code = (
        "import sys, torch\n"
        "from probekit.models.runner import runner\n"
        "r = runner('checkpoints/canary-lm')\n"
        "out = r.generate(torch.zeros(2, 4, dtype=torch.long), 3)\n"
        "assert out.shape == (2, 3), out.shape\n"
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _toy_study(path, name, body=""):
    path.write_text(
        "from pathlib import Path\n"
        "import os\n"
        f"def run(out, quick=False):\n"
        f"    {body or 'pass'}\n"
        f"    page = Path(out) / '{name}.html'\n"
        f"    page.write_text('<html>{name} ' + str(os.getpid()) + '</html>')\n"
        f"    return {{'title': '{name}', 'path': str(page), 'verdict': 'partly',"
        f" 'description': 'toy'}}\n"
    )


@pytest.mark.parametrize("jobs", [1, 2])
def test_demo_runs_studies_in_parallel_and_indexes_them_in_order(tmp_path, monkeypatch, jobs):
    """--jobs 2 runs each study in its own process; the index lists them alphabetically either
    way, and the times of the run are kept for the next run's longest-first order."""
    import argparse

    from probekit.commands import demo

    studies = tmp_path / "analyses"
    studies.mkdir()
    for name in ("b_two", "a_one", "c_three"):
        _toy_study(studies / f"{name}.py", name)
    monkeypatch.setattr(demo, "analyses_dir", lambda: studies)
    out = tmp_path / "report"
    args = argparse.Namespace(out=str(out), only=None, quick=False, threads=1, jobs=jobs)
    assert demo._run(args) == 0
    index = (out / "index.html").read_text()
    hrefs = re.findall(r'href="([a-z_]+)\.html"', index)
    assert hrefs == ["a_one", "b_two", "c_three"]
    times = json.loads((out / "_cache" / "demo_times.json").read_text())
    assert sorted(times) == ["a_one", "b_two", "c_three"]
    pids = {(out / f"{n}.html").read_text().split()[1].split("<")[0] for n in times}
    if jobs == 1:
        assert pids == {str(os.getpid())}  # in this process
    else:
        assert str(os.getpid()) not in pids  # in worker processes
    # the next run starts the slowest study first
    times["c_three"] = 99.0
    (out / "_cache" / "demo_times.json").write_text(json.dumps(times))
    order = demo._schedule(sorted(studies.glob("*.py")), out, "")
    assert order[0].stem == "c_three"
    # a run of one study keeps the others' times
    demo._run(argparse.Namespace(out=str(out), only=["a_one"], quick=False, threads=1, jobs=jobs))
    kept = json.loads((out / "_cache" / "demo_times.json").read_text())
    assert sorted(kept) == ["a_one", "b_two", "c_three"] and kept["c_three"] == 99.0


def test_demo_stops_on_a_failing_study_without_writing_an_index(tmp_path, monkeypatch):
    import argparse

    from probekit.commands import demo

    studies = tmp_path / "analyses"
    studies.mkdir()
    _toy_study(studies / "a_bad.py", "a_bad", body="raise RuntimeError('study a_bad broke')")
    _toy_study(studies / "b_ok.py", "b_ok")
    monkeypatch.setattr(demo, "analyses_dir", lambda: studies)
    out = tmp_path / "report"
    args = argparse.Namespace(out=str(out), only=None, quick=False, threads=1, jobs=2)
    with pytest.raises(RuntimeError, match="study a_bad broke"):
        demo._run(args)
    assert not (out / "index.html").exists()
