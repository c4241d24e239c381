"""The providers payhooks knows, by name: each verifies, parses and translates its own events."""

from __future__ import annotations

from types import ModuleType

from providers import manual, paypal, stripe

PROVIDERS: dict[str, ModuleType] = {stripe.NAME: stripe, paypal.NAME: paypal, manual.NAME: manual}


class UnknownProviderError(LookupError):
    pass


def get(name: str) -> ModuleType:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProviderError(f"no provider named {name!r}") from None
