"""A whole training loop of the user's own: regression on scikit-learn's make_friedman1.

hpo samples ``config`` (the study's ``model:`` and ``train:`` keys, flat) and hands each trial a
``trial``: the loop seeds itself with ``trial.seed`` and reports each epoch with
``trial.report``. Outside hpo, ``fit(config, hpo.Trial.local())`` runs it on its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_friedman1
from torch import nn


def _data(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise; x6..x10
    are noise features. A fixed 80/20 split, targets standardized on the training part."""
    x, y = make_friedman1(n_samples=n, noise=1.0, random_state=seed)
    x, y = x.astype(np.float32), y.astype(np.float32)
    cut = int(0.8 * n)
    mean, std = y[:cut].mean(), y[:cut].std()
    y = (y - mean) / std
    return (torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut]),
            torch.from_numpy(x[cut:]), torch.from_numpy(y[cut:]))


def _network(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    features = 10
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, 1))


def fit(config: dict, trial) -> None:
    torch.manual_seed(trial.seed)
    x_train, y_train, x_val, y_val = _data(int(config["samples"]), trial.seed)
    model = _network(int(config["width"]), int(config["depth"])).to(trial.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9,
                                weight_decay=config["weight_decay"])
    generator = torch.Generator().manual_seed(trial.seed)
    batch = int(config["batch_size"])
    for epoch in range(1, int(config["epochs"]) + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = nn.functional.mse_loss(model(x_train[idx]).squeeze(1), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            train_mse = nn.functional.mse_loss(model(x_train).squeeze(1), y_train).item()
            val_mse = nn.functional.mse_loss(model(x_val).squeeze(1), y_val).item()
        trial.report(epoch=epoch, train_loss=train_mse, val_loss=val_mse,
                     train_rmse=math.sqrt(train_mse) if math.isfinite(train_mse) else math.inf,
                     val_rmse=math.sqrt(val_mse) if math.isfinite(val_mse) else math.inf)


if __name__ == "__main__":  # the same loop without hpo: python friedman.py
    import hpo

    fit({"samples": 1000, "width": 64, "depth": 2, "lr": 0.01, "weight_decay": 1e-4,
         "batch_size": 32, "epochs": 5}, hpo.Trial.local())
