"""Exceptions raised by redis-tcache."""

from __future__ import annotations

import re
from typing import Any

from redis.exceptions import ResponseError

__all__ = ["GateRejected", "TCacheError"]

_GATE_RE = re.compile(r"^(?:GATE )?(?P<gate>\S+): (?P<pointer>/[^:]*|/): (?P<reason>.*)$", re.S)


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


def _install_error_class() -> None:
    """Teach redis-py's reply parsers that ``GATE ...`` errors are :class:`GateRejected`.

    redis-py maps an error reply's first word to an exception class (``NOPERM`` to
    ``NoPermissionError``...); the parsers of every client kind (sync, asyncio, cluster,
    hiredis or not) share that table.
    """
    from redis._parsers.base import BaseParser

    BaseParser.EXCEPTION_CLASSES["GATE"] = GateRejected


_install_error_class()
