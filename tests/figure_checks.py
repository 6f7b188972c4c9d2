"""What a reader needs from every figure: a title on every axis and colour bar, legends that
name things, honest axis ranges (no magnified noise unless the axis says it is zoomed), and no
bar that is invisible because its value is 0 without a label saying so. Walks the Plotly JSON
embedded in a report page."""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any

import numpy as np

_SPEC_RE = re.compile(r'<script type="application/json" id="([^"]+)-spec">(.*?)</script>', re.S)


def figure_specs(page: str) -> dict[str, dict[str, Any]]:
    """Figure id -> its Plotly JSON, from a probekit report page."""
    return {m.group(1): json.loads(m.group(2)) for m in _SPEC_RE.finditer(page)}


def _title_text(obj: Any) -> str:
    if isinstance(obj, dict):
        obj = obj.get("title")
    if isinstance(obj, dict):
        obj = obj.get("text")
    return html.unescape(obj).strip() if isinstance(obj, str) else ""


def values(obj: Any) -> np.ndarray | None:
    """A trace's numeric data (a list, or Plotly's typed-array ``{"dtype", "bdata"}``), as
    float64; None when it is not numeric (categories)."""
    if isinstance(obj, dict) and "bdata" in obj:
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
        return arr.astype(np.float64).ravel()
    if isinstance(obj, (list, tuple)):
        try:
            return np.asarray([np.nan if v is None else v for v in obj], dtype=np.float64).ravel()
        except (TypeError, ValueError):
            return None
    return None


#: A line or scatter axis whose data span is under this fraction of the values' magnitude
#: magnifies differences a reader would take for large ones.
MAGNIFIED = 0.02


def _range_problems(layout: dict[str, Any], data: list[dict[str, Any]]) -> list[str]:
    found = []
    spans: dict[str, list[np.ndarray]] = {}
    for t in data:
        if t.get("type", "scatter") not in ("scatter", "scattergl"):
            continue  # bars start at 0; heatmaps, boxes and histograms show distributions
        for letter in ("x", "y"):
            v = values(t.get(letter))
            if v is not None:
                axis = letter + "axis" + t.get(letter + "axis", letter)[1:]
                spans.setdefault(axis, []).append(v)
    for axis, arrays in sorted(spans.items()):
        conf = layout.get(axis, {})
        if conf.get("range") is not None or conf.get("type") in ("log", "category", "date"):
            continue  # an explicit range is a choice the figure made
        if "zoom" in _title_text(conf).lower():
            continue  # the scale says so
        v = np.concatenate(arrays)
        v = v[np.isfinite(v)]
        if v.size < 2:
            continue
        span, size = float(v.max() - v.min()), float(np.abs(v).max())
        if 0 < span < MAGNIFIED * size:
            found.append(
                f"{axis} spans {v.min():.4g}..{v.max():.4g}: a {span / size:.1%} change fills the "
                "axis (set a range against the reference, or title it as zoomed)"
            )
    return found


def _zero_bar_problems(layout: dict[str, Any], data: list[dict[str, Any]]) -> list[str]:
    found = []
    noted = bool(layout.get("annotations"))
    for i, t in enumerate(data):
        if t.get("type") != "bar" or noted or t.get("text") is not None or t.get("texttemplate"):
            continue
        v = values(t.get("x" if t.get("orientation") == "h" else "y"))
        if v is not None and np.any(v == 0):
            found.append(
                f"trace {i} ({t.get('name')!r}) has bars at 0 that nothing labels (show the "
                "values as text or add a note)"
            )
    return found


def problems(spec: dict[str, Any]) -> list[str]:
    """Each unlabelled axis, untitled colour bar, ``trace N`` name, magnified axis and
    unlabelled zero bar of one figure."""
    found = []
    layout = spec.get("layout", {})
    data = spec.get("data", [])
    # only axes that some trace draws on (2-D traces carry xaxis/yaxis refs)
    cartesian = [t for t in data if t.get("type", "scatter") not in ("pie", "table", "sankey")]
    used = set()
    for t in cartesian:
        if t.get("type") in ("scatterpolar", "barpolar", "scatter3d", "surface", "mesh3d"):
            continue
        used.add("xaxis" + t.get("xaxis", "x")[1:])
        used.add("yaxis" + t.get("yaxis", "y")[1:])
    for axis in sorted(used):
        if not _title_text(layout.get(axis, {})):
            found.append(f"{axis} has no title")
    for i, trace in enumerate(data):
        name = trace.get("name")
        if isinstance(name, str) and re.fullmatch(r"trace \d+", name):
            found.append(f"trace {i} is named {name!r}")
        has_scale = trace.get("type") in ("heatmap", "contour", "histogram2d") or (
            isinstance(trace.get("marker"), dict) and trace["marker"].get("showscale")
        )
        if trace.get("showscale") is False:
            has_scale = False
        if has_scale:
            bar = trace.get("colorbar") or (trace.get("marker") or {}).get("colorbar") or {}
            coloraxis = trace.get("coloraxis")
            if coloraxis:
                bar = layout.get(coloraxis, {}).get("colorbar", {})
            if not _title_text(bar):
                found.append(f"trace {i} ({trace.get('type')}) has a colour bar without a title")
    return found + _range_problems(layout, data) + _zero_bar_problems(layout, data)
