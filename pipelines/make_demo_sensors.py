"""Generate streamnn/data/demo_sensors.csv: two machines, three correlated sensors, 5-minute steps.

Each machine has a daily load cycle; temperature follows the load with a lag, pressure follows
temperature, vibration rises with load and with a slow wear trend, and each sensor has its own
noise. The two machines' rows are interleaved (key = machine). Deterministic (seeded), so the
bundled file can be regenerated bit for bit:

    python pipelines/make_demo_sensors.py
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "streamnn", "data", "demo_sensors.csv")


def rows(n_steps: int = 3000, seed: int = 11):
    rng = random.Random(seed)
    start = datetime.datetime(2024, 3, 1)
    state = {m: {"temp": 60.0 + 5 * i, "wear": 0.0} for i, m in enumerate(("m1", "m2"))}
    for t in range(n_steps):
        ts = (start + datetime.timedelta(minutes=5 * t)).isoformat(sep=" ")
        for i, machine in enumerate(("m1", "m2")):
            s = state[machine]
            load = 0.5 + 0.4 * math.sin(2 * math.pi * (t / 288.0) + i) + rng.gauss(0, 0.05)
            s["temp"] += 0.08 * (55.0 + 30.0 * load + 5 * i - s["temp"]) + rng.gauss(0, 0.3)
            s["wear"] += 1e-4
            pressure = 1.0 + 0.02 * (s["temp"] - 60.0) + rng.gauss(0, 0.01)
            vibration = 0.2 + 0.5 * load + s["wear"] + abs(rng.gauss(0, 0.03))
            yield [ts, machine, round(s["temp"], 3), round(pressure, 4), round(vibration, 4)]


def main(path: str = OUT) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "machine", "temperature", "pressure", "vibration"])
        w.writerows(rows())
    return path


if __name__ == "__main__":
    print(main())
