"""Save a learner mid-stream and continue from the file: identical predictions, no pickle."""

import os
import tempfile

from river import datasets

import streamnn

stream = list(datasets.Phishing())
model = streamnn.MLPClassifier(seed=7)
for x, y in stream[:600]:
    model.learn_one(x, y)

path = os.path.join(tempfile.mkdtemp(), "phishing.pt")
model.save(path)                       # atomic write; tensors and plain types only
restored = streamnn.load(path)         # torch.load(weights_only=True) underneath

for x, y in stream[600:]:
    assert model.predict_proba_one(x) == restored.predict_proba_one(x)
    model.learn_one(x, y)
    restored.learn_one(x, y)
print(f"saved to {path}; {len(stream) - 600} more events learned identically by both copies")
