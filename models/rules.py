"""The business settings the rules need, handed down from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.enums import ClawbackPolicy, FraudPolicy, ZeroAmountInvoices


@dataclass(frozen=True)
class Plan:
    """What a subscription price grants per paid period, and its rule for $0 invoices."""

    # None: the credits come from the subscription's (or invoice's) metadata.
    credits: int | None = None
    # This plan's rule for $0 invoices (trials, 100% coupons); None: the global rule.
    zero_amount_invoices: ZeroAmountInvoices | None = None


@dataclass(frozen=True)
class Rules:
    clawback_policy: ClawbackPolicy = ClawbackPolicy.ALLOW_NEGATIVE
    # price id -> the plan it sells
    subscription_plans: dict[str, Plan] = field(default_factory=dict)
    # price id -> credits per unit, for purchases that carry no credits of their own
    credit_catalog: dict[str, int] = field(default_factory=dict)
    zero_amount_invoices: ZeroAmountInvoices = ZeroAmountInvoices.SKIP
    fraud_policy: FraudPolicy = FraudPolicy.OFF

    def zero_amount_rule(self, price_id: str | None) -> ZeroAmountInvoices:
        plan = self.subscription_plans.get(price_id) if price_id else None
        return plan.zero_amount_invoices if plan and plan.zero_amount_invoices else self.zero_amount_invoices
