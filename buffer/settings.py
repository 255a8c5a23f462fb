"""Settings of the terminal's storage: where data lives and how much the outbox may hold."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StorageSettings:
    """Data directory and bounds of the durable outbox and the event journal."""

    data_dir: str = field(
        default="/var/lib/liftwatch",
        metadata={"doc": "Directory for the outbox, the event journal and learned baselines."},
    )
    outbox_max_mb: float = field(
        default=64.0,
        metadata={"doc": "Outbox size bound; when full, the oldest trips/health go first, then "
                  "stats, then non-alarm events; alarms are never dropped.", "unit": "MB",
                  "gt": 0, "max": 1_000_000},
    )
    journal_max_events: int = field(
        default=10000, metadata={"doc": "Events kept in the technicians' event journal.",
                                 "min": 100, "max": 10_000_000},
    )
