"""CEL filters of webhook endpoints: compiled when saved, evaluated over each payload.

A filter reads the payload's top-level fields (`type`, `timestamp`, `data`), e.g.
`type == "lead.stage_changed" && data.event.stage == "sql"`. Saving one that does not parse, is
too long, or reads another variable is refused (InvalidFilter → 422 with the line and column).
At delivery time a filter that fails on a payload (a field that event type does not have, a
type mismatch) does not match: the endpoint asked for events it can describe, and a payload it
cannot describe is not one of them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import cel

from ledger.errors import InvalidValue
from processors.webhook_events import FILTER_VARIABLES

MAX_FILTER_LENGTH = 2_000
_POSITION = re.compile(r"<input>:(\d+):(\d+)")

# A filter failing on a payload is an expected "no match", not a warning per event.
logging.getLogger("cel").setLevel(logging.ERROR)


class InvalidFilter(InvalidValue):
    """`field` is "filter"; the message names the line and column when the parser knows them."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__("filter", f"{message}{where}")
        self.line, self.column = line, column


def compile_filter(text: str) -> Any:
    """The compiled program (cel.Program); raises InvalidFilter."""
    if not text.strip():
        raise InvalidFilter("empty expression (omit the filter to receive every event)")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"longer than {MAX_FILTER_LENGTH} characters")
    try:
        program = cel.compile(text)
    except ValueError as exc:
        message = str(exc)
        position = _POSITION.search(message)
        detail = message.split("ERROR:", 1)[-1].split("\n", 1)[0]
        detail = _POSITION.sub("", detail).lstrip(": ").strip().removeprefix("Syntax error:")
        detail = detail.split(" expecting {", 1)[0]  # the parser's token list helps nobody
        raise InvalidFilter(
            f"syntax error: {detail.strip()}",
            int(position.group(1)) if position else None,
            int(position.group(2)) if position else None,
        ) from None
    unknown = sorted(set(program.references()["variables"]) - set(FILTER_VARIABLES))
    if unknown:
        raise InvalidFilter(
            f"unknown variable {unknown[0]!r} (a filter reads " + ", ".join(FILTER_VARIABLES) + ")"
        )
    return program


def matches(program: Any, context: dict[str, Any]) -> bool:
    try:
        return program.execute(cel.Context(context)) is True
    except Exception:  # noqa: BLE001 - a payload the filter cannot read does not match
        return False
