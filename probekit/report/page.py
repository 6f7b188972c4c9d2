"""Render analysis results into one self-contained, offline HTML page.

Every analysis in probekit returns a result with ``.frame`` (a DataFrame or None), ``.summary``
(a dict of headline numbers) and ``.figures()`` (Plotly figures); this module turns a list of
them into a single page a reader can open from disk with no network: plotly.js is embedded once,
each figure gets its own ``<div>``, and every table is plain HTML.

Escaping rule (what keeps data from becoming markup):

- Everything written as HTML text or attribute values (section titles, descriptions, summary
  keys and values, column names, table cells, link targets) goes through :func:`html.escape`.
- Figures are embedded as JSON inside ``<script type="application/json">`` blocks (never
  executed); in that JSON every ``<``, ``>``, ``&`` and U+2028/U+2029 is written as a ``\\uXXXX``
  escape, so no string can close the block. One fixed bootstrap script parses the blocks and
  calls ``Plotly.newPlot``.
- plotly.js renders some strings (titles, axis labels, trace names, annotations, tick labels,
  hover text) as a small subset of HTML (``<b>``, ``<br>``, ``<a href>``, ``style=``...). So
  before embedding, **every string in a figure is HTML-escaped** (``&`` ``<`` ``>`` become
  entities, which plotly.js decodes back to the literal characters for display) **except** the
  values of ``hovertemplate`` / ``texttemplate`` (and their ``*fallback`` variants) and the
  ``layout.template`` theme: those are markup the analysis wrote itself and may use ``<br>`` or
  ``<b>``. Put data into ``customdata``/``text`` and reference it as ``%{customdata}``; never
  format data into a template string. A consequence: a title cannot use ``<br>``/``<b>`` markup.
- A Content-Security-Policy in the page allows only the two inline scripts the page ships (by
  sha256 hash), and no network access at all, as a second line of defence.

Rendering is deterministic: the same results give byte-identical pages (element ids come from
counters; nothing random or time-dependent is written).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["write", "write_index", "render", "render_index", "format_value"]

#: Rows of a result's frame shown in the page; the full table is offered as a CSV download.
MAX_ROWS = 200
#: The full-table CSV is embedded (as a ``data:`` URI) only up to this many bytes.
MAX_CSV_BYTES = 5_000_000
#: Items of a list shown in a summary cell before it is cut short.
MAX_LIST_ITEMS = 20
#: Longer table cells are cut in the page (the CSV download keeps them whole).
MAX_CELL_CHARS = 80

# Keys whose string values are author-written Plotly markup, left as they are (see module doc).
_MARKUP_KEYS = frozenset(
    {"hovertemplate", "texttemplate", "hovertemplatefallback", "texttemplatefallback"}
)
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")

_CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --zebra: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.75rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.75rem; padding-bottom: 0.3rem;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 0.5rem; }
a { color: var(--accent); }
p.description { white-space: pre-wrap; }
nav.toc { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px;
  padding: 0.75rem 1.25rem; }
nav.toc h2 { font-size: 1rem; margin: 0 0 0.25rem; border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 1.5rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
.table-wrap.scroll { max-height: 36rem; overflow-y: auto; border-bottom: 1px solid var(--line); }
table { border-collapse: collapse; font-size: 0.875rem; margin: 0.25rem 0; }
th, td { unicode-bidi: isolate; border: 1px solid var(--line); padding: 0.3rem 0.6rem; text-align: left;
  vertical-align: top; }
th { background: #eef1f4; font-weight: 600; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.long { max-width: 32rem; overflow-wrap: normal; word-break: normal; }
td.id { color: #667; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 40em; }
td.na { color: var(--muted); }
table.summary th[scope=row] { background: transparent; position: static; font-weight: 500; }
.note { color: var(--muted); font-size: 0.875rem; margin: 0.25rem 0; }
.pk-figure { width: 100%; min-height: 450px; margin: 1rem 0; }
.pk-error { color: #b42318; white-space: pre-wrap; }
footer { color: var(--muted); font-size: 0.8rem; margin-top: 3rem; }
ul.pages li { margin: 0.4rem 0; }
""".strip()

# Fixed bootstrap: parses each figure's JSON block and draws it; never contains data.
_BOOTSTRAP_JS = """
(function () {
  "use strict";
  var divs = document.querySelectorAll("div.pk-figure[data-spec]");
  var pending = [];
  Array.prototype.forEach.call(divs, function (div) {
    try {
      var spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
      pending.push(Plotly.newPlot(div, spec));
    } catch (err) {
      console.error("probekit: figure " + div.id + " failed to render: " + err);
      div.className += " pk-error";
      div.textContent = "This figure failed to render: " + err;
      pending.push(Promise.reject(err));
    }
  });
  Promise.all(pending).then(
    function () { document.documentElement.setAttribute("data-pk-rendered", divs.length); },
    function () { document.documentElement.setAttribute("data-pk-rendered", "error"); }
  );
})();
""".strip()


# ----------------------------------------------------------------------------- escaping


#: Bidirectional overrides and isolates, and zero-width characters: invisible, yet they can
#: reorder or hide what a reader sees (a training text that reads as something else).
_INVISIBLE_RE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _clean(text: str) -> str:
    """Replace lone surrogates (possible in decoded token text) so the page encodes as UTF-8,
    and show invisible bidi / zero-width characters as visible ``[U+202E]`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _INVISIBLE_RE.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", text)


def _esc(value: Any) -> str:
    """HTML-escape ``str(value)`` for text and attribute contexts (quotes included)."""
    return html.escape(_clean(str(value)), quote=True)


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` block."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _JSON_ESCAPE_RE.sub(lambda m: _JSON_ESCAPES[m.group(0)], text)


def _escape_figure_strings(obj: Any, key: str | None = None) -> Any:
    """Return a copy of a figure's JSON with every data string HTML-escaped (see module doc)."""
    if isinstance(obj, str):
        return _clean(obj) if key in _MARKUP_KEYS else html.escape(_clean(obj), quote=False)
    if isinstance(obj, dict):
        # layout.template is plotly's theme (package data, may hold template markup): kept.
        return {
            k: v if k == "template" and key == "layout" else _escape_figure_strings(v, k)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_escape_figure_strings(v, key) for v in obj]
    return obj


# ----------------------------------------------------------------------------- values


def format_value(value: Any) -> str:
    """Plain-text form of one summary value or table cell (not yet HTML-escaped).

    Floats get 4 significant digits (``0.1235``, ``1.235e+05``), integers stay exact,
    numpy/torch scalars are unwrapped, lists and arrays are shown up to ``MAX_LIST_ITEMS``
    items, and mappings as ``{key: value, ...}``.
    """
    if value is None:
        return "None"
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars and 0-d arrays/tensors
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        text = f"{value:.4g}"
        return "0" if text in ("-0", "0") else text  # no "-0" from rounding a tiny negative
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays, torch tensors, pandas Series
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        shown = ", ".join(format_value(v) for v in items[:MAX_LIST_ITEMS])
        if len(items) > MAX_LIST_ITEMS:
            shown += f", … ({len(items)} items)"
        return "[" + shown + "]"
    return str(value)


def _is_missing(value: Any) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _flatten_summary(summary: Mapping[Any, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted keys: ``{"auc": {"train": 1}}`` -> ``[("auc.train", 1)]``."""
    rows: list[tuple[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten_summary(value, prefix=name + "."))
        else:
            rows.append((name, value))
    return rows


# ----------------------------------------------------------------------------- results


def notebook_html(result: Any, max_rows: int = 20) -> str:
    """A result as one HTML fragment for Jupyter: its title, description, summary table,
    figures (plotly.js included once, offline) and the first ``max_rows`` rows of its frame."""
    section = _unpack(result, "result")
    parts = [f"<h3>{_esc(section.title)}</h3>"]
    if section.description:
        parts.append(_description_html(section.description))
    summary = _summary_html(section.summary)
    if summary:
        parts.append(summary)
    for j, fig in enumerate(section.figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=j == 0))
    if section.frame is not None:
        parts.append(_frame_html(section.frame, _slug(section.title), max_rows, 0))
    return "\n".join(parts)


class Rendered:
    """Mixin: a result that shows itself in Jupyter (summary table, figures, first rows)."""

    def _repr_html_(self) -> str:
        return notebook_html(self)


@dataclass
class Result(Rendered):
    """A result assembled by hand: a table, headline numbers, figures, a title and text.

    For a study that builds a page section from pieces rather than from one analysis function;
    :func:`write` takes it like any analysis result.
    """

    frame: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    figs: list[Any] = field(default_factory=list)
    title: str | None = None
    description: str = ""

    def figures(self) -> list[Any]:
        return list(self.figs)


@dataclass(frozen=True)
class _Section:
    """One result, checked and unpacked."""

    title: str
    description: str | None
    summary: Mapping[Any, Any]
    frame: pd.DataFrame | None
    figures: list[Any]


def _as_result_list(results: Any) -> tuple[list[Any], list[str]]:
    """The results as a list, and how to name each one in an error message."""
    if hasattr(results, "summary") or not isinstance(results, Iterable):
        return [results], ["results"]
    if isinstance(results, (str, bytes, Mapping)):
        return [results], ["results"]
    items = list(results)
    return items, [f"results[{i}]" for i in range(len(items))]


def _unpack(result: Any, where: str) -> _Section:
    kind = type(result).__name__
    for attr in ("frame", "summary", "figures"):
        if not hasattr(result, attr):
            raise TypeError(
                f"{where} is a {kind}, which has no attribute {attr!r}; a result needs .frame "
                "(a pandas DataFrame or None), .summary (a dict) and .figures() (a list of "
                "Plotly figures)"
            )
    frame = result.frame
    if frame is not None and not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"{where}.frame must be a pandas DataFrame or None, got {type(frame).__name__}"
        )
    summary = result.summary
    if summary is None:
        summary = {}
    if not isinstance(summary, Mapping):
        raise TypeError(f"{where}.summary must be a dict, got {type(summary).__name__}")
    figures = result.figures() if callable(result.figures) else result.figures
    if figures is None:
        figures = []
    if not isinstance(figures, Sequence) or isinstance(figures, (str, bytes)):
        raise TypeError(
            f"{where}.figures() must return a list of Plotly figures, got {type(figures).__name__}"
        )
    from plotly.basedatatypes import BaseFigure

    for j, fig in enumerate(figures):
        if not isinstance(fig, (BaseFigure, Mapping)):
            raise TypeError(
                f"{where}.figures()[{j}] must be a Plotly figure (or figure dict), "
                f"got {type(fig).__name__}"
            )
    title = getattr(result, "title", None) or getattr(result, "name", None) or kind
    description = getattr(result, "description", None) or getattr(result, "notes", None)
    return _Section(
        title=str(title),
        description=None if description is None else str(description),
        summary=summary,
        frame=frame,
        figures=list(figures),
    )


# ----------------------------------------------------------------------------- HTML parts


def _summary_html(summary: Mapping[Any, Any]) -> str:
    rows = _flatten_summary(summary)
    if not rows:
        return ""
    body = "\n".join(
        f'<tr><th scope="row">{_esc(k)}</th>'
        f'<td class="{_cell_class(v)}">{_esc(format_value(v))}</td></tr>'
        for k, v in rows
    )
    return (
        '<h3>Summary</h3>\n<div class="table-wrap"><table class="summary">\n'
        f"<thead><tr><th>quantity</th><th>value</th></tr></thead>\n<tbody>\n{body}\n"
        "</tbody></table></div>"
    )


def _cell_class(value: Any) -> str:
    if _is_missing(value):
        return "na"
    if isinstance(value, bool):
        return "text"
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    return "num" if isinstance(value, int | float) and not isinstance(value, bool) else "text"


def _column_name(col: Any) -> str:
    if isinstance(col, tuple):
        return " / ".join(str(c) for c in col)
    return str(col)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:60] or "table"


def _frame_html(frame: pd.DataFrame, stem: str, max_rows: int, max_csv_bytes: int) -> str:
    n_rows = len(frame)
    plain_index = (
        isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
    )
    shown = frame.iloc[:max_rows]
    if not plain_index:
        shown = shown.reset_index(allow_duplicates=True)
    header = "<th>#</th>" + "".join(f"<th>{_esc(_column_name(c))}</th>" for c in shown.columns)
    lines = []
    truncated = False
    for number, row in enumerate(shown.itertuples(index=False, name=None)):
        cells = [f'<td class="num id">{number}</td>']
        for v in row:
            if _is_missing(v):
                cells.append(f'<td class="na">{_esc(format_value(v))}</td>')
                continue
            text = format_value(v)
            if len(text) > MAX_CELL_CHARS:
                # The page stays readable; the full text is in the CSV download.
                cells.append(
                    f'<td class="text long" title="{_esc(text)}">'
                    f"{_esc(text[:MAX_CELL_CHARS])}…</td>"
                )
                truncated = True
            else:
                cells.append(f'<td class="{_cell_class(v)}">{_esc(text)}</td>')
        lines.append(f"<tr>{''.join(cells)}</tr>")
    body = "\n".join(lines)
    notes = []
    if n_rows > max_rows:
        notes.append(f"showing {max_rows} of {n_rows} rows")
    elif n_rows == 0:
        notes.append("empty table (0 rows)")
    else:
        notes.append(f"{n_rows} row{'s' if n_rows != 1 else ''}")
    if truncated:
        notes.append(f"long texts cut to {MAX_CELL_CHARS} characters (full text in the CSV)")
    missing = [_column_name(c) for c in frame.columns if frame[c].map(_is_missing).any()]
    if missing:
        notes.append(
            f"NaN / None in {', '.join(missing[:6])}: the quantity is not defined for that row "
            "(see the section text for why)"
        )
    csv = _clean(frame.to_csv(index=not plain_index)).encode("utf-8")
    if len(csv) <= max_csv_bytes:
        uri = "data:text/csv;charset=utf-8;base64," + base64.b64encode(csv).decode("ascii")
        notes.append(f'<a download="{_esc(stem)}.csv" href="{uri}">download full table (CSV)</a>')
    else:
        notes.append(
            f"the full table ({len(csv) / 1e6:.1f} MB as CSV) is too large to embed; "
            "save it from Python with result.frame.to_csv(...)"
        )
    return (
        f'<h3>Data</h3>\n<p class="note">{" · ".join(notes)}</p>\n'
        f'<div class="table-wrap scroll"><table class="data">\n<thead><tr>{header}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _trace_values(obj: Any) -> list[float] | None:
    """A trace's numeric data from Plotly's JSON (a list or a ``{"dtype", "bdata"}`` typed
    array) as floats; None for categories or missing data."""
    if isinstance(obj, dict) and "bdata" in obj:
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
        return arr.astype(np.float64).ravel().tolist()
    if isinstance(obj, list):
        try:
            return [float("nan") if v is None else float(v) for v in obj]
        except (TypeError, ValueError):
            return None
    return None


def _label_zero_bars(spec: dict[str, Any]) -> dict[str, Any]:
    """Write "0" above every bar whose value is exactly 0 (it would otherwise be invisible and
    read as missing), unless the trace already labels its bars."""
    for trace in spec.get("data", []):
        if trace.get("type") != "bar" or trace.get("text") is not None or trace.get("texttemplate"):
            continue
        vals = _trace_values(trace.get("x" if trace.get("orientation") == "h" else "y"))
        if vals and any(v == 0 for v in vals):
            trace["text"] = ["0" if v == 0 else "" for v in vals]
            trace["textposition"] = "outside"
            trace["cliponaxis"] = False
    return spec


def _figure_html(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    spec = json.loads(pio.to_json(fig, validate=False))
    spec = _label_zero_bars(_escape_figure_strings(spec))
    spec["config"] = {"responsive": True, "displaylogo": False}
    return (
        f'<div class="pk-figure" id="{div_id}" data-spec="{div_id}-spec"></div>\n'
        f'<script type="application/json" id="{div_id}-spec">{_json_for_script(spec)}</script>'
    )


def _description_html(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(f'<p class="description">{_esc(p)}</p>' for p in paragraphs)


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    # The bundle is inlined verbatim; it must not be able to end its own <script> element.
    if re.search(r"</script|<!--", js, flags=re.IGNORECASE):
        raise RuntimeError("the installed plotly.js bundle cannot be inlined safely")
    return js


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


#: The shared plotly.js written beside pages that are not self-contained.
PLOTLY_FILE = "plotly.min.js"


def _page(title: str, body: str, scripts: Sequence[str], external: str | None = None) -> str:
    """A whole HTML document; ``scripts`` are inline scripts placed at the end of the body,
    after ``external`` (a script file beside the page, e.g. the shared plotly.js)."""
    sources = [_csp_hash(s) for s in scripts] + (["'self'"] if external else [])
    script_src = " ".join([*sources, "'unsafe-eval'"]) if sources else "'none'"
    # 'unsafe-eval' only because plotly.js's WebGL traces compile shaders through Function();
    # injected markup still cannot run: inline scripts must match one of the hashes.
    csp = (
        f"default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'"
    )
    tail = f'<script src="{_esc(external)}"></script>\n' if external else ""
    tail += "".join(f"<script>{s}</script>\n" for s in scripts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n"
        "<footer>Generated by probekit.</footer>\n</main>\n"
        f"{tail}</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- public API


def render(
    results: Any,
    title: str | None = None,
    *,
    max_rows: int = MAX_ROWS,
    max_csv_bytes: int = MAX_CSV_BYTES,
    self_contained: bool = True,
) -> str:
    """The HTML text of the page :func:`write` would write (see :func:`write`); with
    ``self_contained=False`` the page loads ``plotly.min.js`` from its own folder."""
    items, where = _as_result_list(results)
    if not items:
        raise ValueError("results is empty: pass one result or a list of results")
    sections = [_unpack(r, w) for r, w in zip(items, where)]
    if title is None:
        title = sections[0].title if len(sections) == 1 else "probekit report"

    parts = [f"<h1>{_esc(title)}</h1>"]
    if len(sections) > 1:
        links = "\n".join(
            f'<li><a href="#section-{i}">{_esc(s.title)}</a></li>'
            for i, s in enumerate(sections, 1)
        )
        parts.append(f'<nav class="toc">\n<h2>Contents</h2>\n<ol>\n{links}\n</ol>\n</nav>')
    n_figures = 0
    for i, section in enumerate(sections, 1):
        parts.append(f'<section id="section-{i}">\n<h2>{_esc(section.title)}</h2>')
        if section.description:
            parts.append(_description_html(section.description))
        summary = _summary_html(section.summary)
        if summary:
            parts.append(summary)
        for j, fig in enumerate(section.figures, 1):
            parts.append(_figure_html(fig, f"pk-s{i}-fig{j}"))
            n_figures += 1
        if section.frame is not None:
            stem = f"{i:02d}-{_slug(section.title)}"
            parts.append(_frame_html(section.frame, stem, max_rows, max_csv_bytes))
        parts.append("</section>")
    if not n_figures:
        return _page(title, "\n".join(parts), [])
    if self_contained:
        return _page(title, "\n".join(parts), [_plotly_js(), _BOOTSTRAP_JS])
    return _page(title, "\n".join(parts), [_BOOTSTRAP_JS], external=PLOTLY_FILE)


def write(
    results: Any,
    path: str | os.PathLike,
    title: str | None = None,
    *,
    max_rows: int = MAX_ROWS,
    max_csv_bytes: int = MAX_CSV_BYTES,
    self_contained: bool | None = None,
) -> Path:
    """Write one HTML report for ``results`` to ``path``; return the path.

    Args:
        results: one result or a list of them. A result is any object with ``.frame`` (a pandas
            DataFrame or None), ``.summary`` (a dict; nested dicts become dotted keys) and
            ``.figures()`` (a list of Plotly figures). Optional: ``.title`` or ``.name`` (the
            section heading, else the class name) and ``.description`` or ``.notes`` (plain
            text, blank lines separate paragraphs).
        path: the ``.html`` file to write; parent directories are created. The write is
            atomic: on failure the previous file, if any, is left untouched.
        title: page title; defaults to the single result's title, or "probekit report".
        max_rows: rows of each frame shown in the page; the full frame is offered as a CSV
            download when it is at most ``max_csv_bytes`` bytes.
        self_contained: embed plotly.js in the page (one file to hand on, ~5 MB). By default
            (None: unless ``PROBEKIT_SELF_CONTAINED=1``, which ``--self-contained`` sets) the
            pages of a folder share one ``plotly.min.js`` written beside them.

    The page has one section per result (heading, description, summary table, figures, data
    table) and a table of contents when there are several. It needs no network. Every string from the data is escaped; see the
    module docstring for the rule applied to figure text.

    Raises:
        TypeError: a result lacks ``.frame``/``.summary``/``.figures`` or has the wrong types.
        ValueError: ``results`` is empty.

    Example:
        >>> import pandas as pd, plotly.express as px
        >>> class Result:
        ...     frame = pd.DataFrame({"layer": [0, 1], "score": [0.5, 0.25]})
        ...     summary = {"best_layer": 0}
        ...     def figures(self):
        ...         return [px.bar(self.frame, x="layer", y="score")]
        >>> write(Result(), "report/page.html")  # doctest: +SKIP
        PosixPath('report/page.html')
    """
    if self_contained is None:
        self_contained = os.environ.get("PROBEKIT_SELF_CONTAINED") == "1"
    text = render(
        results,
        title,
        max_rows=max_rows,
        max_csv_bytes=max_csv_bytes,
        self_contained=self_contained,
    )
    # fileio imports torch (seconds); only pay for it when a page is actually written.
    from probekit import fileio

    path = Path(path)
    if f'<script src="{PLOTLY_FILE}">' in text:
        shared = path.parent / PLOTLY_FILE
        js = _plotly_js()
        if not shared.is_file() or shared.stat().st_size != len(js.encode("utf-8")):
            fileio.write_text_atomic(shared, js)
    fileio.write_text_atomic(path, text)
    return path


def _index_entry(page: Any, where: str) -> tuple[str, Any, str | None]:
    if isinstance(page, Mapping):
        if "title" not in page or not ({"path", "href"} & set(page)):
            raise TypeError(
                f"{where} must have 'title' and 'path' keys (and optionally 'description'), "
                f"got keys {sorted(map(str, page))}"
            )
        return str(page["title"]), page.get("path", page.get("href")), page.get("description")
    if isinstance(page, Sequence) and not isinstance(page, (str, bytes)) and 2 <= len(page) <= 3:
        description = page[2] if len(page) == 3 else None
        return str(page[0]), page[1], description
    raise TypeError(
        f"{where} must be (title, relative path[, description]) or a dict with 'title', "
        f"'path' and optionally 'description', got {page!r}"
    )


def _relative_href(target: Any, index_dir: Path) -> str:
    """A relative URL from the index's folder to ``target`` (a file path, never a URL)."""
    target_path = Path(os.fspath(target))
    if target_path.is_absolute():
        target_path = Path(os.path.relpath(target_path, index_dir.resolve()))
    from urllib.parse import quote

    # quote() turns ":" into %3A, so a "javascript:..." path stays a harmless relative link.
    return quote(target_path.as_posix(), safe="/")


def render_index(
    pages: Iterable[Any], title: str = "probekit report", base: Path | None = None
) -> str:
    """The HTML text of the index page :func:`write_index` would write."""
    base = Path(".") if base is None else base
    items = []
    for i, page in enumerate(pages):
        name, target, description = _index_entry(page, f"pages[{i}]")
        href = _relative_href(target, base)
        line = f'<li><a href="{_esc(href)}">{_esc(name)}</a>'
        if description:
            line += f' — <span class="note">{_esc(description)}</span>'
        items.append(line + "</li>")
    if not items:
        raise ValueError("pages is empty: pass at least one (title, path) entry")
    body = f'<h1>{_esc(title)}</h1>\n<ul class="pages">\n' + "\n".join(items) + "\n</ul>"
    return _page(title, body, scripts=[])


def write_index(
    pages: Iterable[Any], path: str | os.PathLike, title: str = "probekit report"
) -> Path:
    """Write an index page linking several report pages; return its path.

    Args:
        pages: entries ``(title, path)``, ``(title, path, description)`` or dicts with keys
            ``title``, ``path`` (or ``href``) and optionally ``description``. A relative path is
            taken relative to the index's folder; an absolute one is made relative to it.
        path: the index ``.html`` file, written atomically.
        title: the page heading.
    """
    path = Path(path)
    text = render_index(pages, title, base=path.parent)
    from probekit import fileio

    fileio.write_text_atomic(path, text)
    return path
