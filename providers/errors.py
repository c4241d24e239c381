"""Errors a provider's API calls raise, whichever the provider: what kind they are decides the retry.

``ProviderUnavailableError``: the provider could not answer now (network trouble,
a timeout, 5xx, rate limiting) — try again later. ``ProviderRequestError``: it
refused the request (4xx) — trying again will not help.
``VerificationUnavailableError``: a delivery could not be verified because the
provider (its certificate, its verification API) could not be reached; the
receiver answers 503 + Retry-After so the provider delivers it again, never
200 unverified.
"""

from __future__ import annotations


class ProviderUnavailableError(RuntimeError):
    """The provider could not answer now (timeout, connection, 5xx, rate limit)."""


class ProviderRequestError(ValueError):
    """The provider refused the request (4xx other than rate limiting)."""


class ProviderNotFoundError(ProviderRequestError):
    """The provider has no such object (404): usually an id the caller made up or mistyped."""


class ProviderConflictError(ProviderRequestError):
    """The idempotency key was used before with other parameters."""


class VerificationUnavailableError(ProviderUnavailableError):
    """A delivery's signature cannot be checked now: ask the sender to retry, never accept it unchecked."""
