"""Why a change cannot be applied now; the task decides what to do with each kind."""


class UnknownPaymentError(LookupError):
    """No payment is recorded, and the event carries too little to record one. Permanent."""


class NotReadyError(LookupError):
    """The change depends on something not seen yet (a refund before its payment).

    ``key`` names what it waits for, e.g. ``stripe:pi:pi_123``; the event is held
    under that key and applied when an event touching the same key is.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class StaleEventError(ValueError):
    """An event older than the last one applied to its object: it must not move state backwards."""
