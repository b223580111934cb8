"""Bring your own nn.Module: TorchClassifier builds it lazily once the input width is known."""

from river import datasets, evaluate, metrics
from torch import nn

import streamnn


class ResidualNet(nn.Module):
    """Any module works; the first nn.Linear reads the features, the last one gives the logits."""

    def __init__(self, n_features, n_outputs, width=32):
        super().__init__()
        self.inp = nn.Linear(n_features, width)
        self.block = nn.Sequential(nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.out = nn.Linear(width, n_outputs)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.block(h))


model = streamnn.TorchClassifier(ResidualNet, {"width": 16}, seed=0)
metric = evaluate.progressive_val_score(datasets.ImageSegments(), model, metrics.Accuracy(), print_every=500)
print(f"final: {metric}, classes {model.classes_}")
