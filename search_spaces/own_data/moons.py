"""Your own data for hpo: two interleaving half circles (scikit-learn's make_moons).

The study file (moons.yaml, next to this file) names the loader as `moons:load`; hpo looks the
module up in the study file's folder first. `load` gets `{"seed": <study seed>, **options}` and
returns arrays: here only the training pool, so hpo makes the val (and test) split itself,
stratified and seeded, and preprocesses as `data.preprocess` says.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons


def load(config: dict) -> dict:
    x, y = make_moons(n_samples=int(config.get("n_samples", 600)),
                      noise=float(config.get("noise", 0.25)), random_state=config["seed"])
    return {"x_train": x.astype(np.float32), "y_train": y.astype(np.int64)}  # (N, 2), (N,)
