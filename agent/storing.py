"""Write before you send: the agent's outputs on their way into the outbox.

:class:`Storing` is the part of :class:`~liftwatch.agent.runtime.Agent` that turns the
pipeline's records into messages and stores them (architecture.md principle 2): every
``event``, ``trip``, ``stats`` and ``health`` message is appended to the outbox before the
uplink may publish it, on the outbox worker thread, so acquisition never waits on an
fsync; new alarms go into the alarm ledger first and are repeated from it until the
platform's ``ack`` (EN 81-28).

A failing disk (ENOSPC, EIO, EROFS) is one fault (:mod:`liftwatch.agent.diskfault`).
What cannot be written stays in memory and is written, in order, when the disk takes
it again (tried every second): messages for the outbox (at most ``MAX_UNSTORED``; over
that the oldest trips/health go first, then stats, then events; alarms are never
dropped, and they are kept beyond the bound), the alarm ledger (its memory is the
truth) and journal events. A message that could not be stored is published once
straight away (QoS 1, alarms first, once the ledger's memory holds them) when the link
is up; once stored it goes out again from the outbox (a duplicate, same ``id``).

A mixin: it uses the agent's ``outbox``, ``ledger``, ``journal``, ``uplink``, ``disk``,
``factory``, ``executor`` and clocks, set up by ``Agent.__init__``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from liftwatch.agent.messages import dumps, lane_of, topic
from liftwatch.buffer.alarms import AlarmLedgerWriteError
from liftwatch.buffer.journal import JournalWriteError
from liftwatch.buffer.outbox import (
    DROP_ORDER,
    OutboxError,
    OutboxWriteError,
    queue_of,
)

#: the runtime's logger: these lines are the agent process's, wherever the code lives
log = logging.getLogger("liftwatch.agent.runtime")

#: messages kept in memory while the disk refuses them (about 300 bytes each)
MAX_UNSTORED = 10_000


class Storing:
    """The agent's outputs: messages made, stored before they are sent, alarms repeated."""

    def _queue(self, kind: str, msg: dict[str, Any]) -> None:
        if self.report is not None:
            self.report.queued(kind, msg)
        self._unwritten.append((lane_of(kind, msg), topic(self.prefix, self.lift_id, kind),
                                dumps(msg)))

    def emit(self, outs: list[dict[str, Any]]) -> None:
        """Pipeline outputs → messages → the write queue (written by ``_write``)."""
        for rec in outs:
            typ = rec.get("type")
            if self.factory.replay and typ == "event":  # the journal and ledger keep it
                rec = self.factory.mark_replayed(rec)
            if typ == "event":
                self._queue("event", self.factory.event(rec))
                if rec.get("sev") == "alarm" and rec.get("state") == "raised":
                    self._new_alarms.append(rec)
                if self.journal is not None:
                    try:
                        self.journal.add(rec, defer=self.disk.active)
                    except JournalWriteError as exc:  # kept in memory by the journal
                        self.disk.failed("event journal", exc)
                    except Exception as exc:
                        log.warning("event journal: %s", exc)
            elif typ == "trip":
                self._queue("trip", self.factory.trip(rec))
            # door cycles are counted in stats; they are not messages of their own

    async def _write(self, force: bool = False) -> None:
        """Append everything queued in one group commit; keep it for a retry on error.

        New alarms go into the alarm ledger first, then the outbox, then are marked
        sent: a crash in between leaves them in the ledger as never sent, so they go
        out right after the restart (an alarm is never left silent). During a disk
        fault this is tried once a second (``DiskFault.retry_due``) unless ``force`` or
        a new alarm waits: the ledger's memory must hold an alarm before it is
        published (straight away, by ``_keep_unstored``), or the platform's immediate
        ack of it would be refused and the alarm repeated for ever."""
        if self._writing or not (self._unwritten or self._new_alarms or self.disk.active):
            return
        if not (force or self._new_alarms or self.disk.retry_due()):
            return
        self._writing = True
        batch, self._unwritten = self._unwritten, []
        alarms, self._new_alarms = self._new_alarms, []
        self._alarms_storing = alarms
        loop = asyncio.get_running_loop()
        store = loop.run_in_executor(self.executor, self._store, batch, alarms)
        cancelled = False
        try:
            # The batch left memory when the store began: a cancel (the run ending while
            # the outbox thread stores) must not drop it, nor let the final write and the
            # drain run before it is in the outbox. So the store is seen through.
            while not store.done():
                try:
                    await asyncio.shield(store)
                except asyncio.CancelledError:
                    cancelled = True
            stored, failures, caught_up = store.result()
        except (OutboxError, OSError) as exc:  # not a write error: closed, bad argument
            self.write_errors += 1
            self._unwritten = batch + self._unwritten
            self._new_alarms = alarms + self._new_alarms
            log.error("outbox: %d message(s) not stored yet (%s); retrying", len(batch), exc)
            if cancelled:
                raise asyncio.CancelledError from None
            return
        finally:
            self._writing = False
            self._alarms_storing = []
        if not stored:
            self._unwritten = batch + self._unwritten
        else:
            for _lane, _topic, payload in batch:
                self._published_unstored.discard(id(payload))
        for part, exc, path in failures:
            self.write_errors += 1
            self.disk.failed(part, exc, path)
        if self.disk.active and not failures:
            self.disk.recovered(caught_up)
        if stored and batch and self.uplink is not None:
            self.uplink.wake()
        if cancelled:
            raise asyncio.CancelledError

    def _store(self, batch: list[tuple[str, str, bytes]], alarms: list[dict[str, Any]]
               ) -> tuple[bool, list[tuple[str, Exception, Any]], str]:
        """On the outbox thread: ledger (new alarms), outbox (all), ledger (sent); then
        whatever an earlier disk fault left unwritten (ledger, journal, outbox cursors).

        Returns (batch stored, the writes that failed as (part, error, path), what was
        caught up): write errors are the caller's to report, as one disk fault."""
        failures: list[tuple[str, Exception, Any]] = []
        done: list[str] = []
        ledger_failed = False
        t_event = topic(self.prefix, self.lift_id, "event")
        for rec in alarms:
            try:
                self.ledger.add(str(rec["id"]), t_event, json.dumps(rec).encode(), time.time())
            except AlarmLedgerWriteError as exc:  # kept in memory; saved with a later write
                if not ledger_failed:
                    ledger_failed = True
                    failures.append(("alarm ledger", exc, self.ledger.path))
            except (OSError, ValueError, KeyError) as exc:
                log.error("alarm ledger: alarm %s not kept: %s", rec.get("id"), exc)
        stored = True
        if batch:
            try:
                self.outbox.append_many(batch)
            except OutboxWriteError as exc:
                stored = False
                failures.append(("outbox", exc, self.outbox.directory))
            else:
                if self.disk.active:
                    done.append(f"{len(batch)} message(s) kept in memory stored in the outbox")
        # marked sent also when not stored: the runtime publishes it straight away, and
        # the ledger's repeats must keep their pace
        now = time.time()
        for rec in alarms:
            try:
                self.ledger.mark_sent(str(rec["id"]), now)
            except AlarmLedgerWriteError as exc:
                if not ledger_failed:
                    ledger_failed = True
                    failures.append(("alarm ledger", exc, self.ledger.path))
            except (OSError, ValueError, KeyError) as exc:
                log.error("alarm ledger: %s", exc)
        if self.ledger.unsaved and not ledger_failed:
            try:
                self.ledger.sync()
                done.append("alarm ledger saved")
            except AlarmLedgerWriteError as exc:
                failures.append(("alarm ledger", exc, self.ledger.path))
        journal = self.journal
        if journal is not None and journal.pending:
            try:
                n = journal.sync()
                done.append(f"{n} journal event(s) written")
            except JournalWriteError as exc:
                failures.append(("event journal", exc, exc.filename))
        if self.disk.active and self.outbox.stats().get("cursor_save_failing"):
            self.outbox.flush()
            if self.outbox.stats().get("cursor_save_failing"):
                failures.append(("outbox cursors", OSError(0, "cursor save failed"),
                                 self.outbox.directory / "cursors.json"))
        return stored, failures, "; ".join(done)

    def _keep_unstored(self) -> None:
        """During a disk fault: bound what waits in memory, publish what was not yet
        published (alarms first) when the link is up, and sum up the fault's log."""
        self.disk.summary()
        unwritten = self._unwritten
        if len(unwritten) > MAX_UNSTORED:
            self._drop_unstored(len(unwritten) - MAX_UNSTORED)
        uplink = self.uplink
        if uplink is None or not uplink.connected:
            return
        sent = self._published_unstored
        if len(sent) >= len(self._unwritten):
            return
        # an alarm goes out only once the ledger's memory holds it (see _write): its ack
        # may come back at once
        lanes = ("event", "record") if self._new_alarms or self._alarms_storing \
            else ("alarm", "event", "record")
        for lane in lanes:
            for m_lane, m_topic, payload in self._unwritten:
                if m_lane != lane or id(payload) in sent:
                    continue
                if not uplink.publish_unstored(m_topic, payload):
                    return
                sent.add(id(payload))

    def _drop_unstored(self, n: int) -> None:
        """Drop the ``n`` oldest kept messages, trips/health first, then stats, then
        events; alarms never (they stay beyond the bound). Counted and reported."""
        drop: set[int] = set()
        for queue in DROP_ORDER:  # the outbox's own order and queues
            for i, (lane, t, _p) in enumerate(self._unwritten):
                if len(drop) >= n:
                    break
                if queue_of(lane, t) == queue:
                    drop.add(i)
        if not drop:
            return
        kept: list[tuple[str, str, bytes]] = []
        for i, item in enumerate(self._unwritten):
            if i in drop:
                self._published_unstored.discard(id(item[2]))
            else:
                kept.append(item)
        self._unwritten = kept
        if self.unstored_dropped == 0:
            log.error("disk fault: more than %d messages wait for the disk; the oldest are "
                      "dropped (trips and health first, then stats, then events; alarms "
                      "never), counted in health", MAX_UNSTORED)
        self.unstored_dropped += len(drop)

    async def _repeat_alarms(self) -> None:
        """EN 81-28: every unacknowledged alarm again every ``alarm_repeat_s``, with its
        repeat count, in the alarm lane (ahead of any backlog), also after a restart.
        During a disk fault a repeat is published straight away and not kept."""
        if not self.ledger.pending:  # nothing to repeat: no hop to the outbox thread
            return
        loop = asyncio.get_running_loop()
        due = await loop.run_in_executor(self.executor, self.ledger.due, time.time(),
                                         self.cfg.detection.alarm_repeat_s)
        sent: list[str] = []
        direct = self.disk.active
        for entry in due:
            try:
                rec = json.loads(entry.payload)
                msg = self.factory.event(rec, repeat=max(entry.repeat, 1))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("alarm %s in the ledger unusable (%s): dropped from repeats",
                          entry.eid, exc)
                try:
                    await loop.run_in_executor(self.executor, self.ledger.ack, entry.eid)
                except AlarmLedgerWriteError as werr:  # gone from memory; saved later
                    self.disk.failed("alarm ledger", werr, self.ledger.path)
                continue
            if direct:
                if self.uplink is None or not self.uplink.publish_unstored(
                        topic(self.prefix, self.lift_id, "event"), dumps(msg)):
                    continue  # offline: due again at the next check, once the link is up
            else:
                self._queue("event", msg)
            sent.append(entry.eid)
        if not sent:
            return
        if not direct:
            await self._write()
        now = time.time()
        for eid in sent:
            try:
                await loop.run_in_executor(self.executor, self.ledger.mark_sent, eid, now)
            except AlarmLedgerWriteError as exc:  # the repeat counted in memory
                self.disk.failed("alarm ledger", exc, self.ledger.path)
