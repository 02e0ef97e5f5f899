"""KL weight (beta) schedules for fighting posterior collapse: each maps the optimizer step
t = 0, 1, 2, ... to the beta used at that step.

    constant(beta)                      beta_t = beta
    linear_warmup(n_steps, beta)        beta_t = beta * min(1, (t + 1) / n_steps)     (Bowman et al. 2016)
    cyclical(period, ratio, beta)       beta_t = beta * min(1, (t mod period + 1) / (ratio * period))
                                        (Fu et al. 2019: ramp over the first ``ratio`` of each cycle)
"""
from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_choice, check_float, check_int

SCHEDULES = ("constant", "linear", "cyclical")


@dataclass(frozen=True)
class Constant:
    beta: float = 1.0

    def __call__(self, t: int) -> float:
        return self.beta


@dataclass(frozen=True)
class LinearWarmup:
    n_steps: int
    beta: float = 1.0

    def __call__(self, t: int) -> float:
        return self.beta * min(1.0, (t + 1) / self.n_steps)


@dataclass(frozen=True)
class Cyclical:
    period: int
    ratio: float = 0.5
    beta: float = 1.0

    def __call__(self, t: int) -> float:
        return self.beta * min(1.0, (t % self.period + 1) / (self.ratio * self.period))


def constant(beta=1.0):
    return Constant(check_float("beta", beta, min_value=0.0))


def linear_warmup(n_steps, beta=1.0):
    return LinearWarmup(check_int("n_steps", n_steps, min_value=1), check_float("beta", beta, min_value=0.0))


def cyclical(period, ratio=0.5, beta=1.0):
    return Cyclical(check_int("period", period, min_value=1),
                    check_float("ratio", ratio, min_value=0.0, max_value=1.0, min_inclusive=False),
                    check_float("beta", beta, min_value=0.0))


def make_schedule(name: str, beta: float = 1.0, n_steps: int = 1, ratio: float = 0.5):
    """Build a schedule by name ("constant", "linear", "cyclical"); n_steps is the warm-up length
    (linear) or the period (cyclical)."""
    name = check_choice("schedule", name, SCHEDULES)
    if name == "constant":
        return constant(beta)
    if name == "linear":
        return linear_warmup(n_steps, beta)
    return cyclical(n_steps, ratio, beta)
