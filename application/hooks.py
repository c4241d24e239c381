"""In-process hooks: Python functions an embedding application runs on outbox messages.

    from application.hooks import on

    @on("credits.granted")
    def unlock(message):  # an Announcement
        ...

A hook is a consumer like a webhook endpoint: the dispatcher gives each
message one delivery per hook subscribed to its type, after the money
transaction has committed, and the delivery is retried with backoff, logged
per attempt and replayable. A hook that raises costs only its own delivery;
the others go on. Hooks run in the worker that takes the delivery, so every
worker must register the same hooks: list their modules in ``HOOK_MODULES``
(the workers import them at start). A hook may run more than once for a
message (a worker killed after the hook returned): dedupe on
``message.message_id``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

ALL = "*"


@dataclass(frozen=True)
class Announcement:
    message_id: str
    type: str
    user_id: str | None
    data: dict
    created_at: datetime


Hook = Callable[[Announcement], object]

_HOOKS: dict[str, tuple[frozenset[str], Hook]] = {}  # name -> (types, function)


def on(*types: str) -> Callable[[Hook], Hook]:
    """Register a function for these message types (``"*"``: every type); it is named by module and qualname."""
    if not types:
        raise ValueError("name at least one message type (or '*')")

    def register(fn: Hook) -> Hook:
        _HOOKS[name_of(fn)] = (frozenset(types), fn)
        return fn

    return register


def name_of(fn: Hook) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def subscribed(message_type: str) -> list[str]:
    """Names of the hooks that want this type, in a stable order."""
    return sorted(name for name, (types, _) in _HOOKS.items() if message_type in types or ALL in types)


def get(name: str) -> Hook | None:
    entry = _HOOKS.get(name)
    return entry[1] if entry else None


def remove(name: str) -> None:
    _HOOKS.pop(name, None)


def load(modules: Iterable[str]) -> None:
    """Import the modules whose ``@on`` decorators register the application's hooks."""
    for module in modules:
        importlib.import_module(module)
