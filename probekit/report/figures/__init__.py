"""The Plotly figures of each analysis, one module per analysis, apart from the maths.

An analysis's result object calls its figure builder from ``.figures()``; the builders take the
result's frame and arrays and return ``plotly.graph_objects.Figure`` objects, each with axis
titles (and units) on every axis and colour bar.
"""
