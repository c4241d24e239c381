"""Apply one provider-neutral change to the payments it is about. No I/O of its own.

Each change records facts on a payment (a ``PaymentRow``), then the payment is
settled: status, history and credits follow from its facts
(models/settlement.py). Facts only move forward, which is what makes any
delivery order end where the provider's order does.

Finding the payment. A change names it by session id and/or payment id
(providers/changes.py). When both name different rows — a PaymentIntent paid
before its Checkout Session's event arrived, say — they are one payment and are
merged: the paid one (or else the one recorded under the session) survives.
A change that may record a payment does so when none is found and the event
says who bought how many credits; where credits come from, in order: a
payment recorded beforehand, the event's metadata, the credit catalog (by
price, from the line items, which the provider's API may have to list first).
A change about money after payment (a refund, a dispute) waits — is held —
until its payment is known and paid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from application.world import Step
from models import keys
from models.enums import DisputeStatus, RefundStatus, ZeroAmountInvoices
from models.enums import PaymentStatus as S
from models.errors import LookupNeededError, NotReadyError, StaleEventError, UnknownPaymentError
from models.lifecycle import TransitionError
from models.payments import PaymentRow
from models.rules import Rules
from models.settlement import UNPAID_RANK, StatusChange
from models.subscriptions import SubscriptionRow
from providers.changes import (
    ActionRequired,
    CaptureRequested,
    Change,
    DisputeClosed,
    DisputeOpened,
    FraudWarning,
    Ignored,
    InvoicePaid,
    PaymentCanceled,
    PaymentExpired,
    PaymentFailed,
    PaymentLinked,
    PaymentProcessing,
    PaymentRef,
    PaymentSucceeded,
    ProviderEvent,
    Purchase,
    RefundChanged,
    Refunded,
    SubscriptionChanged,
)

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Applied:
    changed: bool
    reason: str | None = None


# -- what a change is about ------------------------------------------------------


def subject_keys(provider: str, change: Change) -> list[str]:
    """The keys a change locks (and may release held events under), sorted."""
    found: set[str] = set()
    ref = getattr(change, "ref", None)
    if isinstance(ref, PaymentRef):
        if ref.session_id:
            found.add(keys.session_key(provider, ref.session_id))
        if ref.payment_id:
            found.add(keys.payment_key(provider, ref.payment_id))
    subscription_id = getattr(change, "subscription_id", None)
    if subscription_id:
        found.add(keys.subscription_key(provider, subscription_id))
    return sorted(found)


def payment_refs(provider: str, change: Change) -> list[tuple[str, str | None, str | None]]:
    ref = getattr(change, "ref", None)
    return [(provider, ref.session_id, ref.payment_id)] if isinstance(ref, PaymentRef) else []


def subscription_refs(provider: str, change: Change) -> list[tuple[str, str]]:
    subscription_id = getattr(change, "subscription_id", None)
    return [(provider, subscription_id)] if subscription_id else []


CREATES_PAYMENTS = (PaymentSucceeded, PaymentProcessing, PaymentFailed, PaymentExpired, InvoicePaid)


# -- applying -------------------------------------------------------------------------


def apply_change(step: Step, event: ProviderEvent, change: Change, rules: Rules) -> Applied:
    """Record what the change says on the rows it is about; Applied(False) when there was nothing to do."""
    provider, cause, at = event.provider, event.id, event.created
    match change:
        case Ignored(reason=reason):
            return Applied(False, reason)
        case PaymentSucceeded(ref=ref, purchase=purchase):
            # A PaymentIntent that names no buyer belongs to a Checkout Session or an invoice,
            # which is credited through its own event; one that names half is misconfigured.
            names_buyer = ref.session_id or purchase.user_id or purchase.credits
            row = _payment(step, provider, ref, purchase, cause, rules, create=RECORD if names_buyer else RECORD_IF_KNOWN)
            row = _paid(step, row, change.paid_amount_cents, change.paid_currency, at)
            if change.reference and "paid_reference" not in row.details:
                row = row.changed(details={**row.details, "paid_reference": change.reference})
            step.settle(row, cause, rules)
        case PaymentProcessing(ref=ref, purchase=purchase):
            row = _payment(step, provider, ref, purchase, cause, rules, create=RECORD_IF_KNOWN)
            _unpaid(step, row, S.PROCESSING, event, rules)
        case PaymentFailed(ref=ref, purchase=purchase, code=code, message=message):
            row = _payment(step, provider, ref, purchase, cause, rules, create=RECORD_IF_KNOWN if ref.session_id else NEVER)
            step.attempt(row, code, message, cause)
            step.put(row)
            if row.paid_at is None and not _older(row, at, S.FAILED, cause):
                _unpaid(step, row, S.FAILED, event, rules)
            # else: a later attempt paid, or something newer happened: the attempt is kept for the record
        case ActionRequired(ref=ref, code=code):
            by_session, by_payment = step.find(provider, ref.session_id, ref.payment_id)
            row = by_session or by_payment
            if row is None:
                return Applied(False, "no payment recorded for it")
            step.attempt(row, code or "requires_action", "the customer must complete an action", cause)
            step.put(row)
        case PaymentExpired(ref=ref, purchase=purchase):
            row = _payment(step, provider, ref, purchase, cause, rules, create=RECORD_IF_KNOWN)
            _unpaid(step, row, S.EXPIRED, event, rules)
        case PaymentCanceled(ref=ref):
            row = _payment(step, provider, ref, Purchase(), cause, rules, create=NEVER)
            _unpaid(step, row, S.CANCELLED, event, rules)
        case CaptureRequested(ref=ref):
            by_session, _ = step.find(provider, ref.session_id, None)
            if by_session is not None and (by_session.paid_at is not None or by_session.provider_payment_id):
                return Applied(False, "the order was captured already")
            # Captured after the transaction, never inside it (application/lookups.py).
            raise LookupNeededError(keys.lookup_key(provider, ref.session_id), "the approved order is being captured")
        case PaymentLinked(ref=ref):
            row = _payment(step, provider, replace(ref, payment_id=None), Purchase(), cause, rules, create=NEVER)
            if row.provider_payment_id not in (None, ref.payment_id):
                raise UnknownPaymentError("the payment is already linked to another payment id")
            _payment(step, provider, ref, Purchase(), cause, rules, create=NEVER)
        case Refunded(ref=ref, refunded_cents=refunded, captured_cents=captured):
            row = _paid_payment(step, provider, ref)
            row = row.changed(
                refunded_cents=max(row.refunded_cents, refunded),
                paid_amount_cents=row.paid_amount_cents or captured,
            )
            step.settle(row, cause, rules)
        case RefundChanged(ref=ref, refund_id=refund_id, amount_cents=amount, status=status):
            row = _paid_payment(step, provider, ref)
            step.settle(row.changed(refunds=_refund(row.refunds, refund_id, amount, RefundStatus(status))), cause, rules)
        case DisputeOpened(ref=ref) | DisputeClosed(ref=ref):
            row = _paid_payment(step, provider, ref)
            outcome = DisputeStatus.OPEN if isinstance(change, DisputeOpened) else (
                DisputeStatus.WON if change.won else DisputeStatus.LOST
            )
            disputes = _dispute(row.disputes, change.dispute_id, outcome, change.amount_cents, change.reason, at)
            step.settle(row.changed(disputes=disputes), cause, rules)
        case FraudWarning(ref=ref, warning_id=warning_id, actionable=actionable, fraud_type=fraud_type):
            row = _paid_payment(step, provider, ref)
            warnings = dict(row.fraud_warnings)
            before = warnings.get(warning_id, {"actionable": True})
            # once resolved (refunded, disputed) a warning stays resolved
            warnings[warning_id] = {"actionable": bool(before["actionable"] and actionable), "fraud_type": fraud_type}
            step.settle(row.changed(fraud_warnings=warnings), cause, rules)
        case SubscriptionChanged():
            _subscription(step, provider, change, event)
        case InvoicePaid():
            return _invoice_paid(step, event, change, rules)
        case _:
            raise TypeError(f"no rule for {type(change).__name__}")
    return Applied(True)


# May a change record a payment nobody recorded before?
NEVER = "never"  # no: it is about money after payment, or names too little; wait for the payment
RECORD_IF_KNOWN = "if_known"  # if the event names the buyer and the credits; else there is nothing to record
RECORD = "record"  # yes: money was taken; credits from the catalog if need be, else it is a dead letter


class NothingToRecordError(LookupError):
    """News of a payment nobody recorded, about a purchase the event does not describe: ignored."""


def _payment(
    step: Step, provider: str, ref: PaymentRef, purchase: Purchase, cause: str, rules: Rules, *, create: str
) -> PaymentRow:
    """The payment a change is about, found, merged or recorded; NotReadyError while unknown."""
    by_session, by_payment = step.find(provider, ref.session_id, ref.payment_id)
    if by_session is not None and by_payment is not None and by_session.id != by_payment.id:
        row = _merge(step, by_session, by_payment, cause)
    else:
        row = by_session or by_payment
    if row is not None:
        return step.put(_remember(row, ref, purchase))
    if create == NEVER:
        key = keys.payment_key(provider, ref.payment_id) if ref.payment_id else keys.session_key(provider, ref.session_id)
        raise NotReadyError(key, f"no payment is recorded for {'payment' if ref.payment_id else 'session'} {ref.payment_id or ref.session_id}")
    credits = purchase.credits or _catalog_credits(purchase, rules)
    if create == RECORD_IF_KNOWN and not (purchase.user_id and credits):
        raise NothingToRecordError("no payment is recorded for it and it does not say who bought how many credits")
    if credits is None and purchase.line_items is None and ref.session_id:
        raise LookupNeededError(
            keys.lookup_key(provider, ref.session_id), "the session carries no credits: its line items are being looked up"
        )
    if not purchase.user_id or not credits:
        missing = " and ".join(name for name, value in (("user", purchase.user_id), ("credits", credits)) if not value)
        raise UnknownPaymentError(
            f"no payment is recorded for it and it names no {missing} (set metadata.user_id or "
            "client_reference_id and metadata.credits, record the payment first, or add its prices to the credit catalog)"
        )
    return step.new_payment(
        provider=provider,
        provider_session_id=ref.session_id,
        provider_payment_id=ref.payment_id,
        user_id=purchase.user_id,
        credits=credits,
        amount_cents=purchase.amount_cents,
        currency=purchase.currency,
        package_id=purchase.package_id,
        customer_email=purchase.email,
    )


def _catalog_credits(purchase: Purchase, rules: Rules) -> int | None:
    if not purchase.line_items:
        return None
    total = 0
    for item in purchase.line_items:
        per_unit = item.credits_per_unit or (rules.credit_catalog.get(item.price_id) if item.price_id else None)
        total += (per_unit or 0) * item.quantity
    return total or None


def _remember(row: PaymentRow, ref: PaymentRef, purchase: Purchase) -> PaymentRow:
    """Fill in what the row lacks and the event knows; never overwrite what was recorded."""
    changes = {}
    if ref.payment_id and not row.provider_payment_id:
        changes["provider_payment_id"] = ref.payment_id
    if ref.session_id and not row.provider_session_id:
        changes["provider_session_id"] = ref.session_id
    if row.amount_cents is None and purchase.amount_cents is not None:
        changes["amount_cents"] = purchase.amount_cents
    if row.currency is None and purchase.currency:
        changes["currency"] = purchase.currency
    if row.customer_email is None and purchase.email:
        changes["customer_email"] = purchase.email
    return row.changed(**changes) if changes else row


def _merge(step: Step, by_session: PaymentRow, by_payment: PaymentRow, cause: str) -> PaymentRow:
    """Two rows that are one payment (a session and its own PaymentIntent): keep one, retire the other."""
    if by_session.paid_at is not None and by_payment.paid_at is not None:
        raise UnknownPaymentError(
            f"payments {by_session.id} and {by_payment.id} are one payment but both were paid; an operator must decide"
        )
    survivor, retired = (by_payment, by_session) if by_payment.paid_at is not None else (by_session, by_payment)
    step.effects.status_changes.append(StatusChange(retired.id, retired.status, S.CANCELLED, f"{cause} (merged into payment {survivor.id})"))
    step.put(retired.changed(
        status=S.CANCELLED,
        provider_session_id=None,
        provider_payment_id=None,
        details={**retired.details, "merged_into": survivor.id},
    ))
    changes = {
        "provider_session_id": survivor.provider_session_id or retired.provider_session_id,
        "provider_payment_id": survivor.provider_payment_id or retired.provider_payment_id,
    }
    if survivor is by_payment and retired.credits != survivor.credits:
        changes["details"] = {**survivor.details, "recorded_credits": retired.credits}
    return step.put(survivor.changed(**changes))


def _paid(step: Step, row: PaymentRow, paid_amount: int | None, paid_currency: str | None, at: datetime | None) -> PaymentRow:
    if row.paid_at is not None:
        return row
    paid_amount = paid_amount if paid_amount is not None else row.amount_cents
    paid_currency = paid_currency or row.currency
    mismatch = (row.amount_cents is not None and paid_amount is not None and paid_amount != row.amount_cents) or (
        row.currency is not None and paid_currency is not None and paid_currency != row.currency
    )
    if mismatch:
        step.effects.mismatches.append((row.provider, row.id))
    return step.put(row.changed(
        paid_at=at or datetime.now(UTC),
        paid_amount_cents=paid_amount,
        paid_currency=paid_currency,
        amount_mismatch=mismatch,
    ))


def _order(at: datetime | None, status: S, event_id: str | None) -> tuple:
    """Which unpaid news is newer: by the provider's time, then by status rank, then by event id."""
    return (at or _EPOCH, UNPAID_RANK[status], event_id or "")


def _older(row: PaymentRow, at: datetime | None, status: S, event_id: str) -> bool:
    if not row.unpaid_status:
        return False
    return _order(at, status, event_id) < _order(row.unpaid_status_at, S(row.unpaid_status), row.unpaid_status_event)


def _unpaid(step: Step, row: PaymentRow, status: S, event: ProviderEvent, rules: Rules) -> None:
    """Processing, failed, expired or cancelled: the newest such news wins, until paid."""
    if row.paid_at is not None:
        # Paid wins: money taken is never un-taken by a late failure or expiry.
        raise TransitionError(S(row.status), status)
    if _older(row, event.created, status, event.id):
        raise StaleEventError(f"older than the news that made the payment {row.unpaid_status}; state not moved")
    row = row.changed(unpaid_status=status, unpaid_status_at=event.created, unpaid_status_event=event.id)
    step.settle(row, event.id, rules)


def _paid_payment(step: Step, provider: str, ref: PaymentRef) -> PaymentRow:
    """The paid payment behind a refund, dispute or warning; NotReadyError until it is known and paid."""
    by_session, by_payment = step.find(provider, ref.session_id, ref.payment_id)
    row = by_payment or by_session
    if row is None or row.paid_at is None:
        state = "unknown" if row is None else f"not paid yet ({row.status})"
        key = keys.payment_key(provider, ref.payment_id) if ref.payment_id else keys.session_key(provider, ref.session_id)
        raise NotReadyError(key, f"payment {ref.payment_id or ref.session_id} is {state}")
    return row


def _refund(refunds: dict, refund_id: str, amount: int, status: RefundStatus) -> dict:
    """A refund's status only moves to a higher rank; its amount is the largest seen."""
    before = refunds.get(refund_id)
    if before is not None:
        if RefundStatus(before["status"]).rank > status.rank:
            status = RefundStatus(before["status"])
        elif RefundStatus(before["status"]).rank == status.rank and before["status"] > status:
            status = RefundStatus(before["status"])  # a tie ends the same in any order
        amount = max(amount, before["amount_cents"])
    return {**refunds, refund_id: {"amount_cents": amount, "status": status.value}}


_DISPUTE_RANK = {DisputeStatus.OPEN: 0, DisputeStatus.WON: 1, DisputeStatus.LOST: 2}


def _dispute(disputes: dict, dispute_id: str, status: DisputeStatus, amount: int | None, reason: str | None, at: datetime | None) -> dict:
    """A dispute only moves forward: open, then won or lost."""
    before = disputes.get(dispute_id)
    if before is not None and _DISPUTE_RANK[DisputeStatus(before["status"])] >= _DISPUTE_RANK[status]:
        if before.get("amount_cents") is not None or amount is None:
            return disputes
        return {**disputes, dispute_id: {**before, "amount_cents": amount}}
    closed = None if status == DisputeStatus.OPEN else (at or datetime.now(UTC)).isoformat()
    return {
        **disputes,
        dispute_id: {
            "status": status.value,
            "reason": reason or (before or {}).get("reason"),
            "amount_cents": amount if amount is not None else (before or {}).get("amount_cents"),
            "closed_at": closed,
        },
    }


def _subscription(step: Step, provider: str, change: SubscriptionChanged, event: ProviderEvent) -> None:
    row = step.subscription(provider, change.subscription_id) or SubscriptionRow(
        provider=provider, provider_subscription_id=change.subscription_id, status=change.status
    )
    if row.last_event_created_at is not None:
        newer = (event.created or _EPOCH, event.id) > (row.last_event_created_at, row.last_event_id or "")
        if not newer:
            raise StaleEventError("older than the last subscription event applied; state not moved")
    updates = {
        name: value
        for name, value in (
            ("provider_customer_id", change.customer_id),
            ("user_id", change.user_id),
            ("price_id", change.price_id),
            ("credits_per_period", change.credits),
            ("current_period_end", change.current_period_end),
        )
        if value is not None
    }
    step.put_subscription(replace(
        row, status=change.status, last_event_created_at=event.created or row.last_event_created_at,
        last_event_id=event.id, **updates,
    ))


def _invoice_paid(step: Step, event: ProviderEvent, change: InvoicePaid, rules: Rules) -> Applied:
    """A paid period: its own payment, granted once per invoice."""
    provider, cause = event.provider, event.id
    if change.paid_amount_cents == 0 and rules.zero_amount_rule(change.price_id) == ZeroAmountInvoices.SKIP:
        return Applied(False, "zero-amount invoice (a trial or a 100% discount): no credits by ZERO_AMOUNT_INVOICES=skip")
    subscription = step.subscription(provider, change.subscription_id)
    plan = rules.subscription_plans.get(change.price_id) if change.price_id else None
    user_id = change.purchase.user_id or (subscription.user_id if subscription else None)
    credits = change.purchase.credits or (plan.credits if plan else None) or (
        subscription.credits_per_period if subscription else None
    )
    by_session, by_payment = step.find(provider, change.ref.session_id, change.ref.payment_id)
    if not (by_session or by_payment) and not (user_id and credits):
        missing = " and ".join(name for name, value in (("user", user_id), ("credits", credits)) if not value)
        if subscription is None:
            raise NotReadyError(
                keys.subscription_key(provider, change.subscription_id),
                f"{missing} unknown until subscription {change.subscription_id} is seen",
            )
        raise UnknownPaymentError(
            f"subscription {change.subscription_id} gives no {missing} (set metadata.user_id / metadata.credits "
            "on the subscription, or configure subscription_plans)"
        )
    purchase = Purchase(user_id=user_id, credits=credits, amount_cents=change.paid_amount_cents, currency=change.paid_currency, line_items=())
    row = _payment(step, provider, change.ref, purchase, cause, rules, create=RECORD)
    if not row.details:
        row = step.put(row.changed(details={"subscription_id": change.subscription_id, "price_id": change.price_id}))
    row = _paid(step, row, change.paid_amount_cents, change.paid_currency, event.created)
    step.settle(row, cause, rules)
    return Applied(True)
