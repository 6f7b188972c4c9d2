"""The README's five-minute API runs as written: every ``python`` block of its API section is
executed, in order, from a scratch folder that sees the shipped checkpoints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_api_code() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The API in five minutes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the API section lost its code blocks"
    return "\n".join(blocks)


@pytest.mark.slow
def test_readme_api_section_runs_as_written(tmp_path):
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    script = tmp_path / "readme_api.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + readme_api_code())
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "acts" / "manifest.json").is_file()
    assert (tmp_path / "audit-store" / "manifest.json").is_file()
    assert (tmp_path / "report" / "mine.html").is_file()
