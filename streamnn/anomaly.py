"""`AutoencoderDetector`: streaming autoencoder anomaly detection with alarms a person can act on.

The raw score of an event is the autoencoder's reconstruction error (for a VAE, optionally the
negative ELBO) on its scaled input. By default (`alarms="likelihood"`) `score_one` returns the
*anomaly likelihood* of that error (`streamnn.alarms`): the recent mean error judged against the
long-run distribution of errors, log-scaled to [0, 1], with one alarm per incident (suppression),
a score of 1.0 for a value beyond the range seen so far, and no learning from an alarm; an alarm is
a score >= 0.5. With `alarms=None` it returns the error *calibrated* against the recent errors of
normal-looking events (`streamnn.calibration.ScoreCalibrator`, threshold 0.99). With `window > 1`
the input of an event is the last `window` events of its key (a sensor's id, or the whole
stream), so a single sensor's value stream can be scored.

>>> import random
>>> rng = random.Random(0)
>>> model = AutoencoderDetector(window=1, alarms=None, seed=0)
>>> for _ in range(1500):
...     a = rng.gauss(0, 1)
...     model.learn_one({"a": a, "b": 2 * a + rng.gauss(0, 0.1), "c": rng.gauss(0, 1)})
>>> normal, broken = {"a": 1.0, "b": 2.0, "c": 0.0}, {"a": 1.0, "b": -12.0, "c": 0.0}
>>> model.score_one(normal) < 0.9, model.score_one(broken) > 0.99
(True, True)
>>> model.predict_one(broken)
True
>>> alarms = AutoencoderDetector(window=1, seed=0)       # the default: likelihood alarms
>>> for _ in range(1500):
...     a = rng.gauss(0, 1)
...     alarms.learn_one({"a": a, "b": 2 * a + rng.gauss(0, 0.1), "c": rng.gauss(0, 1)})
>>> alarms.score_one(normal) < 0.5, alarms.predict_one(broken)
(True, True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from river import base

from .autoencoders import ENCODERS, AEKernel, AutoEncoder
from .base import TorchLearner
from .alarms import Likelihood
from .alarm_density import RecordDensity
from .alarm_signals import RangeNovelty, series_for
from .anomaly_frames import FramesMixin
from .anomaly_windows import WindowsMixin, _arg
from .calibration import CALIBRATIONS, ScoreCalibrator, default_threshold
from .keystore import remember

__all__ = ["AutoencoderDetector"]

_ESCAPE_RATE = 0.2      # recent alarm rate above which every event is treated as normal (a drift)
_ALARM_SMOOTHING = 0.01  # weight of one event in that recent alarm rate


class AutoencoderDetector(FramesMixin, WindowsMixin, TorchLearner, base.AnomalyDetector):
    """A streaming autoencoder anomaly detector with calibrated scores (higher = more anomalous).

    Parameters
    ----------
    window
        Events per input: 1 scores each event alone; W > 1 scores the last W events of the key;
        "auto" picks `clip(16 // n_features, 1, 16)` from the first event (16 for one sensor,
        2 for eight, 1 from 16 features on).
    encoder
        "dense", "conv" (Conv1d over the window) or "lstm"; the decoder is always dense.
    hidden
        Hidden widths from the input to the latent (conv: channels); None picks
        `(clip(n_in // 2, 8, 64),)` from the input width n_in = features * window.
    latent
        Bottleneck size; None picks `clip(n_in // 4, 2, 16)`.
    activation
        Activation name ("tanh", "relu", "leaky_relu", ...).
    variational
        A VAE: Gaussian latent; the raw score is the negative ELBO (`vae_score="elbo"`) or the
        reconstruction error of the latent mean (`vae_score="recon"`).
    beta
        Weight of the KL term (per input column) in the VAE loss.
    vae_score
        "elbo" or "recon" (VAE only).
    score_on
        "window": the error over the whole window; "last": over the newest event's columns only
        (the window is context; an anomaly is not smeared over the next `window` events).
    denoise
        None, "mask" (inputs dropped to their mean with probability `noise`) or "gaussian"
        (noise of standard deviation `noise`, in scaled units), applied during training only.
    noise
        The corruption level of `denoise`.
    key
        Name of the feature that identifies a series (not used as an input); each key keeps its
        own window. None: the whole stream is one series.
    alarms
        "likelihood" (default): `score_one` is the anomaly likelihood of the raw error with alarm
        suppression, range novelty and learning protection (`streamnn.alarms`; an alarm is a
        score >= 0.5); None: the calibrated score below.
    alarm_params
        Keyword arguments of `streamnn.alarms.Likelihood` (plus "novelty": the range tolerance,
        None to switch it off; "protect": events not learned from an alarm on; "context": on a
        single value stream, evidence about the value that joins the error's likelihood:
        "level" (default) its change size, its seasonal distance (the distance to the values
        about one, two and three periods back, `streamnn.alarm_season`: a day unlike the
        previous days) and its level shift (the mean of the last 30 values against the 600
        before them, `streamnn.alarm_level`: a slow drift or a new level); "season" the first
        two; "change" the change size only; True the change size and context novelty; False
        none; see `streamnn.alarm_signals.series_for` and docs/anomaly.md;
        "density": on records of several features, the `k` (default 20) of the distance to the
        `k`-th nearest of the last 1,000 records that joins the error's likelihood,
        `streamnn.alarm_density.RecordDensity`; None to switch it off).
    calibration
        With `alarms=None`: "tail", "rank", "zscore" or None (raw errors); see
        `streamnn.calibration`.
    calib_window
        How many recent errors of normal-looking events the calibration keeps.
    min_calib
        Scores are 0.0 (no alarms) until the calibration has this many errors.
    threshold
        Score at or above which `predict_one` is True; None: 0.5 (likelihood), 0.99
        ("tail"/"rank"), 3.0 ("zscore"). Required with `alarms=None, calibration=None`.
    guard
        Contamination guard: do not learn from events scored at or above the threshold (unless
        more than 20 % of recent events are, which is taken as a drift to adapt to).
    optimizer, lr, batch_size, update_every, warmup, replay, weight_decay, grad_clip, scale_inputs, lr_control, device, seed, optimizer_kwargs
        As in `streamnn.TorchClassifier` (mini-batch buffering, streaming normalization and
        plateau learning-rate control from the core).
    """

    def __init__(self, window: int | str = "auto", encoder: str = "dense", hidden: tuple | None = None,
                 latent: int | None = None, activation: str = "tanh", variational: bool = False,
                 beta: float = 1.0, vae_score: str = "elbo", score_on: str = "window", denoise: str | None = None,
                 noise: float = 0.1, key=None, alarms: str | None = "likelihood",
                 alarm_params: dict | None = None, calibration: str | None = "tail",
                 calib_window: int = 2000, min_calib: int = 200, threshold: float | None = None,
                 guard: bool = False, optimizer="adam", lr: float = 0.0003, batch_size: int = 48,
                 update_every: int = 32, warmup: int = 0, replay: float = 0.5, weight_decay: float = 0.0,
                 grad_clip: float | None = None, scale_inputs: str | None = "welford",
                 lr_control="plateau", device: str = "cpu", seed: int | None = None,
                 optimizer_kwargs: dict | None = None):
        self.window = window
        self.encoder = encoder
        self.hidden = hidden
        self.latent = latent
        self.activation = activation
        self.variational = variational
        self.beta = beta
        self.vae_score = vae_score
        self.score_on = score_on
        self.denoise = denoise
        self.noise = noise
        self.key = key
        self.alarms = alarms
        self.alarm_params = alarm_params
        self.calibration = calibration
        self.calib_window = calib_window
        self.min_calib = min_calib
        self.threshold = threshold
        self.guard = guard
        if window != "auto" and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window={window!r}: use 'auto', 1 (no window) or more events")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r}: use one of {ENCODERS}")
        if denoise not in (None, "mask", "gaussian"):
            raise ValueError(f"denoise={denoise!r}: use None, 'mask' or 'gaussian'")
        if score_on not in ("window", "last"):
            raise ValueError(f"score_on={score_on!r}: use 'window' or 'last'")
        if vae_score not in ("elbo", "recon"):
            raise ValueError(f"vae_score={vae_score!r}: use 'elbo' or 'recon'")
        if alarms not in ("likelihood", None):
            raise ValueError(f"alarms={alarms!r}: use 'likelihood' or None (calibrated scores)")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration={calibration!r}: use 'tail', 'rank', 'zscore' or None")
        self._init_common(optimizer=optimizer, lr=lr, batch_size=batch_size, update_every=update_every,
                          warmup=warmup, replay=replay, loss="mse", weight_decay=weight_decay,
                          grad_clip=grad_clip, scale_inputs=scale_inputs, lr_control=lr_control,
                          device=device, seed=seed, optimizer_kwargs=optimizer_kwargs)

    @classmethod
    def _unit_test_params(cls):
        yield {"window": 1, "hidden": (8,), "latent": 2}

    @property
    def threshold_(self) -> float:
        """The threshold `predict_one` uses."""
        t = self.threshold if self.threshold is not None else self._default_threshold()
        if t is None:
            raise ValueError("calibration=None gives raw errors with no natural threshold; pass threshold=...")
        return t

    # -- lifecycle ---------------------------------------------------------------------------

    def _default_threshold(self):
        if self.alarms == "likelihood":
            return (self.alarm_params or {}).get("alarm", 0.5)
        return default_threshold(self.calibration)

    def _configure_alarms(self, n_features: int, lk=None):
        """A single feature is a time series: smooth 10 raw errors, one alarm per 100 events; more
        features are records: each judged alone, no suppression (unless `alarm_params` says)."""
        params, lk = self.alarm_params or {}, lk or self.likelihood_
        series = n_features <= 1
        if "short" not in params:
            lk.short = 10 if series else 1
        if "suppress" not in params:
            lk.suppress = 100 if series else 0

    def _reset(self):
        super()._reset()
        params = dict(self.alarm_params or {})
        novelty, self._protect = params.pop("novelty", 0.05), params.pop("protect", 10)
        context, density = params.pop("context", "level"), params.pop("density", 20)
        self.likelihood_ = Likelihood(**params) if self.alarms else None
        self.range_ = RangeNovelty(novelty) if self.alarms and novelty is not None else None
        series = series_for(context, "alarm_params['context']")
        self.series_ = series if self.alarms else None   # used on one value stream
        self.density_ = RecordDensity(int(density)) if self.alarms and density else None   # on records
        t = self.threshold if self.threshold is not None else default_threshold(self.calibration)
        self._alarm_at = math.inf if t is None else t   # what counts as an alarm for guard/calibration
        self.calibrator_ = ScoreCalibrator(self.calibration or "rank", self.calib_window, self.min_calib,
                                           threshold=None if self.calibration is None else t)
        self.window_ = None if self.window == "auto" else self.window   # resolved window length
        self.windows_ = {}         # key -> (C, window - 1) raw values of its previous events
        self.alarm_rate_ = 0.0     # smoothed fraction of learned events at/above the threshold
        self.n_guarded_ = 0        # events not learned because of the contamination guard
        self._version = 0          # bumped whenever the raw error of a row may change
        self._memo = None          # ((version, events), x items, assessment) of the last score_one
        self._n_events = 0         # learn_one calls (window histories and calibration move on)
        self._ae_kernel = None     # numpy training step (dense, deterministic networks), or False
        self._lean = None          # (version, frozen_plan, scored columns) of the per-event scoring path

    def _n_outputs(self) -> int:
        return 0

    def _make_module(self, n_in, n_out):
        W = self.window_
        hidden = tuple(self.hidden) if self.hidden is not None else (int(np.clip(n_in // 2, 8, 64)),)
        latent = self.latent if self.latent is not None else int(np.clip(n_in // 4, 2, 16))
        return AutoEncoder(n_in // W, W, hidden, latent, self.activation, self.encoder, self.variational)

    def _invalidate(self):
        """The base's invalidation point, plus the detector's own numpy backend slot."""
        super()._invalidate()
        self._ae_kernel = None
        self._version = getattr(self, "_version", -1) + 1   # the raw error of a row may change

    def _build(self, n_in):
        super()._build(n_in)
        # corruption / VAE sampling draw from the learner's own RNG stream
        self._stochastic = bool(self.denoise or self.variational)

    def _grow_inputs(self, n_in: int):
        self.module_.grow(n_in // self.window_, self.optimizer_)
        self.n_in_ = n_in
        self._invalidate()

    def _step(self):
        kernel = self._ae_kernel
        if kernel is None:
            kernel = self._ae_kernel = (not self._stochastic and self._device.type == "cpu" and
                                        AEKernel.build(self.module_, self.optimizer_, self.grad_clip)) or False
            self._plan = None      # the kernel moved the parameters into one flat buffer
        if kernel:
            self._kernel_step(kernel)
        else:
            super()._step()
        self._version += 1         # the raw error of a row may have changed
        if self.encoder == "conv":
            self._plan = None      # the folded conv matrices are copies: rebuild after a step

    def _kernel_step(self, kernel):
        """The base class's step, with the numpy kernel doing forward, backward and update."""
        X, _, W, p = self._batch()
        self._pending = 0
        unit = W.min() == 1.0 and W.max() == 1.0
        per = kernel.step(self._scale(X), None if unit else W)
        self._record_step(float(per[-p:].mean()), bool(np.isfinite(per).all()), p)

    def __getstate__(self):
        state = super().__getstate__()
        state["_memo"] = state["_ae_kernel"] = state["_lean"] = None   # numpy views must not be copied apart from tensors
        return state

    def _prepare_targets(self, Y):
        return Y.astype(np.float32)

    def _train_forward(self, Z, T):  # Z (B, n_in) scaled; the targets are Z itself
        module = self.module_
        if not module.training:
            module.train()
        if not self._stochastic:
            recon, _, _ = module(Z)
            return ((recon - Z) ** 2).mean(1)                                          # (B,)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            Zin = Z
            if self.denoise == "mask":
                Zin = Z * (torch.rand_like(Z) >= self.noise)
            elif self.denoise == "gaussian":
                Zin = Z + self.noise * torch.randn_like(Z)
            recon, mu, logvar = module(Zin)
            per = ((recon - Z) ** 2).mean(1)                                            # (B,)
            if logvar is not None:
                kl = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar).sum(1)
                per = per + self.beta * kl / Z.shape[1]
            self._rng_state = torch.get_rng_state()
        return per

    # -- river API ---------------------------------------------------------------------------

    def learn_one(self, x: dict) -> None:
        # 1. the event's window and score before learning (cached from a score_one of the same event)
        hit = self._cached(x)
        xs = x if self.key is None else {n: v for n, v in x.items() if n != self.key}
        if hit is not None:
            k, win, raw, score, novel, extra = hit
        else:   # features may grow the registry, then the network
            k, win = self._event(x, grow=True)
            if self.module_ is not None and win.size > self.n_in_:
                self._grow_inputs(win.size)
            raw = score = math.nan
            if self.module_ is not None and win.size:
                raw = self._raw_errors(win.ravel())
                score = self._calibrate(raw)
            novel = self.range_ is not None and self.range_.novel(xs)
            extra = self._extra(win)
        self._n_events += 1
        if self.likelihood_ is not None:       # 2'. likelihood alarms, no calibration
            lk = self.likelihood_
            if lk.n == 0 and not math.isnan(raw):
                self._configure_alarms(len(xs))
            lk.update(raw, novel, extra)
            if self.range_ is not None:
                self.range_.update(xs)
            if extra:
                self._evidence(win.shape[0]).update(_arg(win[:, -1]))
            if win.shape[1] > 1:                 # win is a fresh array, never written again
                remember(self.windows_, k, win[:, 1:])   # at most MAX_KEYS keys' windows
            if lk.since < self._protect:        # lk.protects(self._protect), inlined
                self.n_guarded_ += 1
            else:
                self._learn_row(win.ravel(), 0.0)
            return
        # 2. normal-looking errors feed the calibration
        admit = True
        if not math.isnan(raw):
            alarm = self.calibrator_.ready and score >= self._alarm_at
            self.alarm_rate_ += _ALARM_SMOOTHING * (float(alarm) - self.alarm_rate_)
            admit = not alarm or self.alarm_rate_ > _ESCAPE_RATE
            self.calibrator_.update(raw, alarm=alarm)
        # 3. the key's history always moves on; the network learns unless guarded
        if win.shape[1] > 1:
            remember(self.windows_, k, win[:, 1:])
        if admit or not self.guard:
            self._learn_row(win.ravel(), 0.0)
        else:
            self.n_guarded_ += 1


    def score_one(self, x: dict) -> float:
        """Anomaly score of `x`: the likelihood score in [0, 1] (at most 0.4, no alarm, during its
        learning period) or, with `alarms=None`, the calibrated score (0.0 before `min_calib` errors)."""
        if self.module_ is None:
            return 0.0
        a = self._assess(x)
        return a[3] if self.likelihood_ is None else self.likelihood_.score(a[2], a[4], a[5])

    def raw_score_one(self, x: dict) -> float:
        """The uncalibrated reconstruction error (or negative ELBO) of `x`."""
        if self.module_ is None:
            return 0.0
        return self._assess(x)[2]

    def predict_one(self, x: dict) -> bool:
        """True when the calibrated score reaches `threshold_`."""
        return self.score_one(x) >= self.threshold_
