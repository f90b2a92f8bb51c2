"""Reading a firmographics CSV: one row per company domain, checked, with its line number.

Pure (no I/O beyond the lines it is given). The header names the columns, in any order:
`domain` (required; a bare domain or a URL, `www.` dropped), `company_name`, `industry`,
`employee_range`, `revenue_range`, `country` (a code or a name, stored as ISO 3166-1 alpha-2)
and `technologies` (separated by `;` or `|`). A row that cannot be used is rejected with its line
number and why; the rest load.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

import msgspec

from ledger.normalize import country_code, website_domain

COLUMNS = ("domain", "company_name", "industry", "employee_range", "revenue_range", "country",
           "technologies")
MAX_TEXT = 200
MAX_TECHNOLOGIES = 100
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_TECH_SPLIT = re.compile(r"[;|]")


class InvalidCsv(ValueError):
    """The file as a whole cannot be read (no header, no domain column, unknown columns)."""


class Firmographic(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    company_name: str | None = None
    industry: str | None = None
    employee_range: str | None = None
    revenue_range: str | None = None
    country: str | None = None
    technologies: tuple[str, ...] = ()


class RejectedRow(msgspec.Struct, frozen=True):
    line: int
    reason: str


def _header(row: list[str]) -> list[str]:
    names = [c.strip().lower().lstrip("\ufeff") for c in row]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InvalidCsv(f"unknown column(s) {', '.join(map(repr, unknown))}; the columns are "
                         f"{', '.join(COLUMNS)}")
    if "domain" not in names:
        raise InvalidCsv("the header has no 'domain' column")
    if len(set(names)) != len(names):
        raise InvalidCsv("a column is named twice in the header")
    return names


def parse_row(values: dict[str, str]) -> Firmographic | str:
    """The row as a Firmographic, or why it is rejected."""
    raw_domain = values.get("domain", "").strip()
    if not raw_domain:
        return "domain is empty"
    domain = website_domain(raw_domain)
    if domain is None or not _DOMAIN.match(domain):
        return f"domain {raw_domain!r} is not a domain name"
    texts: dict[str, str | None] = {}
    for name in ("company_name", "industry", "employee_range", "revenue_range"):
        text = " ".join(values.get(name, "").split()) or None
        if text is not None and len(text) > MAX_TEXT:
            return f"{name} is longer than {MAX_TEXT} characters"
        texts[name] = text
    country = None
    if raw_country := values.get("country", "").strip():
        country = country_code(raw_country)
        if country is None:
            return f"country {raw_country!r} is not a known country"
    techs = tuple(dict.fromkeys(
        t for t in (" ".join(p.split()) for p in _TECH_SPLIT.split(values.get("technologies", "")))
        if t
    ))
    if len(techs) > MAX_TECHNOLOGIES:
        return f"more than {MAX_TECHNOLOGIES} technologies"
    return Firmographic(domain=domain, country=country, technologies=techs, **texts)


def read_csv(lines: Iterable[str]) -> Iterator[tuple[int, Firmographic | RejectedRow]]:
    """(line number, row or rejection) for every data row; a domain seen before in the same
    file is rejected (the first one counts). Raises InvalidCsv for an unusable header."""
    reader = csv.reader(lines)
    try:
        header = _header(next(reader))
    except StopIteration:
        raise InvalidCsv("the file is empty (a header line is required)") from None
    except csv.Error as exc:
        raise InvalidCsv(f"line 1: {exc}") from None
    seen: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, RejectedRow(reader.line_num, f"not CSV: {exc}")
            continue
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue  # blank lines are no rows
        if len(row) != len(header):
            yield line, RejectedRow(line, f"{len(row)} values for {len(header)} columns")
            continue
        parsed = parse_row(dict(zip(header, row, strict=True)))
        if isinstance(parsed, str):
            yield line, RejectedRow(line, parsed)
        elif parsed.domain in seen:
            yield line, RejectedRow(line, f"domain {parsed.domain} is already on line "
                                          f"{seen[parsed.domain]}")
        else:
            seen[parsed.domain] = line
            yield line, parsed
