"""BrainBench-style forced choice: does the shipped brainbench-lm prefer the real result?

Run from the repository root: ``python examples/forced_choice.py``.
Method: docs/forced_choice.md.
"""

# %%
import json

import probekit as pk

# Held-out abstracts; each marks its result as [[original, altered]].
rows = [json.loads(line) for line in open("checkpoints/brainbench-lm/data/test.jsonl")][:24]
items = [row["combined_abstract"] for row in rows]
print(items[0])

# %%
# Both versions are scored by perplexity; the model "chooses" the less surprising one (the A/B
# order is a seeded coin; label 0 = A is the original). confidence = |ppl_a - ppl_b|.
model = pk.load("checkpoints/brainbench-lm")
result = pk.forced_choice.evaluate(model, items, batch_size=24, progress=False)
print(result.frame[["ppl_a", "ppl_b", "label", "correct", "confidence"]].head().round(3))

# %%
# Accuracy against chance 0.5 (24 items: a rough estimate; the study uses all of them), and the
# context control: the edited sentence scored alone, without the rest of the abstract.
s = result.summary
print(
    f"accuracy {s['accuracy']:.2f} (chance {s['chance']}), sentence alone {s['context_control_accuracy']:.2f}"
)
