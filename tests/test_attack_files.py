"""Attacks on the data directory and the tools' output files (issue 23): links planted in
place of the agent's own files, run as root (CI runs as root, and there a followed link
truncates or overwrites any file of the system). Each plant is refused with an error
naming it, the link's target is untouched, and the genuine alarm press of the trace
still reaches a real Mosquitto. The technician tools never overwrite a file without
``--force`` nor write through a link."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from attack_helpers import AgentRun, attack_config, press_trace, wait_alarm
from conftest import Broker
from liftwatch.agent.cli import main
from liftwatch.buffer.atomic import SymlinkRefused, atomic_write_bytes, open_nofollow
from uplink_helpers import Observer

#: place in the data directory -> what the agent does with that file
PLANTS = {
    # the four: truncated, overwritten, overwritten, overwritten
    "outbox/acks.log": "the outbox's ack log",
    "outbox/alarm/0000000000000000.seg": "a segment of the alarm queue",
    ".baselines.db.tmp": "the temp file of the learned baselines",
    "outbox/.cursors.json.tmp": "the temp file of the outbox cursors",
    # and every other file of the data directory
    "outbox/cursors.json": "the outbox cursors",
    "outbox/event/0000000000000000.idx": "a segment's index",
    "alarms.json": "the alarm ledger",
    "baselines.db": "the learned baselines",
    "boot": "the boot counter",
    "journal/gen-00000001.json": "the event journal",
    "command_ids.jsonl": "the command id store",
    "outbox/.lock": "the outbox's lock file",
}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.timeout(90)
def test_planted_links_in_the_data_directory_are_refused_and_their_targets_untouched(
        broker: Broker, tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port)
    data = tmp_path / "data"
    victims = tmp_path / "system"
    victims.mkdir()
    before = {}
    for i, place in enumerate(PLANTS):
        # a file the agent must never touch (as root it could be /etc/shadow); some are
        # valid-looking JSON so that nothing fails for the wrong reason
        victim = victims / f"victim-{i}"
        victim.write_bytes(b'{"_default": {}}\n' if place.endswith((".json", ".db"))
                           else b"precious system file\n" * 50)
        before[victim] = _digest(victim)
        link = data / place
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
    # directories: a queue directory and the quarantine linked to a system directory
    # (every file there not named like a segment would be moved away, the oldest
    # quarantined files deleted)
    sysdir = tmp_path / "etc"
    sysdir.mkdir()
    (sysdir / "passwd").write_text("root:x:0:0\n")
    (sysdir / "0000000000000000.seg").write_bytes(b"not a segment at all" * 10)
    dir_digests = {p.name: _digest(p) for p in sysdir.iterdir()}
    (data / "outbox" / "record").symlink_to(sysdir)
    (data / "outbox" / "quarantine").symlink_to(sysdir)
    # a dangling link where the event journal's next generation goes
    (data / "journal" / "gen-00000002.json").symlink_to(victims / "created-by-root")
    agent = AgentRun(cfg, press_trace(tmp_path), speed=20.0)
    try:
        wait_alarm(obs)  # the genuine press reaches the broker
        assert agent.wait(60) == 0, agent.log[-3000:]
    finally:
        agent.kill()
    for victim, digest in before.items():
        assert _digest(victim) == digest, f"{victim.name} was changed"
    assert not (victims / "created-by-root").exists()
    assert {p.name: _digest(p) for p in sysdir.iterdir()} == dir_digests
    assert "outbox/record is a symbolic link" in agent.log
    assert (data / "outbox" / "record").is_dir() and not (data / "outbox" / "record").is_symlink()
    log = agent.log
    refused = [place for place in PLANTS if f"{(data / place).name} is a symbolic link" in log]
    # the temp-file plants are never even opened (mkstemp picks fresh names); every other
    # link is named in an error line, and the agent's own file is made afresh
    never_opened = {".baselines.db.tmp", "outbox/.cursors.json.tmp"}
    assert set(PLANTS) - never_opened <= set(refused) | {"journal/gen-00000001.json"}, log
    assert "gen-00000001.json is a symbolic link" in log or \
        "gen-00000001.json unreadable" in log, log
    for place in PLANTS:
        p = data / place
        assert not p.is_symlink() or place in never_opened, place
    # the links themselves were moved to quarantine (kept for the technician)
    quarantined = [p for p in data.rglob("quarantine/*") if p.is_symlink()]
    assert len(quarantined) >= len(PLANTS) - len(never_opened), quarantined
    obs.close()


def test_the_atomic_write_and_nofollow_open_refuse_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "file"
    link.symlink_to(victim)
    with pytest.raises(SymlinkRefused) as ei:
        open_nofollow(link, os.O_RDWR | os.O_CREAT)
    assert str(link) in str(ei.value) and "symbolic link" in str(ei.value)
    # a planted temp name is never used; the rename replaces the link, not its target
    (tmp_path / ".other.tmp").symlink_to(victim)
    (tmp_path / ".other").symlink_to(victim)
    atomic_write_bytes(tmp_path / ".other", b"new")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / ".other").is_symlink()
    assert (tmp_path / ".other").read_bytes() == b"new"


# ---------------------------------------------------------------- the tools' output files

def _config(tmp_path: Path) -> Path:
    return attack_config(tmp_path, 1883)


@pytest.mark.parametrize("argv", [
    ["events", "--config", "{cfg}", "--export", "{out}"],
    ["outbox", "--config", "{cfg}", "--export", "{out}"],
    ["record", "--config", "{cfg}", "--out", "{out}", "--duration", "1"],
    ["plot", "{trace}", "--trip", "1", "--out", "{out}"],
])
@pytest.mark.parametrize("plant", ["file", "link", "dangling"])
def test_the_tools_never_overwrite_without_force_nor_follow_a_link(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        plant: str) -> None:
    cfg = _config(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    out = tmp_path / ("out.png" if argv[0] == "plot" else "out.jsonl")
    if plant == "file":
        out.write_bytes(b"yesterday's export\n")
    elif plant == "link":
        out.symlink_to(victim)
    else:
        out.symlink_to(tmp_path / "created")
    args = [a.format(cfg=cfg, out=out, trace=press_trace(tmp_path)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    if plant == "file":
        assert "exists (use --force to overwrite)" in err, err
        assert out.read_bytes() == b"yesterday's export\n"
    else:
        assert "is a symbolic link; refused" in err, err
        assert victim.read_bytes() == b"precious\n"
        assert not (tmp_path / "created").exists()
    # --force overwrites a plain file, never a link
    if plant != "file" and argv[0] != "record":
        assert main([*args, "--force"]) == 2
        assert "is a symbolic link; refused" in capsys.readouterr().err
        assert victim.read_bytes() == b"precious\n"
        assert not (tmp_path / "created").exists()


def test_force_overwrites_a_plain_export(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "events.jsonl"
    out.write_text("old\n")
    assert main(["events", "--config", str(cfg), "--export", str(out), "--force"]) == 0
    assert out.read_text() == ""  # no journal yet: no events, the old content gone
    assert "0 event(s) written" in capsys.readouterr().out
