"""Tests for probekit.report: one offline page per call, escaped data, atomic, deterministic."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

import probekit.report as report

PAYLOAD = "<script>alert(1)</script>"
PAYLOAD_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
IMG_PAYLOAD = '<img src=x onerror="alert(2)">'

# The only elements a page may contain; an injected <img>/<svg>/<iframe> would show up here.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "footer", "nav", "section",
    "h1", "h2", "h3", "p", "span", "ol", "ul", "li", "a", "div", "script",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip


@dataclass
class FakeResult:
    """The result protocol every analysis follows: .frame, .summary, .figures()."""

    title: str = "result"
    frame: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    figs: list[go.Figure] = field(default_factory=list)
    description: str | None = None

    def figures(self) -> list[go.Figure]:
        return self.figs


class PageParser(HTMLParser):
    """Collects what a browser would see: tags, scripts, links, and visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style", "title"):
            self._in.append(tag)
            if tag == "script":
                self.scripts.append((dict(attrs), ""))

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif not self._in or self._in[-1] == "title":
            self.text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def figure_specs(parser: PageParser) -> dict[str, dict[str, Any]]:
    return {
        attrs["id"]: json.loads(text)
        for attrs, text in parser.scripts
        if attrs.get("type") == "application/json"
    }


def scatter(title: str = "scatter", name: str = "trace") -> go.Figure:
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.5, 0.25, 0.125], mode="markers", name=name))
    fig.update_layout(title=title)
    return fig


def payload_result() -> FakeResult:
    """A result with the payload in every place a data string can reach."""
    fig = go.Figure(
        go.Scatter(
            x=[PAYLOAD, "b"],
            y=[1, 2],
            name=PAYLOAD,
            text=[IMG_PAYLOAD, "t"],
            hovertext=[PAYLOAD, "h"],
            customdata=[PAYLOAD, "c"],
            hovertemplate="%{x}<br>%{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title=PAYLOAD,
        xaxis_title=IMG_PAYLOAD,
        annotations=[{"x": "b", "y": 2, "text": PAYLOAD}],
    )
    heat = go.Figure(go.Heatmap(z=np.eye(2), x=[PAYLOAD, "q"], y=[IMG_PAYLOAD, "r"]))
    frame = pd.DataFrame({PAYLOAD: [PAYLOAD, IMG_PAYLOAD], "score": [0.5, 1.5]})
    return FakeResult(
        title=PAYLOAD,
        frame=frame,
        summary={PAYLOAD: PAYLOAD, "nested": {PAYLOAD: IMG_PAYLOAD}},
        figs=[fig, heat],
        description=f"notes with {PAYLOAD}",
    )


# ----------------------------------------------------------------------------- page structure


def test_plotlyjs_embedded_once_and_each_figure_in_its_own_div(tmp_path: Path) -> None:
    results = [
        FakeResult(title=f"analysis {i}", figs=[scatter(f"fig {i}.{j}") for j in range(i + 2)])
        for i in range(3)
    ]
    path = report.write(results, tmp_path / "page.html", self_contained=True)
    page = path.read_text(encoding="utf-8")

    bundle_head = get_plotlyjs()[:500]
    assert page.count(bundle_head) == 1
    assert not (tmp_path / "plotly.min.js").exists()
    parser = parse(page)
    executable = [text for attrs, text in parser.scripts if attrs.get("type") is None]
    assert len(executable) == 2  # plotly.js and the fixed bootstrap, nothing else
    assert executable[0] == get_plotlyjs()

    divs = [attrs for tag, attrs in parser.tags if tag == "div" and "data-spec" in attrs]
    specs = figure_specs(parser)
    assert len(divs) == 2 + 3 + 4
    assert len({d["id"] for d in divs}) == len(divs)
    assert {d["data-spec"] for d in divs} == set(specs)
    titles = [spec["layout"]["title"]["text"] for spec in specs.values()]
    assert titles == [f"fig {i}.{j}" for i in range(3) for j in range(i + 2)]


def test_table_of_contents_only_for_several_sections(tmp_path: Path) -> None:
    one = report.render(FakeResult(title="only one", summary={"x": 1}))
    assert "<nav" not in one
    assert "<title>only one</title>" in one

    several = parse(report.render([FakeResult(title="A"), FakeResult(title="B")]))
    links = [attrs["href"] for tag, attrs in several.tags if tag == "a"]
    sections = [attrs["id"] for tag, attrs in several.tags if tag == "section"]
    assert links == ["#section-1", "#section-2"] == [f"#{s}" for s in sections]


def test_result_without_frame_or_figures_embeds_no_script(tmp_path: Path) -> None:
    path = report.write(
        FakeResult(title="bare", frame=None, summary={"n_units": 64}), tmp_path / "bare.html"
    )
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "<h2>bare</h2>" in page and "n_units" in page and ">64<" in page


def test_render_is_deterministic(tmp_path: Path) -> None:
    def results() -> list[FakeResult]:
        frame = pd.DataFrame({"unit": range(5), "score": np.linspace(0, 1, 5)})
        return [payload_result(), FakeResult(title="x", frame=frame, figs=[scatter()])]

    first = report.write(results(), tmp_path / "a.html").read_bytes()
    second = report.write(results(), tmp_path / "b.html").read_bytes()
    assert first == second


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.123456, "0.1235"),
        (np.float32(2 / 3), "0.6667"),
        (123456.789, "1.235e+05"),
        (np.int64(42), "42"),
        (10**12, "1000000000000"),
        (True, "True"),
        (np.bool_(False), "False"),
        (float("nan"), "NaN"),
        (None, "None"),
        ("text", "text"),
        ([1, 2.55555, "a"], "[1, 2.556, a]"),
        (np.array([0.5, 1 / 3]), "[0.5, 0.3333]"),
        (list(range(25)), "[" + ", ".join(map(str, range(20))) + ", … (25 items)]"),
        ({"a": 1.0 / 7}, "{a: 0.1429}"),
    ],
)
def test_format_value(value: Any, expected: str) -> None:
    assert report.format_value(value) == expected


def test_summary_values_formatted_and_nested_keys_dotted() -> None:
    result = FakeResult(
        summary={
            "accuracy": np.float64(0.987654321),
            "n_units": np.int64(512),
            "per_layer": {"0": 0.5, "1": {"attn": 1 / 3}},
            "heads": [3, 7],
        }
    )
    parser = parse(report.render(result))
    text = "".join(parser.text)
    for shown in ("accuracy", "0.9877", "n_units", "512", "per_layer.0", "0.5"):
        assert shown in text
    assert "per_layer.1.attn" in text and "0.3333" in text
    assert "[3, 7]" in text
    assert "0.987654321" not in text


def test_long_frame_capped_with_full_csv_download() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"sequence": [f"seq {i}" for i in range(250)], "loss": rng.random(250) * 10}
    )
    page = report.render(FakeResult(title="audit", frame=frame))
    assert "showing 200 of 250 rows" in page
    body = page.split('<table class="data">', 1)[1].split("<tbody>", 1)[1].split("</tbody>")[0]
    assert body.count("<tr>") == 200
    assert "seq 199" in body and "seq 200" not in body
    assert f"{frame['loss'][0]:.4g}" in body

    link = next(attrs for tag, attrs in parse(page).tags if tag == "a" and "download" in attrs)
    assert link["download"] == "01-audit.csv"
    prefix = "data:text/csv;charset=utf-8;base64,"
    assert link["href"].startswith(prefix)
    csv = base64.b64decode(link["href"][len(prefix) :]).decode("utf-8")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(csv)), frame)


def test_csv_above_size_limit_is_not_embedded() -> None:
    frame = pd.DataFrame({"x": np.arange(1000)})
    page = report.render(FakeResult(frame=frame), max_rows=10, max_csv_bytes=100)
    assert "showing 10 of 1000 rows" in page
    assert "data:text/csv" not in page
    assert "too large to embed" in page


def test_frame_with_meaningful_index_shows_it() -> None:
    frame = pd.DataFrame({"score": [0.25, 0.75]}, index=pd.Index(["L0", "L1"], name="layer"))
    page = report.render(FakeResult(frame=frame))
    assert "<th>layer</th><th>score</th>" in page
    assert '<td class="text">L1</td><td class="num">0.75</td>' in page


def test_empty_frame_is_reported_as_empty() -> None:
    page = report.render(FakeResult(frame=pd.DataFrame({"a": [], "b": []})))
    assert "empty table (0 rows)" in page
    assert "<th>a</th><th>b</th>" in page


# ----------------------------------------------------------------------------- escaping


def test_payloads_in_every_data_string_are_escaped() -> None:
    page = report.render([payload_result(), FakeResult(title=IMG_PAYLOAD, figs=[scatter()])])

    # The raw payload appears nowhere: not in HTML, not in any script or JSON block.
    assert PAYLOAD not in page
    assert IMG_PAYLOAD not in page
    assert "<img" not in page
    assert PAYLOAD_ESCAPED in page

    parser = parse(page)
    assert {tag for tag, _ in parser.tags} <= PAGE_TAGS
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
    # Only plotly.js and the bootstrap execute; figure data sits in inert JSON blocks.
    executable = [text for attrs, text in parser.scripts if attrs.get("type") is None]
    assert executable[0] == get_plotlyjs() and "alert" not in executable[1]
    for attrs, text in parser.scripts:
        assert attrs.get("type") in (None, "application/json")
        if attrs.get("type") == "application/json":
            assert "<" not in text and ">" not in text

    # As text, the payload reads back exactly: in headings, TOC, description, summary, table.
    text = "".join(parser.text)
    assert text.count(PAYLOAD) >= 6  # TOC, h2, description, summary key + value, column, cell
    assert IMG_PAYLOAD in text


def test_figure_strings_escaped_but_author_templates_kept() -> None:
    specs = figure_specs(parse(report.render(payload_result())))
    scatter_spec, heat_spec = specs["pk-s1-fig1-spec"], specs["pk-s1-fig2-spec"]
    trace, layout = scatter_spec["data"][0], scatter_spec["layout"]
    img_escaped = IMG_PAYLOAD.replace("<", "&lt;").replace(">", "&gt;")

    assert trace["name"] == PAYLOAD_ESCAPED
    assert trace["x"][0] == PAYLOAD_ESCAPED
    assert trace["text"][0] == img_escaped
    assert trace["hovertext"][0] == PAYLOAD_ESCAPED
    assert trace["customdata"][0] == PAYLOAD_ESCAPED
    assert layout["title"]["text"] == PAYLOAD_ESCAPED
    assert layout["xaxis"]["title"]["text"] == img_escaped
    assert layout["annotations"][0]["text"] == PAYLOAD_ESCAPED
    assert heat_spec["data"][0]["x"][0] == PAYLOAD_ESCAPED
    assert heat_spec["data"][0]["y"][0] == img_escaped
    # The analysis's own hover template keeps its markup.
    assert trace["hovertemplate"] == "%{x}<br>%{customdata}<extra></extra>"


def test_ampersand_in_figure_text_round_trips_through_plotly_entities() -> None:
    # plotly.js decodes &amp; &lt; &gt; once, so escaping & keeps "&lt;" in data literal.
    fig = scatter(title="AT&T &lt;literal&gt;")
    spec = figure_specs(parse(report.render(FakeResult(figs=[fig]))))["pk-s1-fig1-spec"]
    assert spec["layout"]["title"]["text"] == "AT&amp;T &amp;lt;literal&amp;gt;"


def test_script_closing_sequence_cannot_end_a_json_block() -> None:
    fig = scatter(title="</script><script>alert(1)</script>", name="\u2028</SCRIPT >")
    page = report.render(FakeResult(figs=[fig]))
    assert re.search(r"</script", page, re.IGNORECASE).start() > page.index("pk-s1-fig1-spec")
    specs = figure_specs(parse(page))
    assert specs["pk-s1-fig1-spec"]["layout"]["title"]["text"].startswith("&lt;/script&gt;")


# ----------------------------------------------------------------------------- writing


def test_write_is_atomic_when_the_write_fails_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "reports" / "page.html"
    report.write(FakeResult(title="old", summary={"v": 1}), target)
    old = target.read_bytes()

    def half_write(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_write)
    with pytest.raises(OSError, match="disk full"):
        report.write(FakeResult(title="new", summary={"v": 2}, figs=[scatter()]), target)
    monkeypatch.undo()

    assert target.read_bytes() == old
    assert sorted(p.name for p in target.parent.iterdir()) == ["page.html"]


def test_write_creates_parent_folders_and_returns_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "page.html"
    assert report.write(FakeResult(), str(target)) == target
    assert target.is_file()


def test_index_page_links_relative_and_escaped(tmp_path: Path) -> None:
    index = tmp_path / "report" / "index.html"
    pages = [
        ("Memorization audit", "audit.html", "which training sequences the model recites"),
        {"title": PAYLOAD, "path": "sub dir/page #1.html", "description": IMG_PAYLOAD},
        (IMG_PAYLOAD, tmp_path / "report" / "grid" / "grid.html"),
        ("odd", "javascript:alert(1)"),
    ]
    path = report.write_index(pages, index, title=f"suite {PAYLOAD}")
    page = path.read_text(encoding="utf-8")
    assert PAYLOAD not in page and "<img" not in page and "<script" not in page

    parser = parse(page)
    assert {tag for tag, _ in parser.tags} <= PAGE_TAGS
    hrefs = [attrs["href"] for tag, attrs in parser.tags if tag == "a"]
    assert hrefs == [
        "audit.html",
        "sub%20dir/page%20%231.html",
        "grid/grid.html",
        "javascript%3Aalert%281%29",  # a path, not a URL: the scheme cannot take effect
    ]
    text = "".join(parser.text)
    assert "Memorization audit" in text and "which training sequences" in text
    assert f"suite {PAYLOAD}" in text and IMG_PAYLOAD in text


def test_index_rejects_malformed_entries(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"pages\[0\]"):
        report.write_index([{"name": "no title"}], tmp_path / "index.html")
    with pytest.raises(ValueError, match="empty"):
        report.write_index([], tmp_path / "index.html")


# ----------------------------------------------------------------------------- bad input


class NoSummary:
    frame = None

    def figures(self) -> list[go.Figure]:
        return []


def test_result_missing_summary_raises_type_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"results is a NoSummary, which has no attribute 'summary'"
    ):
        report.write(NoSummary(), tmp_path / "x.html")
    with pytest.raises(TypeError, match=r"results\[1\] is a NoSummary.*'summary'"):
        report.write([FakeResult(), NoSummary()], tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (FakeResult(frame=[1, 2]), r"results\.frame must be a pandas DataFrame or None, got list"),
        (FakeResult(summary=[1]), r"results\.summary must be a dict, got list"),
        (FakeResult(figs=["fig"]), r"results\.figures\(\)\[0\] must be a Plotly figure"),
    ],
)
def test_wrong_attribute_types_raise_type_error(result: FakeResult, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        report.render(result)


def test_empty_results_raise_value_error() -> None:
    with pytest.raises(ValueError, match="results is empty"):
        report.render([])


def test_written_page_gets_umask_modes_not_tempfile_0600(tmp_path: Path) -> None:
    """Pages are written through a temp file (mkstemp makes 0600); the result must be readable."""
    old = os.umask(0o022)
    try:
        path = report.write(FakeResult(), tmp_path / "page.html")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_hand_assembled_result_renders_like_any_result(tmp_path: Path) -> None:
    """report.Result is the ready-made result a study assembles from pieces."""
    result = report.Result(
        frame=pd.DataFrame({"layer": [0, 1], "drop": [0.5, 0.25]}),
        summary={"clean": 0.98},
        figs=[go.Figure(go.Bar(x=[0, 1], y=[0.5, 0.25]))],
        title="Layer ablations",
        description="drop = clean - ablated",
    )
    text = report.write(result, tmp_path / "page.html").read_text()
    assert "Layer ablations" in text and "drop = clean - ablated" in text
    assert "0.98" in text and text.count('class="figure"') + text.count("Plotly.newPlot") >= 1
    assert result.figures() == result.figs and result.figures() is not result.figs


def test_bidi_and_zero_width_characters_are_shown_not_obeyed(tmp_path):
    import pandas as pd

    from probekit import report

    text = "safe\u202etxt.exe hidden\u200bword"
    result = report.Result(frame=pd.DataFrame({"text": [text]}), summary={"t": text}, title=text)
    page = report.render(result, "t")
    assert "\u202e" not in page and "\u200b" not in page
    assert "[U+202E]" in page and "[U+200B]" in page
    assert "unicode-bidi: isolate" in page


def test_pages_of_a_folder_share_one_plotlyjs_file(tmp_path: Path) -> None:
    results = [FakeResult(title="a", figs=[scatter("f")])]
    first = report.write(results, tmp_path / "one.html")
    second = report.write(results, tmp_path / "two.html")
    shared = tmp_path / "plotly.min.js"
    assert shared.read_text(encoding="utf-8") == get_plotlyjs()
    for path in (first, second):
        page = path.read_text(encoding="utf-8")
        assert get_plotlyjs()[:500] not in page
        assert '<script src="plotly.min.js"></script>' in page
        parser = parse(page)
        inline = [
            text
            for attrs, text in parser.scripts
            if attrs.get("src") is None and not attrs.get("type")
        ]
        assert len(inline) == 1  # the fixed bootstrap only
    assert len(first.read_bytes()) < 200_000


def test_results_render_themselves_in_jupyter() -> None:
    import inspect

    import plotly.graph_objects as go

    import probekit as pk

    fig = go.Figure(go.Bar(x=["a"], y=[1], name="bar"))
    result = report.Result(
        frame=pd.DataFrame({"x": [1.5]}), summary={"auc": 0.75}, figs=[fig], title="mine"
    )
    html_text = result._repr_html_()
    assert "mine" in html_text and "0.75" in html_text and "plotly" in html_text.lower()
    # every result class of the analysis modules shows itself the same way
    modules = (pk.memorization, pk.ablation, pk.probes, pk.shattering, pk.activations)
    modules += (pk.grid, pk.modularity, pk.geometry, pk.forced_choice, pk.attention, pk.memory)
    modules += (pk.stepwise,)
    checked = []
    for module in modules:
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "figures"):
                assert issubclass(cls, report.Rendered), f"{module.__name__}.{name}"
                checked.append(name)
    assert {"GridModules", "ClusterResult", "GeometryResult", "ForcedChoiceResult"} <= set(checked)
    assert {"HypersphereResult", "CapacityResult", "StepwiseResult"} <= set(checked)


def test_tables_number_rows_cut_long_text_and_explain_missing_values() -> None:
    frame = pd.DataFrame({"text": ["x" * 500, "short"], "value": [-1e-9, float("nan")]})
    page = report.render(report.Result(frame=frame, title="t"))
    assert "<th>#</th>" in page and '<td class="num id">1</td>' in page
    assert "x" * 81 not in page.split("download")[0] or "long texts cut" in page
    assert "long texts cut to 80 characters" in page
    assert "-0<" not in page and ">0<" in page
    assert "NaN / None in value" in page


def _page_specs(page: str) -> list[dict[str, Any]]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from figure_checks import figure_specs

    return list(figure_specs(page).values())


def test_zero_bars_are_labelled_so_they_do_not_read_as_missing() -> None:
    from figure_checks import problems

    fig = go.Figure(
        [
            go.Bar(x=["a", "b", "c"], y=np.array([0.0, 0.5, 0.0]), name="drop"),
            go.Bar(x=["a", "b"], y=[0.1, 0.2], name="no zero"),
            go.Bar(x=["a"], y=[0.0], text=["own label"], name="labelled"),
        ]
    )
    fig.update_layout(xaxis_title="layer", yaxis_title="drop (exact match)")
    assert any("bars at 0" in p for p in problems(fig.to_plotly_json()))
    page = report.render(report.Result(figs=[fig], title="t"))
    (spec,) = _page_specs(page)
    assert problems(spec) == []
    drop, no_zero, labelled = spec["data"]
    assert drop["text"] == ["0", "", "0"] and drop["textposition"] == "outside"
    assert "text" not in no_zero
    assert labelled["text"] == ["own label"]


def test_figure_check_flags_a_magnified_axis_unless_ranged_or_titled_zoomed() -> None:
    from figure_checks import problems

    def fig(**yaxis: Any) -> dict[str, Any]:
        f = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.5165, 0.518, 0.52], name="accuracy"))
        f.update_layout(xaxis_title="step", yaxis={"title": "accuracy"} | yaxis)
        return f.to_plotly_json()

    (flag,) = problems(fig())
    assert flag.startswith("yaxis spans 0.5165..0.52")
    assert problems(fig(range=[0, 1])) == []
    assert problems(fig(title="accuracy (zoomed: 0.3% span)")) == []
