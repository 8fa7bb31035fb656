"""Exceptions raised by redis-tcache."""

from __future__ import annotations

import re
from typing import Any

from redis.exceptions import ResponseError

__all__ = ["GateRejected", "TCacheError", "Unconfirmed"]

_GATE_RE = re.compile(r"^(?:GATE )?(?P<gate>\S+): (?P<pointer>/[^:]*|/): (?P<reason>.*)$", re.S)
_UNCONFIRMED_RE = re.compile(
    r"^(?:UNCONFIRMED )?(?P<command>\S+) was not confirmed\b.*?\bslots (?P<slots>[0-9][0-9,\- ]*)", re.S
)


class TCacheError(Exception):
    """Base class of errors raised by the client itself (not by the server)."""


class GateRejected(ResponseError):
    """A quality gate refused a value (server error ``GATE <name>: <pointer>: <reason>``).

    ``gate`` is the gate name, ``pointer`` the JSON pointer of the offending place
    (``/`` is the document root) and ``reason`` the server's explanation.
    """

    gate: str
    pointer: str
    reason: str

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        try:
            super().__init__(message, **kwargs)  # redis-py 6+: status_code=...
        except TypeError:  # redis-py 5
            super().__init__(message)
        message = str(message)
        m = _GATE_RE.match(message)
        if m:
            self.gate = m.group("gate")
            self.pointer = m.group("pointer")
            self.reason = m.group("reason")
        else:
            head, _, rest = message.partition(": ")
            self.gate = head.removeprefix("GATE ")
            self.pointer = ""
            self.reason = rest

    def __reduce__(self) -> tuple[type[GateRejected], tuple[str]]:
        return (GateRejected, (str(self.args[0]) if self.args else "",))


class Unconfirmed(ResponseError):
    """A cluster-wide invalidation that some slot owners did not confirm in time.

    In cluster mode the module applies ``TCACHE.INVALTAG``, ``TCACHE.STALETAG``,
    ``TCACHE.INVALPREFIX``, ``PERM.INVALROLE`` and ``PERM.INVALALL`` on every primary and
    replies once the owner of every slot confirmed. When some owners do not confirm within
    ``tcache.cluster-timeout-ms``, the server answers ``UNCONFIRMED <command> was not
    confirmed within <n> ms (tcache.cluster-timeout-ms) by the owners of slots <ranges>; ...``:
    the invalidation was applied where it was confirmed, and maybe not on those slots.
    **Repeating the same call is safe**, and is the way to finish the job: it applies again
    on every primary, and where the first call already applied there is nothing left to do.

    ``command`` is the command name as the server wrote it (``TCACHE.INVALTAG``...) and
    ``slots`` the unconfirmed slot ranges as ``(start, end)`` pairs, ``end`` included
    (a single slot is ``(n, n)``).
    """

    command: str
    slots: list[tuple[int, int]]

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        try:
            super().__init__(message, **kwargs)  # redis-py 6+: status_code=...
        except TypeError:  # redis-py 5
            super().__init__(message)
        m = _UNCONFIRMED_RE.match(str(message))
        self.command = m.group("command") if m else ""
        self.slots = _slot_ranges(m.group("slots")) if m else []

    def __reduce__(self) -> tuple[type[Unconfirmed], tuple[str]]:
        return (Unconfirmed, (str(self.args[0]) if self.args else "",))


def _slot_ranges(text: str) -> list[tuple[int, int]]:
    """``"0-5460,16000"`` -> ``[(0, 5460), (16000, 16000)]``."""
    out: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def _install_error_class() -> None:
    """Teach redis-py's reply parsers that ``GATE ...`` errors are :class:`GateRejected`
    and ``UNCONFIRMED ...`` errors are :class:`Unconfirmed`.

    redis-py maps an error reply's first word to an exception class (``NOPERM`` to
    ``NoPermissionError``...); the parsers of every client kind (sync, asyncio, cluster,
    hiredis or not) share that table.
    """
    from redis._parsers.base import BaseParser

    BaseParser.EXCEPTION_CLASSES["GATE"] = GateRejected
    BaseParser.EXCEPTION_CLASSES["UNCONFIRMED"] = Unconfirmed


_install_error_class()
