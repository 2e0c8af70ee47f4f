"""gv3lite.verdicts: intervals, the equivalence test, Holm's adjustment, power and the verdict rule, by hand."""
import math

import numpy as np
import pytest

from gv3lite import verdicts


def test_t_interval_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), df 2. For df 2 the t distribution has the closed form
    # sf(t) = (1 - t / sqrt(t^2 + 2)) / 2, so q_0.975 = sqrt(2 * 0.95^2 / (1 - 0.95^2)) and p = 1 - t / sqrt(t^2 + 2)
    se = 1 / math.sqrt(3)
    q = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
    t = 2 / se
    ci = verdicts.t_interval(2.0, se, 2)
    assert q == pytest.approx(4.302653, abs=1e-6)
    assert float(ci["low"]) == pytest.approx(2 - q * se, abs=1e-9)
    assert float(ci["high"]) == pytest.approx(2 + q * se, abs=1e-9)
    assert float(ci["p"]) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)  # 0.0742
    assert np.isnan(verdicts.t_interval(1.0, 0.5, 0)["low"])  # no df, no interval


def test_equivalence_p_matches_the_interval_inside_delta():
    rng = np.random.default_rng(0)
    diff, se, df = rng.normal(0, 1, 2000), rng.uniform(0.05, 1, 2000), rng.integers(1, 20, 2000)
    ci = verdicts.t_interval(diff, se, df)
    inside = (ci["low"] > -1) & (ci["high"] < 1)
    assert np.array_equal(inside, verdicts.equivalence_p(diff, se, df, 1.0) < 0.025)
    assert inside.any() and not inside.all()


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert verdicts.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = verdicts.holm([0.01, np.nan, 0.04])  # NaN is not counted: m = 2
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    # row by row: 0.5 x 2 = 1.0 caps both; 0.01 x 2 = 0.02, 0.02 x 1 = 0.02
    np.testing.assert_allclose(verdicts.holm([[0.5, 0.9], [0.01, 0.02]]), [[1.0, 1.0], [0.02, 0.02]])


def test_verdict_rules():
    assert verdicts.verdict(0.01, 1.0, +2.0, "better") == "agrees"
    assert verdicts.verdict(0.01, 1.0, -2.0, "better") == "disagrees"
    assert verdicts.verdict(0.01, 1.0, -2.0, "worse") == "agrees"
    assert verdicts.verdict(0.01, 1.0, -2.0, "unknown") == "differs"
    assert verdicts.verdict(0.30, 0.01, 0.1, "better") == "no effect >= 1 pp"
    assert verdicts.verdict(0.30, 0.04, 0.1, "better") == "underpowered"  # equivalence needs p < alpha / 2
    assert list(verdicts.verdict([0.01, 0.3], [1, 1], [1, 1], ["worse", "worse"])) == ["disagrees", "underpowered"]


def test_min_detectable_effect_and_seeds():
    # large df: MDE -> (z_0.975 + z_0.80) * se = 2.8016 * se
    assert verdicts.min_detectable_effect(1.0, 10_000) == pytest.approx(1.95996 + 0.84162, abs=2e-3)
    assert verdicts.power(verdicts.min_detectable_effect(0.7, 4), 0.7, 4) == pytest.approx(0.8, abs=1e-6)
    assert np.isnan(verdicts.min_detectable_effect(1.0, 0))
    # t_{n-1} * 4 / sqrt(n) <= 2: n = 17 gives 2.120 * 4 / 4.123 = 2.06, n = 18 gives 2.110 * 4 / 4.243 = 1.99
    assert verdicts.seeds_for_half_width(4.0, 2.0) == 18
    with pytest.raises(ValueError, match="seeds needed"):
        verdicts.seeds_for_half_width(40.0, 0.1, max_seeds=50)
