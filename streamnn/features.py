"""Stable feature-name -> column registry.

Features are matched by name, never by dict order: the first time a name is seen it gets the next
free column, and a column never moves afterwards. Growth (a new feature mid-stream) therefore only
appends columns, so the weights learned for existing columns keep their meaning.

>>> reg = FeatureRegistry()
>>> reg.row({"b": 2.0, "a": 1.0}).tolist()     # names first seen together are sorted
[1.0, 2.0]
>>> reg.row({"c": True, "0": 3.0}).tolist()    # "a", "b" missing -> NaN; new names append
[nan, nan, 3.0, 1.0]
>>> reg.names
['a', 'b', '0', 'c']
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["FeatureRegistry", "FeatureTypeError", "series_key"]


def series_key(v):
    """The series a key value names: NaN (how a frame or the runtime shows a null or absent
    key) is the missing key None, like an absent one; NaN != NaN would make every such event a
    series of its own.

    >>> series_key(float("nan")), series_key(3.0), series_key("m1")
    (None, 3.0, 'm1')
    """
    return None if v != v else v


class FeatureTypeError(TypeError):
    """A feature value that is not a number; the message names the feature and the fix."""


def _type_error(name, value) -> FeatureTypeError:
    kind = type(value).__name__
    if isinstance(value, str):
        fix = (
            "put river.preprocessing.OneHotEncoder() (or another encoder) before the learner, "
            "or drop the field from the features"
        )
    else:
        fix = "convert it to a float before the learner, or drop the field from the features"
    return FeatureTypeError(f"feature {name!r} is a {kind} ({value!r}); {fix}")


class FeatureRegistry:
    """Maps feature names to fixed columns and turns dicts into float rows.

    Missing features and non-finite values become NaN; the learner's scaler imputes them.
    """

    def __init__(self):
        self.index: dict = {}
        self.names: list = []

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name) -> int:
        col = self.index.get(name)
        if col is None:
            col = self.index[name] = len(self.names)
            self.names.append(name)
        return col

    def row(self, x: dict, grow: bool = True) -> np.ndarray:
        """One dict -> a float64 row of the registry's width (grown first when `grow`)."""
        index, n0 = self.index, len(self.names)
        if grow and len(x) > 0:
            new = [k for k in x if k not in index]
            if new:  # sorted, so that columns never depend on the order of keys in one event
                for k in sorted(new, key=_sort_key):
                    self.add(k)
        try:
            return self._row(x)
        except FeatureTypeError:
            self._forget(n0)     # a refused event registers no feature
            raise

    def _forget(self, n: int):
        """Drop the names registered after the first `n`."""
        for k in self.names[n:]:
            del self.index[k]
        del self.names[n:]

    def _row(self, x: dict) -> np.ndarray:
        index = self.index
        out = np.full(len(self.names), np.nan)
        for k, v in x.items():
            col = index.get(k)
            if col is None or v is None:
                continue
            if isinstance(v, (str, bytes)):
                raise _type_error(k, v)
            try:
                out[col] = v
            except OverflowError:   # an integer beyond the float range: like inf, missing
                pass
            except (TypeError, ValueError):
                raise _type_error(k, v) from None
        if np.isinf(out).any():   # inf is treated as missing, like NaN
            out[np.isinf(out)] = np.nan
        return out

    def check_values(self, x: dict):
        """Raise a FeatureTypeError for the first value that is not a real number."""
        for k, v in x.items():
            if not isinstance(v, numbers.Real) and v is not None:
                raise _type_error(k, v)

    def frame(self, X, grow: bool = True) -> np.ndarray:
        """A pandas DataFrame -> a float64 matrix with the registry's columns."""
        _check_unique(X)
        n0 = len(self.names)
        if grow:
            for k in sorted((k for k in X.columns if k not in self.index), key=_sort_key):
                self.add(k)
        try:
            return self._frame(X)
        except FeatureTypeError:
            self._forget(n0)     # a refused frame registers no feature
            raise

    def _frame(self, X) -> np.ndarray:
        out = self._numeric_frame(X)
        if out is not None:
            return out
        out = np.full((len(X), len(self.names)), np.nan)
        for k in X.columns:
            if k not in self.index:
                continue
            col = X[k]
            if getattr(col.dtype, "kind", "O") in "mM":   # datetimes and durations: refused, as `row` does
                present = col.dropna()                    # (to_numpy would turn them into nanoseconds)
                if len(present):
                    raise _type_error(k, present.iloc[0])
            if getattr(col.dtype, "kind", "O") == "O":   # numpy would parse a text "1.5" as a number; `row` refuses text
                bad = next((v for v in col if isinstance(v, (str, bytes))), None)
                if bad is not None:
                    raise _type_error(k, bad)
            try:
                out[:, self.index[k]] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            except OverflowError:   # integers beyond the float range: like inf, missing
                out[:, self.index[k]] = [self.row({k: v}, grow=False)[self.index[k]] for v in col]
            except (TypeError, ValueError):
                bad = next(v for v in col if not _is_number(v))
                raise _type_error(k, bad) from None
        out[np.isinf(out)] = np.nan
        return out

    def _numeric_frame(self, X) -> np.ndarray | None:
        """`frame` in one conversion when every column holds plain numbers (numpy float, int or
        bool dtypes, which is what the column by column conversion would read); else None."""
        if not X.columns.is_unique:
            return None
        A = X.to_numpy()
        if A.dtype.kind not in "fiub":
            return None
        if A.dtype != np.float64:
            A = X.to_numpy(dtype=np.float64)
        cols = X.columns.tolist()
        if cols == self.names:
            out = np.array(A, dtype=np.float64, order="C")
        else:
            out = np.full((len(X), len(self.names)), np.nan)
            index = self.index
            pos = [(j, index[k]) for j, k in enumerate(cols) if k in index]
            if pos:
                src, dst = zip(*pos)
                out[:, list(dst)] = A[:, list(src)]
        inf = np.isinf(out)   # (not a sum's finiteness: +inf and -inf, or 1e308s, warned in numpy)
        if inf.any():
            out[inf] = np.nan
        return out

    def frame_rows(self, X):
        """Like `frame`, but new columns are registered in the order a `row()` loop would do it:
        at the first row where they hold a value (names sorted within that row). Returns the
        matrix and, per row, the registry's width at that row, so `M[i, :widths[i]]` is exactly
        what `row()` would have returned for row i.

        >>> import pandas as pd
        >>> reg = FeatureRegistry()
        >>> M, widths = reg.frame_rows(pd.DataFrame({"b": [None, 2.0], "a": [1.0, None]}))
        >>> reg.names, widths.tolist()
        (['a', 'b'], [1, 2])
        """
        _check_unique(X)
        n0 = len(self.names)
        unknown = [k for k in X.columns if k not in self.index]
        widths = np.full(len(X), len(self.names), dtype=np.int64)
        if unknown:
            present = X[unknown].notna().to_numpy()
            first = {}
            for j, k in enumerate(unknown):
                hit = present[:, j]
                if hit.any():
                    first.setdefault(int(hit.argmax()), []).append(k)
            for i in sorted(first):
                for k in sorted(first[i], key=_sort_key):
                    self.add(k)
                widths[i:] = len(self.names)
        try:
            return self.frame(X, grow=False), widths
        except FeatureTypeError:
            self._forget(n0)
            raise

    def state_dict(self) -> dict:
        return {"names": list(self.names)}

    def load_state_dict(self, state: dict):
        self.names = list(state["names"])
        self.index = {n: i for i, n in enumerate(self.names)}


def _check_unique(X) -> None:
    if not X.columns.is_unique:
        dup = X.columns[X.columns.duplicated()].unique().tolist()
        raise ValueError(f"columns {dup} appear more than once in the frame; give each feature one column")


def _is_number(v) -> bool:
    return v is None or isinstance(v, numbers.Real) or (isinstance(v, float) and math.isnan(v))


def _sort_key(name):
    return (type(name).__name__, str(name))
