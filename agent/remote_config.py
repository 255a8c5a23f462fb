"""Configuration changes while the agent runs: ``config_set``, SIGHUP and their rollback.

:class:`RemoteConfig` is the part of :class:`~liftwatch.agent.runtime.Agent` that hosts
the platform's ``config_get``/``config_set`` and the technician's SIGHUP reload. A
``config_set`` never writes the technician's file (read-only under the shipped unit):
it is merged into the remote override ``<data_dir>/remote.toml`` that ``load_config``
merges over the file. The whole resulting config is checked by the validator of
``config check`` (safe ranges, the pipeline built once) before anything is written;
then the previous override is kept and a ``config_set.pending`` marker written
(:mod:`liftwatch.agent.override`), the change applied, and within ``confirm_s`` the
uplink must have a broker session with no loop stalled. A change that fails at apply
or is not healthy in time is rolled back at once; one still pending at the next start
is rolled back by ``run`` before the config is even loaded. Detection parameters are
applied by rebuilding the pipeline with its learned baselines and the current input
levels; at most one such change per ``DETECTION_CHANGE_MIN_S``, so that changes cannot
keep an alarm timer from running out. Every change of what detection and reporting run
with is reported as a ``detection_changed`` event and in ``health.config``.

A mixin: it uses the agent's ``cfg``, ``pipeline``, ``uplink``, ``overrides`` and
clocks, set up by ``Agent.__init__``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from typing import Any

from liftwatch.agent.commands import CommandError
from liftwatch.agent.config import (
    ConfigError,
    TerminalConfig,
    deep_merge,
    dump_override,
    flatten,
    load_config,
    load_with_override,
    nest,
    remote_keys,
    setting_changes,
    tracked_settings,
    weakened_settings,
)
from liftwatch.agent.diskfault import errno_name
from liftwatch.buffer.atomic import atomic_write_bytes
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import change_record

#: the runtime's logger: these lines are the agent process's, wherever the code lives
log = logging.getLogger("liftwatch.agent.runtime")

#: the settings last reported to the platform (detection_changed), in the data directory
REPORTED_SETTINGS = "reported_settings.json"
#: problems named in a refused config_set's reply (every key of one patch, in practice)
MAX_ISSUES = 12
#: a config_set that changes detection restarts its timers (the pipeline is rebuilt): at
#: most one such change this often, so that changes cannot keep an entrapment or
#: alarm-press timer from running out; as long as the longest alarm timer's maximum
DETECTION_CHANGE_MIN_S = 300.0
#: write errors that are the disk's fault (reported as a disk fault), not a refusal
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT})


class RemoteConfig:
    """The running config: changed by the platform or a reload, reported, rolled back."""

    def config_get(self) -> dict[str, Any]:
        return self.cfg.redacted()

    async def config_set(self, patch: dict[str, Any], cmd_id: str | None = None
                         ) -> dict[str, Any]:
        """Validate, write the override, apply, confirm healthy or roll back (module doc).

        The technician's file is never written: the patch is merged into the remote
        override (``<data_dir>/remote.toml``), and the whole config the agent would run
        with is checked by the same validator as ``config check`` (ranges, cross-checks,
        the pipeline built once) before anything is written."""
        allowed = remote_keys()
        keys = list(flatten(patch))
        refused = [k for k in keys if k not in allowed]
        if refused:
            raise CommandError(f"not changeable remotely: {', '.join(sorted(refused)[:10])}")
        current = nest({k: new for k, (_old, new) in self.cfg.override.items()})
        wanted = deep_merge(current, patch)
        try:
            candidate = load_with_override(self.cfg.path, wanted, data_dir=self.data_dir)
        except ConfigError as exc:
            issues = exc.issues[:MAX_ISSUES]
            more = len(exc.issues) - len(issues)
            raise CommandError("refused, nothing changed: " + "; ".join(
                f"{i.key}: expected {i.expected}, found {i.found}" for i in issues)
                + (f"; and {more} more" if more > 0 else "")) from None
        rebuilds = candidate.detection != self.cfg.detection or candidate.lift != self.cfg.lift
        wait = self._last_remote_rebuild + DETECTION_CHANGE_MIN_S - time.monotonic()
        if rebuilds and wait > 0:
            raise CommandError(
                f"refused, nothing changed: the detection settings were changed less than "
                f"{DETECTION_CHANGE_MIN_S:.0f} s ago (each change restarts the detection "
                f"timers, so at most one change per {DETECTION_CHANGE_MIN_S:.0f} s); "
                f"send it again in {wait:.0f} s")
        files = self.overrides
        try:
            files.begin(dump_override(wanted), cmd_id)
        except OSError as exc:  # each write is atomic: the running override is as it was
            if exc.errno in DISK_ERRNOS:
                self.disk.failed("remote config file", exc, exc.filename or files.path)
            raise CommandError(f"the remote config file {files.path} cannot be written "
                               f"({errno_name(exc)}); nothing changed") from None
        old_cfg = self.cfg
        try:
            new_cfg = load_config(self.cfg.path, data_dir=self.data_dir)
            if new_cfg.override_issues:  # changed on disk meanwhile, or not what was written
                raise ConfigError(new_cfg.override_issues)
            if rebuilds:
                self._last_remote_rebuild = time.monotonic()
            self._apply(new_cfg, "config_set", cmd_id)
            healthy, why = await self._confirm_healthy(self.confirm_s)
        except Exception as exc:  # whatever fails at apply is rolled back, never kept
            log.exception("config_set %s failed at apply", cmd_id)
            first = (str(exc).splitlines() or [""])[0]
            healthy, why = False, f"{type(exc).__name__}: {first[:200]}"
        if not healthy:
            try:
                files.restore()
            except OSError as exc:  # the marker stays: the next start restores it
                self.disk.failed("remote config file", exc, files.path)
                self._apply_quietly(old_cfg, "rollback", cmd_id)
                raise CommandError(f"not healthy ({why}), and the previous remote config "
                                   f"cannot be written back ({errno_name(exc)}): it is "
                                   "restored at the next start") from None
            self._apply_quietly(old_cfg, "rollback", cmd_id)
            log.error("config_set %s rolled back: %s", cmd_id, why)
            raise CommandError(f"rolled back to the previous config: {why}")
        files.confirm()
        log.info("config_set %s applied: %s", cmd_id, ", ".join(keys))
        return {"applied": sorted(keys), "override": str(files.path)}

    def _apply_quietly(self, cfg: TerminalConfig, source: str, cmd_id: str | None) -> None:
        """Roll back to a config that ran before; a failure here is logged, not raised
        (the caller is already answering a failure)."""
        try:
            self._apply(cfg, source, cmd_id)
        except Exception:
            log.exception("rollback to the previous config failed")

    def _apply(self, new_cfg: TerminalConfig, source: str = "sighup",
               cmd_id: str | None = None) -> None:
        """Take a reloaded config into use (remote keys only can differ) and report what
        changed in detection and reporting (``detection_changed``). The new pipeline is
        built before anything is swapped: a failure leaves the running one in place."""
        old = self.cfg
        pipeline = None
        if self.pipeline is not None and (new_cfg.detection != old.detection
                                          or new_cfg.lift != old.lift):
            pipeline = self._make_pipeline(new_cfg, self.pipeline.baselines_state())
        self.cfg = new_cfg
        if self.uplink is not None:
            self.uplink.settings = new_cfg.uplink
        if pipeline is not None:
            assert self.pipeline is not None
            t = self.source_now()
            old_pipeline, self.pipeline = self.pipeline, pipeline
            self.emit(old_pipeline.finish(t))
            self.emit(self._seed(pipeline, old_pipeline, t))
        self._report_settings(source, cmd_id)

    @staticmethod
    def _seed(new: Pipeline, old: Pipeline, t: float) -> list[dict[str, Any]]:
        """Give a rebuilt pipeline the input levels the old one last saw, as a start
        reads every input: digital inputs are recorded only when they change, so without
        this a car already stopped with a passenger inside would look empty to it."""
        st, outs = old.state, []
        if st.di:
            outs += new.feed(t, "di", dict(st.di))
        if st.ctl is not None:
            outs += new.feed(t, "ctl", dict(st.ctl))
        if st.pwr is not None:
            outs += new.feed(t, "pwr", dict(st.pwr))
        return outs

    def _report_settings(self, source: str, cmd_id: str | None = None,
                         notes: list[str] | None = None) -> None:
        """Compare the settings in use with those last reported (kept across restarts in
        the data directory); a difference is a ``detection_changed`` event and the
        ``config.last_change`` of health."""
        now = tracked_settings(self.cfg)
        before = self._reported.get("settings")
        changes = setting_changes(before, now) if isinstance(before, dict) else []
        if changes or notes:
            weakens = any(c["weakens"] for c in changes)
            detail: dict[str, Any] = {"source": source, "cmd": cmd_id, "changes": changes,
                                      "weakens": weakens}
            if notes:
                detail["notes"] = notes
            self._change_seq += 1
            if self.pipeline is not None:
                self.emit([change_record(self.source_now(), f"{self.boot}-cfg{self._change_seq}",
                                         detail)])
            self._reported["last_change"] = {
                "ts": self.timebase.wall_ms(), "source": source, "cmd": cmd_id,
                "keys": [c["key"] for c in changes], "weakens": weakens}
            (log.warning if weakens else log.info)(
                "detection_changed (%s%s): %s", source, f" {cmd_id}" if cmd_id else "",
                ", ".join(f"{c['key']} {c['old']} -> {c['new']}" for c in changes) or
                "; ".join(notes or []))
        if changes or notes or not isinstance(before, dict):
            self._reported["settings"] = now
            try:
                atomic_write_bytes(self.data_dir / REPORTED_SETTINGS,
                                   json.dumps(self._reported, default=str).encode())
            except OSError as exc:  # reported now; at worst reported again next start
                log.warning("%s not saved: %s", REPORTED_SETTINGS, errno_name(exc))

    def _load_reported(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / REPORTED_SETTINGS).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _report_start(self) -> None:
        """At start: settings other than the last run's (the file edited meanwhile, a
        rollback or an override set aside) are a ``detection_changed`` of source
        ``start``, with what the rollback did in ``notes``."""
        notes = [f"remote config {r.action.replace('_', ' ')}"
                 + (f" (config_set {r.cmd})" if r.cmd else "") + f": {r.why}"
                 for r in self.recovered]
        notes += self._set_aside_bad_override(self.cfg)
        cmd = next((r.cmd for r in self.recovered if r.cmd), None)
        self._report_settings("start", cmd, notes)

    def config_health(self) -> dict[str, Any]:
        """``health.config``: the remote changes in force, the settings weaker than their
        defaults, and the last change reported."""
        out: dict[str, Any] = {
            "remote": {k: new for k, (_old, new) in sorted(self.cfg.override.items())},
            "weakened": weakened_settings(self.cfg)}
        last = self._reported.get("last_change")
        if isinstance(last, dict):
            out["last_change"] = last
        return out

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reload_task = task  # keep a reference until it is done

    async def reload(self) -> bool:
        """SIGHUP: read the config file and the remote override again; a file that does
        not validate is refused and the running config kept; an override that does not
        is set aside (reported) and the file applies alone. Timers, thresholds and
        intervals apply at once; anything else (broker, TLS, wiring, storage) at the next
        start, said in the log."""
        try:
            new = load_config(self.cfg.path, data_dir=self.data_dir)
        except ConfigError as exc:
            log.error("SIGHUP: %s is not valid, keeping the running config: %s",
                      self.cfg.path, "; ".join(str(i) for i in exc.issues[:5]))
            return False
        notes = self._set_aside_bad_override(new)
        later = [sec for sec in ("terminal", "inputs", "accel", "controller", "storage")
                 if new.raw.get(sec) != self.cfg.raw.get(sec)]
        live_uplink = {k.split(".", 1)[1] for k in remote_keys() if k.startswith("uplink.")}
        later += [f"uplink.{k}" for k, v in new.raw.get("uplink", {}).items()
                  if k not in live_uplink and v != self.cfg.raw.get("uplink", {}).get(k)]
        if later:
            log.warning("SIGHUP: changes to %s take effect at the next start",
                        ", ".join(later))
        try:
            self._apply(new, "sighup")
        except Exception:
            log.exception("SIGHUP: the new config cannot be applied; keeping the running one")
            return False
        if notes:
            self._report_settings("sighup", notes=notes)
        log.info("SIGHUP: config %s reloaded", self.cfg.path)
        return True

    def _set_aside_bad_override(self, cfg: TerminalConfig) -> list[str]:
        """An override the loader refused: moved aside (never blocks a start), logged;
        the notes for the ``detection_changed`` event."""
        if not cfg.override_issues:
            return []
        why = "; ".join(str(i) for i in cfg.override_issues[:3])
        log.error("remote config %s refused and set aside as %s: %s", self.overrides.path,
                  self.overrides.rejected.name, why)
        try:
            self.overrides.set_aside()
        except OSError as exc:
            log.error("remote config %s not set aside: %s", self.overrides.path, exc)
        return [f"remote config set aside: {why}"[:500]]

    async def _confirm_healthy(self, within: float) -> tuple[bool, str]:
        deadline = time.monotonic() + within
        why = "no broker session"
        while True:
            stalled = self.stalled()
            connected = self.uplink is not None and self.uplink.connected
            if connected and not stalled:
                return True, ""
            why = f"loops stalled: {', '.join(stalled)}" if stalled else "no broker session"
            if time.monotonic() >= deadline:
                return False, why
            await asyncio.sleep(0.2)
