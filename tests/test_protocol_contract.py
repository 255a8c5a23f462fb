"""platform-protocol.md's field lists are what the terminal sends (issue 18, item 6): the
status table against the message factory, the schema and a real pipeline's status; the
event and stats field lists against their schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from liftwatch.agent import messages
from liftwatch.agent.timebase import Timebase
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import DetectionParams, LiftParams

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "platform-protocol.md").read_text(encoding="utf-8")
SCHEMAS = REPO / "agent" / "schemas"
ENVELOPE = ("v", "id", "ts", "tq")


def schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{kind}.json").read_text(encoding="utf-8"))


def status_table() -> list[tuple[str, str]]:
    """(field, null column) of each row of the status table."""
    start = DOC.index("`status`: every field below")
    rows = []
    for line in DOC[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        m = re.match(r"^\| `(\w+)` \| .* \| (.+) \|$", line)
        if m:
            rows.append((m.group(1), m.group(2).strip()))
    return rows


def paragraph_fields(kind: str) -> set[str]:
    """The field names of the ``kind``: paragraph (parenthesised remarks left out)."""
    m = re.search(rf"^`{kind}`: (.+?)(?:\n\n|\Z)", DOC, re.S | re.M)
    assert m, f"no `{kind}`: paragraph in platform-protocol.md"
    text = m.group(1)
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return set(re.findall(r"`(\w+)`", text))


def nullable(spec: dict[str, Any]) -> bool:
    t = spec.get("type")
    return None in spec.get("enum", []) or t == "null" or (isinstance(t, list) and "null" in t)


def test_the_status_table_is_the_factorys_fields_and_the_schemas() -> None:
    rows = status_table()
    assert [name for name, _ in rows] == list(messages.STATUS_FIELDS)
    never = {name for name, null in rows if null == "never"}
    assert never == set(messages.STATUS_NEVER_NULL)
    sch = schema("status")
    assert sch["required"] == [*ENVELOPE, *messages.STATUS_FIELDS]
    assert {k for k, v in sch["properties"].items() if k in messages.STATUS_FIELDS
            and nullable(v)} == set(messages.STATUS_FIELDS) - never
    assert set(sch["properties"]) == {*ENVELOPE, "replay", *messages.STATUS_FIELDS}


@pytest.mark.parametrize("controller", [False, True])
def test_a_pipelines_status_has_every_documented_field(controller: bool) -> None:
    """A sensors-only terminal knowing nothing yet, and one with a controller's answer:
    both send every field, null for what they do not know."""
    lift = LiftParams(landings=["1", "2", "3"], landing_heights_m=[0.0, 3.0, 6.0])
    pipe = Pipeline(lift, DetectionParams(), accel_fs=None, lsb_per_g=None,
                    controller_present=controller)
    if controller:
        pipe.feed(0.0, "ctl", {"mode": 1, "run": 0, "dir": 0, "floor": "2", "door": 2,
                               "zone": 1, "speed": 0.0, "safety": 0, "lock": 0,
                               "overload": 0})
    else:
        pipe.feed(0.0, "di", {"door_closed": 1})
    msg = messages.MessageFactory("310104-0009999", 1, Timebase()).status(pipe.status())
    jsonschema.validate(msg, schema("status"))
    assert list(msg)[len(ENVELOPE):] == [name for name, _ in status_table()]
    if controller:
        assert msg["floor"] == "2" and msg["overload"] == 0 and msg["lock"] == 0
    else:
        assert msg["mode"] == messages.MODE_UNKNOWN and msg["door"] == 2
        assert msg["floor"] is None and msg["zone"] is None and msg["person"] is None
        assert msg["lock"] is None and msg["overload"] is None and msg["safety"] is None


@pytest.mark.parametrize("kind", ["event", "stats", "condition"])
def test_the_event_and_stats_field_lists_are_their_schemas(kind: str) -> None:
    fields = paragraph_fields(kind)
    props = set(schema(kind)["properties"]) - {*ENVELOPE, "replay"}
    assert fields == props, (f"in the doc only: {sorted(fields - props)}; "
                             f"in the schema only: {sorted(props - fields)}")
