"""Open a written report in headless Chromium from disk, offline, and check what a reader sees.

The screenshot goes to ``$PROBEKIT_ARTIFACTS/report_screenshot.png`` when that variable is set,
else to ``tests/artifacts/report_screenshot.png``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from browser import Chromium, Page, find_chromium

import probekit.report as report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        # CI sets PROBEKIT_REQUIRE_BROWSER=1 so a missing browser fails there instead
        find_chromium() is None and os.environ.get("PROBEKIT_REQUIRE_BROWSER") != "1",
        reason="Chromium not installed (/usr/bin/chromium or chromium on PATH); "
        "apt-get install chromium to run the browser tests",
    ),
]

SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
IMG_PAYLOAD = '<img src=x onerror="window.__pwned=1">'


class Result:
    """A result in the shape every analysis returns."""

    def __init__(self, title: str, figs: list[go.Figure], frame: pd.DataFrame | None, **summary):
        self.title = title
        self.description = f"Plain text from the analysis, with {IMG_PAYLOAD} in it."
        self.frame = frame
        self.summary = {SCRIPT_PAYLOAD: IMG_PAYLOAD, **summary}
        self._figs = figs

    def figures(self) -> list[go.Figure]:
        return self._figs


def artifacts_dir() -> Path:
    env = os.environ.get("PROBEKIT_ARTIFACTS")
    return Path(env) if env else Path(__file__).parent / "artifacts"


def payload_report(path: Path) -> Path:
    """A report with a scatter, a heatmap and a bar chart and the payloads in every slot."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 2))
    scatter = go.Figure(
        go.Scatter(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            name=SCRIPT_PAYLOAD,
            hovertext=[IMG_PAYLOAD] * 40,
        )
    )
    scatter.add_trace(go.Scatter(x=[0], y=[0], mode="text", text=[IMG_PAYLOAD], name=IMG_PAYLOAD))
    scatter.update_layout(
        title=SCRIPT_PAYLOAD,
        xaxis_title=IMG_PAYLOAD,
        yaxis_title="component 2",
        annotations=[{"x": 1, "y": 1, "text": SCRIPT_PAYLOAD}],
    )
    heatmap = go.Figure(
        go.Heatmap(
            z=rng.random((4, 5)),
            x=[SCRIPT_PAYLOAD, "L1", "L2", "L3", "L4"],
            y=[IMG_PAYLOAD, "h1", "h2", "h3"],
            colorbar={"title": {"text": IMG_PAYLOAD}},
        )
    )
    heatmap.update_layout(title=IMG_PAYLOAD)
    bar = go.Figure(go.Bar(x=[SCRIPT_PAYLOAD, "mlp", "attn"], y=[0.3, 0.5, 0.2], name="drop"))
    bar.update_layout(title="ablation: accuracy drop per component")
    frame = pd.DataFrame(
        {
            "token": [SCRIPT_PAYLOAD, IMG_PAYLOAD] + [f"tok{i}" for i in range(248)],
            IMG_PAYLOAD: np.linspace(0, 1, 250),
        }
    )
    results = [
        Result(SCRIPT_PAYLOAD, [scatter, heatmap], frame, accuracy=0.987654),
        Result(IMG_PAYLOAD, [bar], None, n_heads=np.int64(12)),
    ]
    return report.write(results, path, title="browser check")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    with Chromium(window_size=(1280, 900), timeout=20) as browser:
        yield browser


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return payload_report(tmp_path_factory.mktemp("report") / "page.html")


def open_report(chromium: Chromium, path: Path) -> Page:
    page = chromium.new_page(offline=True)
    page.goto(path.resolve().as_uri())
    page.wait_for("document.documentElement.getAttribute('data-pk-rendered')", timeout=15)
    return page


def test_report_renders_offline_from_file_without_running_payloads(
    chromium: Chromium, page_file: Path
) -> None:
    started = time.monotonic()
    page = open_report(chromium, page_file)

    assert page.evaluate("document.documentElement.getAttribute('data-pk-rendered')") == "3"
    per_figure = page.evaluate(
        "Array.from(document.querySelectorAll('div.pk-figure'))"
        ".map(d => d.querySelectorAll('svg.main-svg').length)"
    )
    assert len(per_figure) == 3 and all(n > 0 for n in per_figure), per_figure
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('main img, main iframe').length") == 0
    assert page.console_errors == [], page.console_errors
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests

    # The payloads are on screen as text, exactly as written.
    figure_text = page.evaluate(
        "Array.from(document.querySelectorAll("
        "'.gtitle, .legendtext, .annotation-text, .xtick text, .ytick text, .xtitle, "
        ".textpoint text, .cbtitle text')).map(e => e.textContent)"
    )
    for expected in (SCRIPT_PAYLOAD, IMG_PAYLOAD):
        assert figure_text.count(expected) >= 3, figure_text
    cells = page.evaluate(
        "Array.from(document.querySelectorAll('table.data td, table.data th, h2, "
        "p.description')).map(e => e.textContent)"
    )
    assert SCRIPT_PAYLOAD in cells and IMG_PAYLOAD in cells
    assert page.evaluate("document.querySelector('p.note').textContent").startswith(
        "showing 200 of 250 rows"
    )

    shot = page.screenshot(artifacts_dir() / "report_screenshot.png", full_page=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height > 2000  # three figures and the tables, not a blank page
    assert time.monotonic() - started < 20


def test_csv_download_link_gives_the_full_table(
    chromium: Chromium, page_file: Path, tmp_path: Path
) -> None:
    page = open_report(chromium, page_file)
    chromium.send(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(tmp_path), "eventsEnabled": True},
    )
    page.evaluate("document.querySelector('a[download]').click()")
    deadline = time.monotonic() + 10
    while not any(
        e["method"] == "Browser.downloadProgress" and e["params"]["state"] == "completed"
        for e in chromium.events
    ):
        assert time.monotonic() < deadline, f"the CSV download did not complete: {chromium.events}"
        chromium.pump(0.1)
    csv = tmp_path / "01-script-window-pwned-1-script.csv"
    table = pd.read_csv(io.StringIO(csv.read_text(encoding="utf-8")))
    assert len(table) == 250
    assert table["token"][0] == SCRIPT_PAYLOAD and table.columns[1] == IMG_PAYLOAD
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_content_security_policy_blocks_markup_that_slipped_through(
    chromium: Chromium, page_file: Path, tmp_path: Path
) -> None:
    # Defence in depth: even if escaping ever failed, the page's CSP refuses to run the result.
    tampered = page_file.read_text(encoding="utf-8").replace(
        "<h1>", f"<h1>{SCRIPT_PAYLOAD}{IMG_PAYLOAD}", 1
    )
    path = tmp_path / "tampered.html"
    path.write_text(tampered, encoding="utf-8")
    shared = page_file.parent / "plotly.min.js"
    if shared.exists():
        (tmp_path / "plotly.min.js").write_bytes(shared.read_bytes())
    page = open_report(chromium, path)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.documentElement.getAttribute('data-pk-rendered')") == "3"
    blocked = [e for e in page.console_errors if "Content Security Policy" in e]
    assert len(blocked) >= 2, page.console_errors


def test_a_self_contained_page_renders_alone(chromium: Chromium, tmp_path: Path) -> None:
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="line"))
    fig.update_layout(title="one figure", xaxis_title="x (units)", yaxis_title="y (units)")
    result = Result("alone", [fig], None)
    path = report.write([result], tmp_path / "alone.html", self_contained=True)
    assert not (tmp_path / "plotly.min.js").exists()
    page = open_report(chromium, path)
    assert page.evaluate("document.documentElement.getAttribute('data-pk-rendered')") == "1"
    assert page.console_errors == [], page.console_errors
