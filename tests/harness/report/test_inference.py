"""The claims' statistics (harness.report.inference) against references, then proved by simulation.

References: scipy.stats' one-sample t test, statsmodels' paired TOST and power, Holm and
Benjamini-Hochberg by hand. Simulations draw claims from known distributions and run them through
the same functions the report uses (`claim_images.image_term`, `inference.estimate`, `adjust`,
`equivalence_p`, `Sequential`); each one is also run on a deliberately broken formula, which must
fail the same bound. Seeded; the rates measured are in the assertion messages (pytest -rA shows
them with -s off: they are printed too).
"""

from __future__ import annotations

import math

import numpy as np
import pandas
import pytest
import scipy.stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from harness.report import claim_images, claims, inference
from harness.report.inference import Sequential, adjust, equivalence_p, estimate

# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.5], [0.3, -0.2, 0.1, 0.5, 0.05], [-4.0, -2.5]])
def test_seeds_only_is_students_t(values):
    got, want = estimate(values), scipy.stats.ttest_1samp(values, 0.0)
    interval = want.confidence_interval(0.95)
    assert got.p == pytest.approx(want.pvalue, rel=1e-12)
    assert (got.ci_low, got.ci_high) == (
        pytest.approx(interval.low, rel=1e-12),
        pytest.approx(interval.high, rel=1e-12),
    )
    assert got.sources == "seeds" and got.n == len(values)


def test_a_p_value_is_where_the_interval_reaches_zero():
    """With an image term the p has no closed form: it is the alpha at which the interval just
    touches 0 (and the 95 % interval excludes 0 exactly when p < 0.05)."""
    got = estimate([1.0, 2.0, 3.5], image_se=0.5)
    assert got.half_width(got.p) == pytest.approx(abs(got.mean), rel=1e-9)
    assert got.sources == "seeds + images"
    t, z = scipy.stats.t.isf(0.025, 2), scipy.stats.norm.isf(0.025)
    assert got.ci_high - got.mean == pytest.approx(math.hypot(t * got.seed_se, z * 0.5))


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0])
def test_equivalence_is_statsmodels_paired_tost(margin):
    ours, base = np.array([5.0, 6.1, 5.5, 5.9, 5.4]), np.array([5.2, 5.8, 5.6, 5.5, 5.3])
    want = ttost_paired(ours, base, -margin, margin)[0]
    assert equivalence_p(estimate(ours - base), margin) == pytest.approx(want, rel=1e-9)


def test_holm_and_benjamini_hochberg_by_hand():
    holm, bh = adjust([0.01, 0.04, 0.03, 0.20, math.nan])
    # Holm: sorted 0.01 x 4, 0.03 x 3, 0.04 x 2 (raised to 0.09, monotone), 0.20 x 1; NaN is no test.
    assert holm[:4] == pytest.approx([0.04, 0.09, 0.09, 0.20]) and math.isnan(holm[4])
    # BH: 0.01 x 4/1, 0.03 x 4/2, 0.04 x 4/3, 0.20, then the running minimum from the top.
    assert bh[:4] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])


@pytest.mark.parametrize("std, difference", [(1.1, 1.1), (2.0, 1.7), (0.6, 0.3)])
def test_seeds_for_power_is_statsmodels_solve_power(std, difference):
    want = math.ceil(TTestPower().solve_power(effect_size=difference / std, alpha=0.05 / 9, power=0.8))
    assert inference.seeds_for_power(std, math.nan, difference, 0.05 / 9) == want


def test_seeds_for_power_gives_up_when_the_image_term_alone_is_too_wide():
    assert inference.seeds_for_power(1.0, 2.0, 1.0, 0.05) is None
    assert inference.seeds_for_power(1.0, 0.1, 1.0, 0.05) > inference.seeds_for_power(
        1.0, math.nan, 1.0, 0.05
    )


def test_the_image_term_of_a_mean_is_its_bootstrap_standard_error():
    """One object per image: the bootstrap SE of the mean difference is sqrt(var / N) (population
    variance), to the Monte Carlo error of 1000 draws (2 %)."""
    rng = np.random.default_rng(3)
    values = rng.normal(0, 10, 200)
    ours = claim_images.mean_per_image(pandas.DataFrame({"image_id": np.arange(200), "v": values / 100}), "v")
    base = claim_images.mean_per_image(
        pandas.DataFrame({"image_id": np.arange(200), "v": np.zeros(200)}), "v"
    )
    got = claim_images.image_term([ours], [base], {}, lambda i, side: (i, side))
    assert got == pytest.approx(values.std() / math.sqrt(200), rel=0.06)


def test_alpha_spending_spends_alpha_over_the_looks():
    design = Sequential(first=3, step=2, max_seeds=10)
    assert design.looks() == [3, 5, 7, 9, 10]
    assert sum(design.level(n) for n in design.looks()) == pytest.approx(0.05)
    assert design.level(4) == design.level(3) > 0 and design.level(2) == 0


# --------------------------------------------------------------------------- simulations


def test_the_fast_tails_are_scipy_stats():
    for q, df in ((0.025, 2), (1e-9, 4), (0.4, 30)):
        assert inference.t_isf(q, df) == pytest.approx(scipy.stats.t.isf(q, df), rel=1e-10)
        assert inference.t_sf(inference.t_isf(q, df), df) == pytest.approx(q, rel=1e-8)
        assert inference.normal_isf(q) == pytest.approx(scipy.stats.norm.isf(q), rel=1e-10)


def normal_for_t(monkeypatch):
    """A broken formula: the normal's tails where Student t's belong (df ignored)."""
    monkeypatch.setattr(inference, "t_isf", lambda q, df: inference.normal_isf(q))
    monkeypatch.setattr(inference, "t_sf", lambda x, df: float(scipy.stats.norm.sf(x)))


def seeds_only_coverage(sims: int, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        est = estimate(rng.normal(1.0, 2.0, n))
        hits += est.ci_low <= 1.0 <= est.ci_high
    return hits / sims


def test_intervals_over_seeds_cover_the_truth_95_percent(monkeypatch):
    coverage = seeds_only_coverage(4000, 3)
    print(f"seeds only, n=3: coverage {coverage:.3f}")
    assert 0.94 <= coverage <= 0.96, coverage
    normal_for_t(monkeypatch)
    broken = seeds_only_coverage(4000, 3)
    print(f"seeds only, n=3, normal quantile for t: coverage {broken:.3f}")
    assert not 0.94 <= broken <= 0.96, broken


def two_level_coverage(
    sims: int, n: int, images: int, seed_sd: float, image_sd: float, seed: int = 1
) -> float:
    """Per image and seed a paired difference 1 + seed effect + image effect + noise; the metric is
    the mean over images; the truth is 1. Through claim_images.image_term and inference.estimate."""
    rng = np.random.default_rng(seed)
    zeros = pandas.DataFrame({"image_id": np.arange(images), "v": np.zeros(images)})
    base = claim_images.mean_per_image(zeros, "v")
    hits, cache = 0, {}
    for k in range(sims):
        x = (
            1.0
            + rng.normal(0, seed_sd, (n, 1))
            + rng.normal(0, image_sd, (1, images))
            + rng.normal(0, 1, (n, images))
        )
        ours = [
            claim_images.mean_per_image(
                pandas.DataFrame({"image_id": np.arange(images), "v": row / 100}), "v"
            )
            for row in x
        ]
        image_se = claim_images.image_term(ours, [base] * n, cache, lambda i, side, k=k: (k, i, side))
        est = estimate(x.mean(axis=1), image_se)
        hits += est.ci_low <= 1.0 <= est.ci_high
    return hits / sims


@pytest.mark.parametrize(
    "n, seed_sd, image_sd, low, high",
    [(5, 0.3, 3.0, 0.93, 0.985), (3, 1.0, 1.0, 0.93, 0.99)],
    ids=["images dominate", "seeds dominate"],
)
def test_intervals_over_seeds_and_images_cover_the_truth(monkeypatch, n, seed_sd, image_sd, low, high):
    coverage = two_level_coverage(600, n, 100, seed_sd, image_sd)
    print(f"seeds + images ({n} seeds, 100 images, sd {seed_sd} / {image_sd}): coverage {coverage:.3f}")
    assert low <= coverage <= high, coverage
    if image_sd > seed_sd:  # broken: a "bootstrap" that never resamples the images (image term 0)
        monkeypatch.setattr(
            inference, "image_weights", lambda count, *a, **k: np.ones((50, count), dtype=np.int64)
        )
        broken = two_level_coverage(600, n, 100, seed_sd, image_sd)
        print(f"  without the image term: coverage {broken:.3f}")
        assert not low <= broken <= high, broken


# Table 4's claims as pairs of its six rows (the ablations suite's nine mask-AP claims share rows).
ROWS = ("baseline", "shapeprop", "agnostic", "more params", "more boxes", "more boxes + shapeprop")
PAIRS = ((1, 0), (2, 0), (3, 0), (1, 3), (1, 2), (4, 0), (5, 4), (5, 1), (5, 0))


def familywise_error(sims: int, seeds: int = 3, seed: int = 2) -> float:
    """Every row with the same true mean (every null true): how often any of the nine claims is decided."""
    rng = np.random.default_rng(seed)
    wrong = 0
    for _ in range(sims):
        runs = rng.normal(15.0, 1.1, (len(ROWS), seeds))  # a row x seed table of mask AP
        p = [estimate(runs[a] - runs[b]).p for a, b in PAIRS]
        holm, _ = inference.adjust(p)
        wrong += bool((holm <= inference.ALPHA).any())
    return wrong / sims


def test_the_familywise_error_under_the_null_is_at_most_5_percent(monkeypatch):
    rate = familywise_error(3000)
    print(f"family of 9 claims, all null, Holm: family-wise error {rate:.3f}")
    assert rate <= 0.058, rate  # 0.05 + 2 Monte Carlo SE
    monkeypatch.setattr(
        inference, "adjust", lambda p: (np.asarray(p), np.asarray(p))
    )  # broken: no adjustment
    broken = familywise_error(3000)
    print(f"  unadjusted: family-wise error {broken:.3f}")
    assert broken > 0.058, broken


def test_the_report_judges_a_family_with_the_same_functions():
    """judge() decides exactly the lines whose Holm-adjusted p is at most 0.05."""
    rng = np.random.default_rng(4)
    runs = rng.normal(15.0, 1.1, (len(ROWS), 5)) + np.array([0, 3, 0, 0, 5, 6])[:, None]
    lines = []
    for a, b in PAIRS:
        est = estimate(runs[a] - runs[b])
        lines.append(
            {"suite": "s", "family": "claims", "metric": "mask AP", "direction": "higher", "paper": 1.0, "margin": math.nan, "test": "difference"}
            | {k: getattr(est, k) for k in ("n", "mean", "std", "ci_low", "ci_high", "p", "image_se")}
        )  # fmt: skip
    judged = claims.judge(pandas.DataFrame(lines), plan=False)
    holm, _ = adjust([line["p"] for line in lines])
    assert list(judged["verdict"] != claims.UNDECIDED) == list(holm <= 0.05)
    assert 0 < (holm <= 0.05).sum() < len(PAIRS)  # the check sees both outcomes


def equivalence_accepted(
    sims: int, n: int, sd: float, truth: float, margin: float = 1.0, seed: int = 5
) -> float:
    rng = np.random.default_rng(seed)
    accepted = 0
    for _ in range(sims):
        accepted += inference.equivalence_p(estimate(rng.normal(truth, sd, n)), margin) <= inference.ALPHA
    return accepted / sims


def test_equivalence_accepts_a_true_zero_and_rejects_twice_the_margin(monkeypatch):
    at_zero = equivalence_accepted(2000, 10, 0.5, 0.0)
    at_margin = equivalence_accepted(2000, 10, 0.5, 1.0)
    at_twice = equivalence_accepted(2000, 10, 0.5, 2.0)
    few_seeds_twice = equivalence_accepted(2000, 3, 2.0, 2.0)
    print(
        f"TOST, 10 seeds sd 0.5, margin 1: accepts {at_zero:.3f} at 0, {at_margin:.3f} at the margin, {at_twice:.3f} at 2x"
    )
    assert at_zero >= 0.95 and at_margin <= 0.058 and at_twice <= 0.01
    assert few_seeds_twice <= 0.058
    # broken: only the lower of the two one-sided tests
    monkeypatch.setattr(
        inference, "equivalence_p", lambda est, margin: est.p_beyond(est.mean + margin, sides=1)
    )
    broken = equivalence_accepted(2000, 10, 0.5, 2.0)
    print(f"  one one-sided test only: accepts {broken:.3f} at 2x the margin")
    assert broken > 0.01


def sequential_error(sims: int, design: Sequential, level, seed: int = 6) -> float:
    """No true difference; seeds added one look at a time, stopping at the first decision."""
    rng = np.random.default_rng(seed)
    wrong = 0
    for _ in range(sims):
        differences = rng.normal(0.0, 1.1, design.max_seeds)
        wrong += any(estimate(differences[:n]).p <= level(n) for n in design.looks())
    return wrong / sims


def test_seeds_until_decided_keeps_its_error_rate_under_optional_stopping():
    design = Sequential(first=3, step=1, max_seeds=10)
    rate = sequential_error(2500, design, design.level)
    naive = sequential_error(2500, design, lambda n: inference.ALPHA)  # broken: 5 % at every look
    print(
        f"8 looks (3..10 seeds), no true difference: error {rate:.3f} with alpha spending, {naive:.3f} at 5 % each look"
    )
    assert rate <= 0.058, rate
    assert naive > 0.058, naive
