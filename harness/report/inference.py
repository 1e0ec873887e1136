"""The statistics of a claim: a paired difference between two rows, over training seeds and test images.

`harness.report.claims` pairs the runs and words the verdicts; this module holds the inference, on
scipy.stats and statsmodels rather than hand-written formulas. Every formula is checked by
simulation against a known truth in tests/harness/report/test_inference.py.

Two sources of variance (Bouthillier et al., MLSys 2021):

- **Seeds.** The per-seed differences ours - baseline, by Student t with n - 1 degrees of freedom.
  The seed level is not bootstrapped: at 3-5 seeds a bootstrap has 10-126 distinct resamples and
  its intervals cover the truth far less often than they claim (the simulation tests measure it).
- **Images.** All runs are tested on one sample of images, so an image-set effect is common to every
  seed and invisible to their spread. `image_weights` draws bootstrap resamples of the images, the
  same draws for both rows and every seed (paired); the seed-mean difference recomputed on each
  draw has a standard deviation, the image term.

The two terms add as half-widths in quadrature, Student t with n - 1 df on the seed term and the
normal on the image term (known nearly exactly from hundreds of images). Welch-Satterthwaite's
degrees of freedom, the textbook alternative, covered only 93 % at 3 seeds in simulation: its df
grows exactly when the seed variance is underestimated. The image term also holds the seed x image
interaction that the seed term has, so the interval errs on the wide side (95-97 % in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8
#: Image resamples of the image term: its standard error is known to about 2 % (1 / sqrt(2 R)).
IMAGE_RESAMPLES = 1000
#: Seeds beyond which `seeds_for_power` gives up ("more than MAX_SEEDS").
MAX_SEEDS = 200


# Student t's and the normal's tails through scipy.special's ufuncs: the same functions as
# scipy.stats.t / norm, without their argument checking: 2.2 us against 55 us for t.isf + t.sf
# (timeit, 2026-12-06), and the simulations call them hundreds of thousands of times.
def t_isf(q: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(-stdtrit(df, q))


def t_sf(x: float, df: float) -> float:
    from scipy.special import stdtr

    return float(stdtr(df, -x))


def normal_isf(q: float) -> float:
    from scipy.special import ndtri

    return float(-ndtri(q))


@dataclass(frozen=True)
class Estimate:
    """A paired difference: its mean over seeds, standard errors, interval and two-sided p of zero.

    NaN where n is too small (no variance between seeds at n < 2); `image_se` is NaN when the
    runs carry no per-image table (seeds only)."""

    n: int
    mean: float
    std: float  # sample std of the per-seed differences
    seed_se: float
    image_se: float
    ci_low: float
    ci_high: float
    p: float

    @property
    def sources(self) -> str:
        if self.n == 0:
            return ""
        return "seeds + images" if not math.isnan(self.image_se) else "seeds"

    def half_width(self, alpha: float, sides: int = 2) -> float:
        """Half the width of the 1 - alpha interval (`sides` 1: of a one-sided bound): Student t
        with n - 1 df on the seed term and the normal on the image term, added in quadrature."""
        image = 0.0 if math.isnan(self.image_se) else normal_isf(alpha / sides) * self.image_se
        return math.hypot(t_isf(alpha / sides, self.n - 1) * self.seed_se, image)

    def p_beyond(self, distance: float, sides: int = 2) -> float:
        """The p of the mean lying `distance` from the null value: the alpha at which the interval
        (`sides` 2) or the one-sided bound (1) just reaches it. Student t's p when seeds only."""
        from scipy.optimize import brentq

        if distance < 0:  # one-sided only: the mean is past the null value
            return 1.0 - self.p_beyond(-distance, sides)
        if distance == 0:
            return 1.0 if sides == 2 else 0.5
        if self.half_width(0.5) == 0:  # no variance at all
            return 0.0
        if math.isnan(self.image_se) or self.image_se == 0:  # Student t, in closed form
            return sides * t_sf(distance / self.seed_se, self.n - 1)
        tiny = 1e-300
        if self.half_width(tiny, sides) <= distance:
            return tiny
        widest = sides / 2  # the alpha at which the interval (or bound) shrinks to the mean
        return float(
            brentq(lambda a: self.half_width(a, sides) - distance, tiny, widest, xtol=1e-15, rtol=1e-12)
        )


def estimate(
    differences: Sequence[float], image_se: float = math.nan, confidence: float = CONFIDENCE
) -> Estimate:
    """The mean of the per-seed `differences`, its interval and p, with the image term `image_se`."""
    values = np.asarray([v for v in differences if not math.isnan(v)], dtype=float)
    n, nan = len(values), math.nan
    mean = float(values.mean()) if n else nan
    if n < 2:
        return Estimate(n, mean, nan, nan, image_se, nan, nan, nan)
    std = float(values.std(ddof=1))
    partial = Estimate(n, mean, std, std / math.sqrt(n), image_se, nan, nan, nan)
    half = partial.half_width(1 - confidence)
    p = partial.p_beyond(abs(mean))
    return Estimate(n, mean, std, partial.seed_se, image_se, mean - half, mean + half, p)


def equivalence_p(est: Estimate, margin: float) -> float:
    """Two one-sided tests (TOST) of |difference| >= `margin`: a small p shows that the difference
    lies within +-margin (the larger of the two one-sided p's)."""
    if est.n < 2:
        return math.nan
    above_low = est.p_beyond(est.mean + margin, sides=1)  # H0: difference <= -margin
    below_high = est.p_beyond(margin - est.mean, sides=1)  # H0: difference >= +margin
    return max(above_low, below_high)


def image_weights(n_images: int, resamples: int = IMAGE_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap draws of the test images, [resamples, n_images]: how often each image is drawn.

    One set of draws serves every run of a report (seeded: it renders the same twice), so both rows
    and every seed of a claim see the same images in each draw (paired), and each run's metric is
    computed on the draws once. That sharing is why the draws are made here rather than inside
    scipy.stats.bootstrap, which resamples afresh for each statistic."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=resamples)


def adjust(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Holm's adjusted p (family-wise error) and Benjamini-Hochberg's q (false discovery rate,
    scipy.stats.false_discovery_control) of one family; NaN p (undecidable lines) stay NaN and do
    not count as tests. Holm is the step-down running maximum of p x (m - rank), written out here
    and checked against statsmodels' multipletests in the tests: that one calls gc.collect() on
    every call, 0.1 s in a process that holds MLflow, which the simulations cannot afford."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    holm, bh = np.full_like(p, np.nan), np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if len(tested):
        order = tested[np.argsort(p[tested], kind="stable")]
        steps = p[order] * np.arange(len(order), 0, -1)
        holm[order] = np.minimum(1.0, np.maximum.accumulate(steps))
        bh[tested] = false_discovery_control(p[tested], method="bh")
    return holm, bh


def seeds_for_power(
    std: float,
    image_se: float,
    difference: float,
    alpha: float,
    power: float = POWER,
    margin: float | None = None,
) -> int | None:
    """The fewest seeds that give `power` at level `alpha`, at the observed seed std and image term:
    to detect `difference` (two-sided t test, statsmodels' TTestPower), or, with `margin`, to show
    equivalence by TOST when the true difference is 0. None: more than MAX_SEEDS (or the image term
    alone is too wide: evaluate on more images)."""
    from scipy.stats import norm, t
    from statsmodels.stats.power import TTestPower

    if not (std > 0) or (margin is None and (difference == 0 or math.isnan(difference))):
        return None
    image_var = 0.0 if math.isnan(image_se) else image_se**2

    def power_at(n: int) -> float:
        se = math.sqrt(std**2 / n + image_var)
        if margin is None:  # TTestPower's noncentrality effect_size * sqrt(n) is difference / se
            got = TTestPower().power(effect_size=abs(difference) / (se * math.sqrt(n)), nobs=n, alpha=alpha)
            # its noncentral t gives NaN far in the tail (power ~1): the normal approximation there
            return float(norm.cdf(abs(difference) / se - norm.isf(alpha / 2))) if math.isnan(got) else got
        return 2 * t.cdf(margin / se - t.ppf(1 - alpha, n - 1), n - 1) - 1

    if power_at(MAX_SEEDS) < power:
        return None
    low, high = 1, MAX_SEEDS  # power grows with n: the fewest seeds by bisection
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power_at(middle) >= power else (middle, high)
    return high


@dataclass(frozen=True)
class Sequential:
    """Seeds added in rounds until a claim is decided (`run --until-decided`): looks at `first`,
    `first + step`, ... seeds, up to `max_seeds`.

    Alpha spending (Lan & DeMets), Pocock-type f(t) = alpha ln(1 + (e - 1) t) of the information
    fraction t = seeds / max_seeds: the look at n seeds tests at level f(t_n) - f(t_previous), and
    a claim once decided stays decided. By the union bound the chance that any look rejects a true
    null is at most f(1) = alpha, whenever the rounds stop; within a family the level is split
    evenly (Bonferroni), so that claims may stop at different looks. Pocock-type spending keeps
    more of alpha for the early looks than O'Brien-Fleming's, which at 3 of 10 seeds would test at
    0.0003: few seeds are the case that matters here.
    """

    first: int
    step: int
    max_seeds: int
    alpha: float = ALPHA
    #: claim -> the seeds of the look that decided it (it stops there)
    stopped: dict[str, int] = field(default_factory=dict)

    def looks(self) -> list[int]:
        """The seed counts looked at: a test needs two seeds, so looks start at 2 at the earliest."""
        grid = list(range(self.first, self.max_seeds, self.step))
        return [n for n in grid if n >= 2] + [self.max_seeds]

    def spent(self, seeds: int) -> float:
        fraction = min(seeds / self.max_seeds, 1.0)
        return self.alpha * math.log(1 + (math.e - 1) * fraction)

    def level(self, seeds: int) -> float:
        """The level of the look at `seeds` (the last look at or below it); 0 before the first."""
        earlier = [n for n in self.looks() if n <= seeds]
        if not earlier:
            return 0.0
        now = earlier[-1]
        before = [n for n in self.looks() if n < now]
        return self.spent(now) - (self.spent(before[-1]) if before else 0.0)
