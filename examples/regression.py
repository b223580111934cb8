"""A regressor inside a river pipeline, on river's TrumpApproval stream (targets learned in scaled
units, predicted in the original ones)."""

from river import compose, datasets, evaluate, metrics

import streamnn

model = compose.Pipeline(
    compose.Discard("ordinal_date"),
    streamnn.MLPRegressor(hidden=(32,), update_every=1, lr=0.03, seed=42),
)
metric = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE(), print_every=250)
print(f"final: {metric}")
