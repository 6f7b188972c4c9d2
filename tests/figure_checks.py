"""What a reader needs from every figure: a title on every axis and colour bar, legends that
name things. Walks the Plotly JSON embedded in a report page."""

from __future__ import annotations

import html
import json
import re
from typing import Any

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


def problems(spec: dict[str, Any]) -> list[str]:
    """Each unlabelled axis, untitled colour bar and ``trace N`` name of one figure."""
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
    return found
