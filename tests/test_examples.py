"""Every notebook-style script in examples/ runs as written from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_is_an_example_per_analysis():
    names = {path.stem for path in EXAMPLES}
    assert {"quickstart", "memorization_audit", "ablation_sweep", "probes", "shattering"} <= names
    assert {"embedding_geometry", "forced_choice", "attention_hypersphere"} <= names
    assert {"grid_from_store", "modularity_from_store"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_and_prints(path: Path, tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    before = set(ROOT.iterdir())
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), f"{path.name} printed nothing"
    assert set(ROOT.iterdir()) <= before, "an example wrote into the repository root"
