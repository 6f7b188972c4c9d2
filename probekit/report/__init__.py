"""Plotly report builder: analysis results -> one self-contained, offline HTML page.

``write(results, path)`` renders results (objects with ``.frame``, ``.summary`` and
``.figures()``) into one page with plotly.js embedded once; ``write_index(pages, path)`` links
several such pages. Every string that came from data is escaped; the rule for figure text is in
:mod:`probekit.report.page`.
"""

from __future__ import annotations

from probekit.report.page import (
    Rendered,
    Result,
    format_value,
    notebook_html,
    render,
    render_index,
    write,
    write_index,
)

__all__ = [
    "Rendered",
    "Result",
    "format_value",
    "notebook_html",
    "render",
    "render_index",
    "write",
    "write_index",
]
