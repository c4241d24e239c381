"""The payment lifecycle, as a table.

``TRANSITIONS[current]`` is the set of statuses a payment may move to; a pair
missing from the table *is* the error. Statuses are derived from a payment's
facts (models/settlement.py); this table is the check that every derived move
is one the lifecycle allows, and ``models/history.py`` records each move.
"""

from __future__ import annotations

from models.enums import PaymentStatus as S

UNPAID = frozenset({S.PROCESSING, S.FAILED, S.EXPIRED, S.CANCELLED})

TRANSITIONS: dict[S, frozenset[S]] = {
    S.PENDING: UNPAID | {S.COMPLETED},
    # Before payment the newest news wins (models/settlement.py orders it by the
    # provider's time, then by status rank): any unpaid status may follow another,
    # or which one a payment ends in would depend on arrival order. A failed
    # attempt is not the end of a checkout; an expired or cancelled one may still
    # be paid after all (the provider's word beats our sweep's): money taken is credited.
    S.PROCESSING: (UNPAID - {S.PROCESSING}) | {S.COMPLETED},
    S.FAILED: (UNPAID - {S.FAILED}) | {S.COMPLETED},
    S.EXPIRED: (UNPAID - {S.EXPIRED}) | {S.COMPLETED},
    S.CANCELLED: (UNPAID - {S.CANCELLED}) | {S.COMPLETED},
    S.COMPLETED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    # A refund that fails gives its amount back: the payment returns to what it was.
    S.PARTIALLY_REFUNDED: frozenset({S.COMPLETED, S.REFUNDED, S.DISPUTED}),
    # A won dispute goes back to what the payment was; a lost one ends refunded.
    S.DISPUTED: frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED, S.DISPUTED}),
}

GRANTED = frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED, S.DISPUTED, S.REFUNDED})


class TransitionError(ValueError):
    """The lifecycle table does not allow this move."""

    def __init__(self, current: S, to: S) -> None:
        super().__init__(f"payment cannot go from {current} to {to}")
        self.current = current
        self.to = to


def can_advance(current: S | str, to: S | str) -> bool:
    return S(to) in TRANSITIONS[S(current)]
