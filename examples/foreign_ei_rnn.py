"""Convert another group's excitatory/inhibitory CTRNN into probekit's RNN format, then cluster it.

Run from the repository root: ``python examples/foreign_ei_rnn.py``.

The network here is built in the example: 400 rate units, 320 excitatory and 80 inhibitory
(Dale's law), stored the way many E/I codes store theirs: a dict of numpy arrays with one
non-negative magnitude block per pathway (``W_ee``: E -> E, ``W_ei``: I -> E, ``W_ie``: E -> I,
``W_ii``: I -> I; rows post-synaptic, columns pre-synaptic), a connectivity mask, input and
readout weights. The conversion writes the documented ``probekit-rnn`` directory
(``docs/rnn_format.md``): ``weight_hh`` holds the magnitudes, ``ei_sign [H]`` the sign of each
pre-synaptic unit, ``mask_hh [H, H]`` the fixed connectivity, so that the effective recurrent
weight is ``|weight_hh| * mask_hh * ei_sign[None, :]``. ``pk.load`` reads it back, and the
modularity analysis (task variance on the 20 cognitive tasks, k-means clusters) runs on it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import probekit as pk
from probekit.tasks import cognitive

torch.set_num_threads(1)  # small per-step matrix products: more threads only spin

# 1. The foreign network: 80/20 E/I, sparse non-negative blocks, 53 cognitive-task inputs onto
#    the excitatory units, a 17-unit readout from them; dt 100 ms, tau 200 ms, ReLU rates.
rng = np.random.default_rng(0)
n_e, n_i, n_in, n_out = 320, 80, cognitive.N_INPUT, cognitive.N_OUTPUT
p_connect = 0.2


def block(post: int, pre: int, scale: float) -> np.ndarray:
    return (rng.gamma(2.0, scale, (post, pre)) * (rng.random((post, pre)) < p_connect)).astype(
        np.float32
    )


foreign = {
    "W_ee": block(n_e, n_e, 0.010),
    "W_ei": block(n_e, n_i, 0.040),  # inhibitory input 4x stronger per synapse: E/I balance
    "W_ie": block(n_i, n_e, 0.010),
    "W_ii": block(n_i, n_i, 0.040),
    "W_in": np.abs(rng.normal(0.0, 0.3, (n_e, n_in))).astype(np.float32),  # inputs onto E only
    "b": np.full(n_e + n_i, 0.1, dtype=np.float32),
    "W_out": rng.normal(0.0, 0.05, (n_out, n_e)).astype(np.float32),  # read out from E only
    "dt_ms": 100.0,
    "tau_ms": 200.0,
}

# 2. Conversion into the documented format.
n = n_e + n_i
magnitude = np.block([[foreign["W_ee"], foreign["W_ei"]], [foreign["W_ie"], foreign["W_ii"]]])
ei_sign = np.concatenate([np.ones(n_e), -np.ones(n_i)]).astype(np.float32)
mask = (magnitude > 0).astype(np.float32)
np.fill_diagonal(mask, 0.0)  # no autapses
weight_ih = np.zeros((n, n_in), dtype=np.float32)
weight_ih[:n_e] = foreign["W_in"]
readout = np.zeros((n_out, n), dtype=np.float32)
readout[:, :n_e] = foreign["W_out"]
tensors = {
    "weight_ih": weight_ih,
    "weight_hh": magnitude,
    "bias_ih": foreign["b"],
    "bias_hh": np.zeros(n, dtype=np.float32),
    "mask_hh": mask,
    "ei_sign": ei_sign,
    "readout.weight": readout,
    "readout.bias": np.zeros(n_out, dtype=np.float32),
}
config = {
    "format": "probekit-rnn",
    "version": 1,
    "kind": "ctrnn",
    "input_size": n_in,
    "hidden_size": n,
    "output_size": n_out,
    "vocab_size": None,
    "nonlinearity": "relu",
    "bias": True,
    "dt": foreign["dt_ms"],
    "tau": foreign["tau_ms"],
    "convention": "yang2019",
    "mask_hh": True,
    "ei_sign": True,
    "extra": {"source": "E/I network built in examples/foreign_ei_rnn.py", "n_exc": n_e},
    "extra_tensors": {},
}
out = Path(tempfile.mkdtemp()) / "ei-rnn"
out.mkdir()
(out / "config.json").write_text(json.dumps(config, indent=2))
save_file(
    {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
    str(out / "model.safetensors"),
)

# 3. Load it the ordinary way and check the conversion: Dale's law holds, and the effective
#    recurrent weights are the foreign blocks with their signs.
model = pk.load(out)
w = model.W_rec.detach().numpy()
assert (w[:, :n_e] >= 0).all() and (w[:, n_e:] <= 0).all()
assert np.allclose(w[:n_e, n_e:], -foreign["W_ei"] * mask[:n_e, n_e:])
print(
    f"loaded {model.kind} with {model.hidden_size} units ({n_e} E / {n_i} I), "
    f"dt {model.cfg.dt:g} ms, {int(mask.sum())} connections"
)

# 4. Task variance on the 20 tasks (trials at the model's own dt) and functional clusters.
tv = pk.modularity.task_variance(model, n_trials=16, seed=0)
clusters = pk.modularity.cluster(tv, k_range=range(2, 9), n_init=3, embeddings=())
print(
    f"{clusters.summary['n_active']} active units in k = {clusters.k} clusters "
    f"(silhouette {clusters.silhouette:.2f})"
)
anat = pk.modularity.anatomical(model.W_rec, clusters.labels, n_null=50)
print(
    f"Newman Q of |W_rec| under those clusters: {anat.summary['Q']:.3f} "
    f"(z = {anat.summary['Q_z']:.1f} against label shuffles)"
)
