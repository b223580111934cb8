"""NAB scoring: the published rules on small hand-made corpora, a brute-force oracle, and the full corpus."""

from pathlib import Path

import numpy as np
import pytest

from streamnn.evaluation.nab import (PROFILES, load_corpus, point_weights, probation_length, scaled_sigmoid,
                                     score_corpus, sweep)

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"


def _file(n, windows, hits=()):
    s = np.zeros(n)
    s[list(hits)] = 1.0
    return {"scores": s, "windows": windows}


def _raw_at(files, thr, profile):
    """NAB's score at one threshold, point by point (the oracle for the vectorized sweep)."""
    a_tp, a_fp, a_fn = profile
    total = 0.0
    for f in files:
        w, wid = point_weights(len(f["scores"]), f["windows"], profile)
        best = {}
        for i, sc in enumerate(f["scores"]):
            if sc < thr or wid[i] == -2:
                continue
            if wid[i] == -1:
                total += w[i]
            elif wid[i] not in best:       # the earliest detection of the window
                best[wid[i]] = w[i]
        total += sum(best.values()) - a_fn * (len(f["windows"]) - len(best))
    return total


def test_weights_follow_the_published_rules():
    assert probation_length(1000) == 150 and probation_length(10_000) == 750
    assert scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(3.5) == -1.0
    assert abs(scaled_sigmoid(-1.0) - (2 / (1 + np.exp(-5)) - 1)) < 1e-12
    w, wid = point_weights(400, [(200, 249)], PROFILES["standard"])
    assert (wid[:60] == -2).all() and (wid[200:250] == 0).all() and wid[199] == -1
    assert w[200] == pytest.approx(1.0)                      # the window's first point: A_TP
    assert w[249] > 0 and w[249] < 0.2 and np.all(np.diff(w[200:250]) < 0)   # earlier is better
    assert w[150] == pytest.approx(-0.11)                    # before any window: -A_FP
    assert -0.01 < w[250] < 0 and w[399] == pytest.approx(-0.11)   # just past / far past a window
    assert np.all(np.diff(w[250:]) <= 0)


def test_null_perfect_and_one_detection():
    files = [_file(1000, [(300, 349), (700, 749)]), _file(600, [(400, 459)])]
    for name, (a_tp, a_fp, a_fn) in PROFILES.items():
        assert score_corpus([_file(1000, f["windows"]) for f in files])[name]["score"] == 0.0
        perfect = [_file(1000, [(300, 349), (700, 749)], [300, 700]), _file(600, [(400, 459)], [400])]
        assert score_corpus(perfect)[name]["score"] == pytest.approx(100.0)
    late = score_corpus([_file(1000, [(300, 349)], [340])])["standard"]["score"]
    early = score_corpus([_file(1000, [(300, 349)], [305])])["standard"]["score"]
    both = score_corpus([_file(1000, [(300, 349)], [305, 340])])["standard"]["score"]
    assert 50 < late < early < 100 and both == early          # only the earliest detection counts
    # a false positive far from windows costs A_FP; so an isolated FP lowers the score
    with_fp = score_corpus([_file(1000, [(300, 349)], [305, 900])])["standard"]
    assert with_fp["score"] < early and with_fp["false_positives"] == 1
    # detections inside the probationary period are ignored
    assert score_corpus([_file(1000, [(300, 349)], [5, 305])])["standard"]["score"] == early


def test_one_threshold_for_the_whole_corpus():
    # file A needs a threshold of 0.5 to find its window; file B has a false positive at 0.6
    a = {"scores": np.r_[np.zeros(300), [0.5], np.zeros(699)], "windows": [(290, 339)]}
    b = {"scores": np.r_[np.zeros(300), [0.6], np.zeros(699)], "windows": [(800, 849)]}
    thr, raw = sweep([a, b], PROFILES["standard"])
    assert thr == 0.5                                         # finding A is worth B's FP
    assert raw == pytest.approx(_raw_at([a, b], 0.5, PROFILES["standard"]))


@pytest.mark.parametrize("profile", list(PROFILES))
def test_sweep_equals_a_point_by_point_loop(profile):
    rng = np.random.default_rng(3)
    files = []
    for n in (500, 800, 1200):
        s = np.round(rng.random(n), 2)                        # ties on purpose
        files.append({"scores": s, "windows": [(n // 3, n // 3 + 40), (2 * n // 3, 2 * n // 3 + 40)]})
    prof = PROFILES[profile]
    thr, raw = sweep(files, prof)
    grid = np.unique(np.concatenate([f["scores"] for f in files]))
    brute = max([_raw_at(files, t, prof) for t in grid] + [_raw_at(files, np.inf, prof)])
    assert raw == pytest.approx(brute)
    assert raw == pytest.approx(_raw_at(files, thr, prof))


@pytest.mark.slow
@pytest.mark.skipif(not NAB.exists(), reason="NAB corpus not present")
def test_full_corpus_null_perfect_random():
    corpus = load_corpus(NAB)
    assert len(corpus) == 58 and sum(len(c["windows"]) for c in corpus) == 116
    null = score_corpus([{"scores": np.zeros(len(c["values"])), "windows": c["windows"]} for c in corpus])
    hits = [{"scores": np.isin(np.arange(len(c["values"])), [lo for lo, _ in c["windows"]]).astype(float),
             "windows": c["windows"]} for c in corpus]
    perfect = score_corpus(hits)
    assert all(null[p]["score"] == 0.0 and perfect[p]["score"] == pytest.approx(100.0) for p in PROFILES)
    rand = [score_corpus([{"scores": np.random.default_rng(seed).random(len(c["values"])),
                           "windows": c["windows"]} for c in corpus])["standard"]["score"] for seed in range(6)]
    assert 6.0 < np.mean(rand) < 16.0                         # NAB's random detector: 11.0
