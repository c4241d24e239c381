"""The business settings the rules in models/ need, handed down from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.enums import ClawbackPolicy


@dataclass(frozen=True)
class Rules:
    clawback_policy: ClawbackPolicy = ClawbackPolicy.ALLOW_NEGATIVE
    # price id -> credits granted per paid subscription period
    subscription_plans: dict[str, int] = field(default_factory=dict)
