"""Memorization audit of the shipped canary-lm on a few of its training texts.

Run from the repository root: ``python examples/memorization_audit.py``.
Method: docs/memorization.md.
"""

# %%
import json
import tempfile
from pathlib import Path

import probekit as pk

# Eight chunks of the Python documentation the model was trained on (its "members").
rows = [json.loads(line) for line in open("checkpoints/canary-lm/data/members.jsonl")][:8]
texts = [row["text"] for row in rows]

# %%
# Score each text: prompt with its first 32 tokens, compare the greedy continuation with the
# true next 32 (lev = edit distance, memorized = lev below the threshold), plus Min-K% Prob,
# zlib ratio and the rest. out= writes the records as a resumable store.
out = Path(tempfile.mkdtemp()) / "audit"
audit = pk.memorization.audit("checkpoints/canary-lm", texts, prefix_len=32, suffix_len=32, out=out)
print(audit.frame[["lev", "memorized", "min_k_prob", "zlib_ratio"]].round(3))
print({k: v for k, v in audit.summary.items() if isinstance(v, (int, float))})

# %%
# The same table, read back from the store alone (no model needed).
frame = pk.memorization.audit_frame(out)
print("rows in the store:", len(frame), "| memorized:", int(frame["memorized"].sum()))
# In Jupyter, `audit` alone as a cell's last line shows its summary table and figures.
