"""Representation shattering: one ROME edit on kg-ring, and how far it moves other entities.

Run from the repository root: ``python examples/shattering.py``. Method: docs/shattering.md.
"""

# %%
import torch

import probekit as pk
from probekit.tasks import knowledge_graph as kg

# A small GPT-2 trained on random walks over a knowledge graph of entities on rings.
model, graph = pk.load("checkpoints/kg-ring"), kg.load_graph("checkpoints/kg-ring")
walks = kg.walks(graph, 128, seed=1)  # text the edit uses to estimate the key covariance

# %%
# Rewrite one fact with a rank-one update of layer 1's MLP: (e12, relation I_C1) -> e40.
request = pk.edit.EditRequest(subject="e12", context="I_C1", target="e40")
edited = pk.edit.rome(model, request, layer=1, cov_tokens=walks, position="last")  # a new model
print(pk.edit.success(edited, [request]))  # did the edited model learn the new fact?

# %%
# Every entity's mean residual stream after block 1 over graph contexts, before and after.
entities, contexts = torch.arange(graph.n_entities), pk.shattering.kg_contexts(graph)
hook = "blocks.1.hook_resid_post"
before = pk.shattering.entity_representations(model, entities, hook, contexts)  # [E, d]
after = pk.shattering.entity_representations(edited, entities, hook, contexts)

# %%
# R = ||D* - D0||_F / ||D0||_F: change of the entities' pairwise-distance matrix, relative to
# its size (0 = untouched). On kg-ring one ROME edit gives R ~ 0.002, far below the source
# study's ~0.2 (docs/shattering.md says why); pk.shattering.sweep runs edits at each distance.
print(f"shattering R = {pk.shattering.distortion(before, after):.3f} ({graph.n_entities} entities)")
