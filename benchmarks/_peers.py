"""Import deep-river (the peer we benchmark against) next to a current river.

deep-river 0.3.4 pins an old river and imports `river.anomaly.base`, which river 0.26 moved to
`river.base`. Install it with `pip install --no-deps deep-river` (never as a dependency of
streamnn); `import_deep_river()` adds the alias and imports it, or returns None if it is missing.
"""

from __future__ import annotations

import sys
import types


def import_deep_river():
    import river.anomaly
    import river.base

    if "river.anomaly.base" not in sys.modules:
        shim = types.ModuleType("river.anomaly.base")
        shim.AnomalyDetector = river.base.AnomalyDetector
        shim.SupervisedAnomalyDetector = getattr(river.base, "SupervisedAnomalyDetector", None)
        sys.modules["river.anomaly.base"] = shim
        river.anomaly.base = shim
    try:
        import deep_river
    except ImportError:
        return None
    return deep_river
