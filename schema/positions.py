"""A position in the global log: (transaction id, position), compared as a pair.

Readers of the log order by the writing transaction's id first and the row's position second;
this pair is what checkpoints, consistency tokens and the relay's "previous" links carry.
"""

from __future__ import annotations

import msgspec


class LogPosition(msgspec.Struct, frozen=True, order=True, array_like=True):
    transaction_id: int = 0
    position: int = 0

    def token(self) -> str:
        """The opaque text form used in HTTP headers and NATS envelopes."""
        return f"{self.transaction_id}-{self.position}"

    @classmethod
    def parse(cls, token: str) -> LogPosition:
        tx, sep, pos = token.strip().partition("-")
        if not sep or not tx.isdigit() or not pos.isdigit():
            raise ValueError(f"not a log position: {token!r}")
        return cls(int(tx), int(pos))


ORIGIN = LogPosition(0, 0)
