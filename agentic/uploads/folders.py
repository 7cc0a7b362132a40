"""The two data folders uploads own, one subfolder per session in each:

    data/uploads/session_<id>/<name>            the files as uploaded
    data/extracted/session_<id>/<sha256>.txt    the text read from them

A session's subfolders go with the session; a text goes with the last file that has it.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from agentic.sessions.models import SessionRecord

SESSION_PREFIX = "session_"


class UploadFolders:
    def __init__(self, uploads_dir: Path, text_dir: Path) -> None:
        self.uploads_dir = uploads_dir
        self.text_dir = text_dir

    def files(self, session_id: str) -> Path:
        return self.uploads_dir / f"{SESSION_PREFIX}{session_id}"

    def texts(self, session_id: str) -> Path:
        return self.text_dir / f"{SESSION_PREFIX}{session_id}"

    def text(self, session_id: str, sha256: str) -> Path:
        return self.texts(session_id) / f"{sha256}.txt"

    def pending_text(self, session_id: str) -> Path:
        """Where a worker writes a text before it is known to be complete."""
        return self.texts(session_id) / f".pending-{uuid.uuid4().hex}"

    def remove_session(self, session_id: str) -> None:
        shutil.rmtree(self.files(session_id), ignore_errors=True)
        shutil.rmtree(self.texts(session_id), ignore_errors=True)

    def sweep(self, records: list[SessionRecord]) -> None:
        """At start: remove what no live session owns (left by a crash mid-delete), after
        moving texts from the old shared layout (data/extracted/<sha256>.txt) to their sessions."""
        for record in records:
            self._adopt_shared_texts(record)
        live = {f"{SESSION_PREFIX}{record.session_id}" for record in records}
        for root in (self.uploads_dir, self.text_dir):
            for entry in (root.iterdir() if root.is_dir() else ()):
                if entry.name in live:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _adopt_shared_texts(self, record: SessionRecord) -> None:
        for file in record.files.values():
            shared, own = self.text_dir / f"{file.sha256}.txt", self.text(record.session_id, file.sha256)
            if shared.is_file() and not own.exists():
                own.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shared, own)
