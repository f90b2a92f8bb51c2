"""Typed errors of the write side. Each carries a stable `code` the API maps to a problem type."""

from __future__ import annotations


class LedgerError(Exception):
    code = "ledger-error"


class ConcurrencyError(LedgerError):
    """The stream moved on since the caller read it."""

    code = "version-conflict"

    def __init__(self, stream_id: str, expected: int | None, current: int) -> None:
        super().__init__(f"stream {stream_id} is at version {current}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.current = current


class IdentityClaimed(LedgerError):
    """An append would give its stream identity keys that other streams own; nothing was
    appended. `claims` names each owner (IdentityClaim: kind, lead_id)."""

    code = "identity-claimed"

    def __init__(self, stream_id: str, claims: list) -> None:
        owners = ", ".join(f"{c.kind} of {c.lead_id}" for c in claims)
        super().__init__(f"{stream_id}: identity already used ({owners})")
        self.stream_id = stream_id
        self.claims = claims


class DomainError(LedgerError):
    """A command the lead refuses; nothing is appended."""

    code = "invalid-command"


class LeadNotFound(DomainError):
    code = "not-found"


class LeadAlreadyExists(DomainError):
    code = "already-exists"


class LeadGone(DomainError):
    """The lead was erased or merged away; its stream takes no more changes."""

    code = "gone"


class LeadArchivedError(DomainError):
    code = "archived"


class InvalidValue(DomainError):
    code = "invalid-value"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DuplicateLead(DomainError):
    """The lead's identity (email, phone or external id) already belongs to another lead, or
    (`exact` False) a likely duplicate exists. `score` is 0–100 (100 for an exact match)."""

    code = "duplicate"

    def __init__(self, existing_id: str, matched: tuple[str, ...], *, exact: bool = True,
                 score: float = 100.0) -> None:
        kind = "identity" if exact else "likely duplicate"
        super().__init__(f"{kind} already used by lead {existing_id} ({', '.join(matched)})")
        self.existing_id = existing_id
        self.matched = matched
        self.exact = exact
        self.score = score
