"""The built-in "phone" provider: what the number's own metadata says, offline (phonenumbers).

Region (ISO 3166-1 alpha-2), line type (mobile, fixed_line, voip, toll_free, ...), the
geographic description of the number's prefix ("London", "New Jersey") and the carrier the
prefix was originally allocated to (numbers may have been ported since: confidence below 1).
The region is offered as the lead's country when it has none.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType, carrier, geocoder

from processors.providers import Clock, Finding, LeadSnapshot, utc_now, valued
from schema.events import LeadFields

NAME = "phone"
CARRIER_CONFIDENCE = 0.7
"""Carrier and line type come from number allocation; porting moves numbers between them."""

_TYPES = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}


def line_type(number: phonenumbers.PhoneNumber) -> str:
    return _TYPES.get(phonenumbers.number_type(number), "unknown")


def phone_finding(snapshot: LeadSnapshot, at: Clock = utc_now) -> Finding:
    """Pure: the finding for the lead's phone (empty when it has none or it does not parse)."""
    if snapshot.phone is None:
        return Finding()
    try:
        number = phonenumbers.parse(snapshot.phone, snapshot.country)
    except phonenumbers.NumberParseException:
        return Finding()
    if not phonenumbers.is_valid_number(number):
        return Finding(values=valued(NAME, at(), {"phone_valid": False}))
    now = at()
    region = phonenumbers.region_code_for_number(number)
    values = valued(NAME, now, {
        "phone_valid": True,
        "phone_region": region,
        "phone_location": geocoder.description_for_number(number, "en") or None,
    })
    values |= valued(NAME, now, {
        "phone_line_type": line_type(number),
        "phone_carrier": carrier.name_for_number(number, "en") or None,
    }, CARRIER_CONFIDENCE)
    # "001" and the like name no country; only a real region is offered as one.
    fills = LeadFields(country=region) if region and region.isalpha() else LeadFields()
    return Finding(values=values, fills=fills)


class PhoneProvider:
    name = NAME

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock

    async def enrich(self, workspace: str, snapshot: LeadSnapshot) -> Finding:
        return phone_finding(snapshot, self.clock)
