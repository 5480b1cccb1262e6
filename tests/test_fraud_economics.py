"""The threshold sweep behaves as its economics say it must."""

from __future__ import annotations

import redis

from payment_systems.fraud.economics import MAX_REVENUE_LOSS, recommend, simulate, sweep, traffic


def test_traffic_is_labelled_and_reproducible() -> None:
    first, again = traffic(seed=4), traffic(seed=4)
    assert first == again
    assert 0 < sum(a.fraud for a in first) < len(first)


def test_stricter_thresholds_block_more_fraud_and_more_good_customers(
    redis_client: redis.Redis,
) -> None:
    results = sweep(simulate(redis_client, traffic(seed=2)), range(2, 10))
    fraud = [r.fraud_blocked for r in results]
    good = [r.good_blocked for r in results]
    assert fraud == sorted(fraud, reverse=True)
    assert good == sorted(good, reverse=True)


def test_the_recommendation_is_the_cheapest_within_the_revenue_loss_ceiling(
    redis_client: redis.Redis,
) -> None:
    results = sweep(simulate(redis_client, traffic(seed=3)), range(2, 13))
    best = recommend(results)
    assert best.revenue_lost_share <= MAX_REVENUE_LOSS
    affordable = [r for r in results if r.revenue_lost_share <= MAX_REVENUE_LOSS]
    assert best.expected_cost == min(r.expected_cost for r in affordable)
    assert results[0].expected_cost > best.expected_cost < results[-1].expected_cost  # a U-shape
