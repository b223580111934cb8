"""Writes the checkpoints that `tests/test_sequence_frames.py` loads: sequence learners saved by
the code before the frame-level `learn_many` (commit 3e8f13e, main), with the predictions that code
made after loading them and after learning more. Run from the repository root of that version:

    PYTHONPATH=/path/to/old/checkout python3 tests/data/sequence_main/make.py tests/data/sequence_main
"""

import json
import random
import sys
from pathlib import Path

from streamnn.sequence import LSTMClassifier, LSTMRegressor


def stream(n, n_keys, seed):
    rng = random.Random(seed)
    return [({"id": f"k{rng.randrange(n_keys)}", "a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}, rng.gauss(0, 1))
            for _ in range(n)]


MODELS = {
    "regressor": lambda: LSTMRegressor(key="id", seed=1, hidden_size=8, bptt=8, update_every=5),
    "classifier": lambda: LSTMClassifier(key="id", seed=2, hidden_size=6, stateful=False, window=4, cell="gru"),
}


def predict(model, x):
    if isinstance(model, LSTMClassifier):
        return model.predict_proba_one(x)
    return model.predict_one(x)


def label(model, y):
    return y > 0 if isinstance(model, LSTMClassifier) else y


def run(out: Path):
    expected = {}
    for name, make in MODELS.items():
        data = stream(400, 5, seed=len(name))
        model = make()
        for x, y in data[:250]:
            model.learn_one(x, label(model, y))
        model.save(out / f"{name}.pt")
        after = []
        for x, y in data[250:]:
            after.append(predict(model, x))
            model.learn_one(x, label(model, y))
        expected[name] = after
    (out / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    run(Path(sys.argv[1]))
