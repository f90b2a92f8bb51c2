"""The long-running processes' event loop: uvloop unless switched off, and a bad setting is
refused as a setting error (one line from the CLI), never at the first await."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from api import event_loop
from api.settings import SettingsError, load_settings


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default_and_the_standard_loop_when_asked():
    assert load_settings({}).event_loop == "uvloop"
    assert event_loop.run(_loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(event_loop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_an_unknown_loop_is_a_settings_error():
    with pytest.raises(SettingsError, match="event_loop"):
        load_settings({"LEADLEDGER_EVENT_LOOP": "tokio"})
