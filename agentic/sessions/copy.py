"""`python -m agentic store copy`: an existing installation's sessions into PostgreSQL.

Each session moves in one transaction with its messages and file records, ids and times as
they were; a session the target has already is left alone, so running the copy again (after an
interruption, or to pick up sessions made since) copies nothing twice. The upload folders stay
where they are: the servers of the cluster share DATA_DIR.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentic.sessions.backend import Store
from agentic.sessions.pg_store import PostgresStore


@dataclass
class CopyReport:
    copied: int = 0
    already_there: int = 0
    messages: int = 0
    files: int = 0

    def __str__(self) -> str:
        return (f"copied {self.copied} sessions ({self.messages} messages, {self.files} file records); "
                f"{self.already_there} were there already")


async def copy_store(source: Store, target: PostgresStore) -> CopyReport:
    """Both stores open; the target gets every session of the source it does not have."""
    report = CopyReport()
    for record in list(source.records()):
        messages = await source.messages(record.session_id)
        if await target.import_session(record, messages):
            report.copied += 1
            report.messages += len(messages)
            report.files += len(record.files)
        else:
            report.already_there += 1
    await target.import_counters(source.stats)
    return report
