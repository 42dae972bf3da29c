import json

import pytest

from pyned.errors import ConfigError
from pyned.services.journal import Journal


def test_entries_are_numbered_filtered_and_followed():
    j = Journal()
    seen = []
    stop = j.subscribe(seen.append)
    j.record("vm1", "start")
    j.record("vm2", "crash", cause="stage-2 fault", code=1, pc=0x1000, esr=0x92000000, far=8)
    stop()
    j.record("vm1", "shutdown", code=0)
    assert [e.seq for e in j.entries()] == [1, 2, 3]
    assert [e.event for e in j.entries(vm="vm1")] == ["start", "shutdown"]
    assert [e.seq for e in j.entries(since=1, events=("crash",))] == [2]
    assert [e.event for e in seen] == ["start", "crash"]
    line = j.entries()[1].line()
    assert "vm2" in line and "pc=0x1000" in line and "(stage-2 fault)" in line


def test_limit_drops_the_oldest():
    j = Journal(limit=3)
    for i in range(5):
        j.record("vm1", "restart", restarts=i)
    assert [e.restarts for e in j.entries()] == [2, 3, 4]


def test_json_file(tmp_path):
    j = Journal()
    j.record("vm1", "crash", code=1, console=("a", "b"))
    out = tmp_path / "journal.json"
    j.write_json(out)
    data = json.loads(out.read_text())
    assert data[0]["vm"] == "vm1" and data[0]["console"] == ["a", "b"] and data[0]["code"] == 1
    with pytest.raises(ConfigError, match="cannot write the journal"):
        j.write_json(tmp_path / "missing" / "j.json")
