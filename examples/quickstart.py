"""Quickstart: an MLP classifier on river's Phishing stream, with progressive validation."""

from river import datasets, evaluate, metrics

import streamnn

model = streamnn.MLPClassifier(hidden=(32,), seed=42)
metric = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy(), print_every=250)
print(f"final: {metric}  lr now {model.lr_:.4g}  optimizer steps {model.n_updates_}")
