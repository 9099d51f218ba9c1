from __future__ import annotations

import pytest

from delos.resilience._budget import RetryBudget
from delos.resilience._clock import FakeClock


def withdraw_all(budget: RetryBudget) -> int:
    """Withdraw until refused; return how many retries were allowed."""
    allowed = 0
    while budget.try_withdraw():
        allowed += 1
    return allowed


def test_the_floor_allows_min_per_second_times_ttl_retries_with_no_traffic(
    clock: FakeClock,
) -> None:
    budget = RetryBudget(min_per_second=1.0, ttl=10.0, clock=clock)
    assert withdraw_all(budget) == 10


def test_each_primary_request_earns_ratio_of_a_retry(clock: FakeClock) -> None:
    budget = RetryBudget(0.1, min_per_second=0.0, clock=clock)
    for _ in range(9):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_deposits_expire_after_ttl(clock: FakeClock) -> None:
    budget = RetryBudget(0.5, min_per_second=0.0, ttl=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.balance == pytest.approx(5.0)
    clock.advance(10.0)
    assert budget.balance == 0.0
    assert not budget.try_withdraw()


def test_deposits_younger_than_ttl_still_count(clock: FakeClock) -> None:
    budget = RetryBudget(0.5, min_per_second=0.0, ttl=10.0, clock=clock)
    budget.deposit()
    budget.deposit()
    clock.advance(9.0)
    assert budget.try_withdraw()


def test_the_floor_refills_as_withdrawals_expire_but_never_accumulates(clock: FakeClock) -> None:
    budget = RetryBudget(0.1, min_per_second=1.0, ttl=10.0, clock=clock)
    assert withdraw_all(budget) == 10
    clock.advance(10.0)
    assert withdraw_all(budget) == 10
    clock.advance(3600.0)
    assert budget.balance == pytest.approx(10.0)


def test_retries_in_any_ttl_window_stay_within_ratio_of_requests_plus_the_floor(
    clock: FakeClock,
) -> None:
    ratio, floor_per_second, ttl = 0.1, 1.0, 10
    budget = RetryBudget(ratio, min_per_second=floor_per_second, ttl=ttl, clock=clock)
    per_second: list[tuple[int, int]] = []
    for second in range(120):
        # Traffic varies; every request fails and asks for a retry.
        requests = (second * 37) % 50
        for _ in range(requests):
            budget.deposit()
        retries = sum(budget.try_withdraw() for _ in range(requests))
        per_second.append((requests, retries))
        clock.advance(1.0)
    for end in range(ttl, len(per_second) + 1):
        window = per_second[end - ttl : end]
        requests = sum(r for r, _ in window)
        retries = sum(x for _, x in window)
        assert retries <= ratio * requests + floor_per_second * ttl + 1e-9


def test_counters_record_deposits_withdrawals_and_rejections(clock: FakeClock) -> None:
    budget = RetryBudget(1.0, min_per_second=0.0, clock=clock)
    budget.deposit()
    budget.deposit()
    results = [budget.try_withdraw() for _ in range(3)]
    assert results == [True, True, False]
    assert (budget.deposits, budget.withdrawals, budget.rejections) == (2, 2, 1)
    assert budget.balance == 0.0


def test_a_refused_withdrawal_spends_nothing(clock: FakeClock) -> None:
    budget = RetryBudget(0.5, min_per_second=0.0, clock=clock)
    budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()


def test_balance_can_go_negative_when_deposits_expire_before_the_retries_they_paid_for(
    clock: FakeClock,
) -> None:
    budget = RetryBudget(1.0, min_per_second=0.0, ttl=10.0, clock=clock)
    budget.deposit()
    clock.advance(5.0)
    assert budget.try_withdraw()
    clock.advance(5.0)
    assert budget.balance == -1.0
    budget.deposit()
    assert not budget.try_withdraw()


def test_fractional_ratios_do_not_lose_a_token_to_rounding(clock: FakeClock) -> None:
    # 0.09 × 10 + 0.1 is 0.9999999999999999 in floating point.
    budget = RetryBudget(0.1, min_per_second=0.09, ttl=10.0, clock=clock)
    budget.deposit()
    assert budget.try_withdraw()


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": -0.1}, {"min_per_second": -1.0}, {"ttl": 0.5}],
)
def test_invalid_settings_are_rejected(clock: FakeClock, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(clock=clock, **kwargs)
