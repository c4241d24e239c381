"""Why a change cannot be applied now; the unit of work decides what to do with each kind."""


class UnknownPaymentError(LookupError):
    """No payment is recorded, and the event carries too little to record one. Permanent."""


class NotReadyError(LookupError):
    """The change depends on something not seen yet (a refund before its payment).

    ``key`` names what it waits for, e.g. ``stripe:payment:pi_123``; the event is
    held under that key and applied when an event touching the same key is.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class LookupNeededError(NotReadyError):
    """The change needs facts only the provider's API has (a session's line items).

    The event is held under ``key``; after the transaction, the facts are
    fetched and the event applied again with them.
    """


class StaleEventError(ValueError):
    """An event older than the last one applied to its object: it must not move state backwards."""
