"""The side-by-side comparison's arithmetic (bench/compare.py): the start order's bias cancels
out of the effect, and is reported on its own."""

from __future__ import annotations

import pytest

from bench.compare import estimate


def test_a_bias_for_the_service_started_second_cancels_out() -> None:
    # The tree costs 0.3 ms less; whichever service starts second reads 0.2 ms cheaper.
    ref, tree, bias = 5.0, 4.7, 0.2
    effect = estimate(ref_first=(ref, tree - bias), tree_first=(ref - bias, tree))

    assert effect.effect_ms == pytest.approx(-0.3)
    assert effect.start_order_bias_ms == pytest.approx(bias)
    assert effect.ref_ms == pytest.approx(ref - bias / 2)
    assert effect.tree_ms == pytest.approx(tree - bias / 2)


def test_the_same_code_twice_shows_no_effect_whatever_the_bias() -> None:
    effect = estimate(ref_first=(5.2, 4.9), tree_first=(4.9, 5.2))

    assert effect.effect_ms == pytest.approx(0.0)
    assert effect.start_order_bias_ms == pytest.approx(0.3)


def test_without_a_bias_the_effect_is_the_plain_difference() -> None:
    effect = estimate(ref_first=(6.0, 5.5), tree_first=(6.0, 5.5))

    assert effect.effect_ms == pytest.approx(-0.5)
    assert effect.start_order_bias_ms == pytest.approx(0.0)
