"""Receives uploads into data/uploads/session_<uuid>/, streamed to disk, checked, extracted.

Uploads own their files and the text read from them (folders.py): both go with the file,
with the session, and on expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterable, Awaitable, Callable, Protocol

import aiofiles
import aiofiles.os

from agentic.config import UploadSettings
from agentic.errors import Invalid, NotFound, SessionGone, TooLarge, Unsupported
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.models import FileRecord, SessionRecord, now
from agentic.uploads.folders import UploadFolders
from agentic.uploads.names import inside, sanitize_filename, unique_name
from agentic.uploads.passages import FileContext, render, sources_json
from agentic.uploads.types import FileKind, classify
from agentic.uploads.workers import ExtractionFailed, ExtractionRefused, Extractor

log = logging.getLogger("agentic.uploads")

CHUNK = 64 * 1024
SNIFF_BYTES = 8192


class IncomingFile(Protocol):
    """One file of an upload as it arrives (the web layer's multipart part)."""

    @property
    def filename(self) -> str | None: ...

    async def read_chunk(self, size: int) -> bytes: ...


class UploadService:
    def __init__(self, settings: UploadSettings, sessions: SessionManager, uploads_dir: Path, text_dir: Path) -> None:
        self.settings = settings
        self.sessions = sessions
        self.folders = UploadFolders(uploads_dir, text_dir)
        self.extractor = Extractor(settings)
        self.on_change: Callable[[SessionRecord], Awaitable[None]] | None = None
        self._arriving: dict[str, dict[str, int]] = {}  # session id -> files being stored: name -> bytes so far

    async def start(self) -> None:
        """Before the server takes requests: sweep what no live session owns."""
        await asyncio.to_thread(self.folders.sweep, self.sessions.records())

    async def session_removed(self, session_id: str) -> None:
        await asyncio.to_thread(self.folders.remove_session, session_id)

    def close(self) -> None:
        self.extractor.close()

    # -- receiving ---------------------------------------------------------------
    async def receive(self, record: SessionRecord, parts: AsyncIterable[IncomingFile]) -> list[FileRecord]:
        folder = self.folders.files(record.session_id)
        await aiofiles.os.makedirs(folder, exist_ok=True)
        received: list[FileRecord] = []
        try:
            async for part in parts:
                if part.filename is None:
                    raise Invalid("invalid_field", "every part of the upload must be a file")
                if len(received) >= self.settings.max_files_per_upload:
                    raise TooLarge("too_many_files", f"at most {self.settings.max_files_per_upload} files per upload")
                received.append(await self._receive_part(record, part, folder))
        except BaseException:
            for file in received:  # an upload is all or nothing
                await self._remove(record, file.name)
            raise
        if not received:
            raise Invalid("invalid_field", "no file in the upload")
        await self._changed(record)
        return received

    async def _receive_part(self, record: SessionRecord, part: IncomingFile, folder: Path) -> FileRecord:
        """One file, under a name of its own in the session (`name (2).ext` where the name is
        taken, also by an upload running now) and within the session's limits counting the
        files other uploads are storing."""
        name = sanitize_filename(part.filename)
        head = await part.read_chunk(SNIFF_BYTES)
        kind = classify(name, head)
        if kind is None:
            raise Unsupported("file_type_refused", f"{name!r}: this file type is not accepted (text, source code, csv, json, pdf, xlsx, pptx, docx are)")
        # From the count to the reservation without an await: uploads running at once see each other.
        if len(record.files) + len(self._arriving.get(record.session_id, ())) >= self.settings.max_files_per_session:
            raise TooLarge("too_many_files", f"a session holds at most {self.settings.max_files_per_session} files")
        arriving = self._arriving.setdefault(record.session_id, {})
        final = unique_name(name, set(record.files) | set(arriving))
        arriving[final] = 0  # another upload of the same name now picks another
        tmp = folder / f".incoming-{uuid.uuid4().hex}{Path(name).suffix}"  # libraries go by the extension
        try:
            file = await self._store(record, part, head, kind, tmp, name, final)
        except BaseException:
            self._release(record.session_id, final)  # before the unlink (an await): its bytes stop counting
            await asyncio.to_thread(tmp.unlink, True)
            raise
        self._release(record.session_id, final)
        return file

    def _release(self, session_id: str, name: str) -> None:
        arriving = self._arriving[session_id]
        del arriving[name]
        if not arriving:
            del self._arriving[session_id]

    async def _store(self, record: SessionRecord, part: IncomingFile, head: bytes, kind: FileKind, tmp: Path, name: str, final: str) -> FileRecord:
        size, digest = await self._write(record, part, head, tmp, name, final)
        file = FileRecord(final, size, kind.content_type, now(), sha256=digest)
        await self._extract(record.session_id, file, tmp, kind)
        try:
            await aiofiles.os.replace(tmp, inside(tmp.parent, final))
            await self.sessions.add_file(record, file)
        except (FileNotFoundError, SessionGone) as exc:  # the session was deleted meanwhile, its folders with it
            if isinstance(exc, FileNotFoundError) and self.sessions.find(record.session_id) is not None:
                raise
            # Its removal may have run before this upload's text or file landed: remove them again.
            await asyncio.to_thread(self.folders.remove_session, record.session_id)
            raise SessionGone("the session was deleted during the upload") from None
        log.info("file stored: %s (%d bytes, %d chars)", final, size, file.extracted_chars)
        return file

    async def _write(self, record: SessionRecord, part: IncomingFile, head: bytes, tmp: Path, name: str, final: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        arriving = self._arriving[record.session_id]
        async with aiofiles.open(tmp, "wb") as out:
            try:
                chunk = head
                while chunk:
                    size += len(chunk)
                    arriving[final] = size
                    self._check_room(record, name, size)
                    digest.update(chunk)
                    await out.write(chunk)
                    chunk = await part.read_chunk(CHUNK)
            except BaseException:
                arriving[final] = 0  # refused or dropped: it stops counting now, before the file closes (an await)
                raise
        return size, digest.hexdigest()

    def _check_room(self, record: SessionRecord, name: str, size: int) -> None:
        """A file of `size` bytes so far fits, beside the session's files and those being stored."""
        if size > self.settings.max_file_bytes:
            raise TooLarge("file_too_large", f"{name!r} is larger than {self.settings.max_file_bytes} bytes")
        held = sum(f.size for f in record.files.values()) + sum(self._arriving.get(record.session_id, {}).values())
        if held > self.settings.max_session_bytes:
            raise TooLarge("file_too_large", f"{name!r}: the session's upload space is full ({self.settings.max_session_bytes} bytes in all)")

    async def _extract(self, session_id: str, file: FileRecord, path: Path, kind: FileKind) -> None:
        """Text of the file; the same content uploaded again to the session is read once."""
        if await aiofiles.os.path.exists(self.folders.text(session_id, file.sha256)):
            file.extracted_chars = len(await self._read_text(session_id, file))
        else:
            try:
                file.extracted_chars = await self._extract_new(session_id, file, path, kind)
            except ExtractionRefused as exc:
                raise TooLarge("archive_too_large", f"{file.name!r} was refused as a zip bomb: {exc}") from None
            except ExtractionFailed as exc:
                file.status, file.note = "unreadable", str(exc)
                return
        if not file.extracted_chars:
            file.note = "no text found in this file"

    async def _extract_new(self, session_id: str, file: FileRecord, path: Path, kind: FileKind) -> int:
        pending = self.folders.pending_text(session_id)
        await aiofiles.os.makedirs(pending.parent, exist_ok=True)
        started = time.monotonic()
        try:
            extraction = await self.extractor.extract(session_id, path, kind.family, pending)
            await aiofiles.os.replace(pending, self.folders.text(session_id, file.sha256))
        except ExtractionFailed as exc:
            _log_extraction(file, time.monotonic() - started, exc.peak_rss_bytes, str(exc))
            raise
        finally:
            await asyncio.to_thread(pending.unlink, True)
        _log_extraction(file, time.monotonic() - started, extraction.peak_rss_bytes, "done")
        return extraction.chars

    async def _read_text(self, session_id: str, file: FileRecord) -> str:
        try:
            async with aiofiles.open(self.folders.text(session_id, file.sha256), encoding="utf-8") as f:
                return await f.read()
        except FileNotFoundError:
            return ""

    # -- reading and removing -----------------------------------------------------------
    def path_of(self, record: SessionRecord, name: str) -> tuple[FileRecord, Path]:
        file = record.files.get(name)
        if file is None:
            raise NotFound("file_not_found", "no such file in this session")
        return file, inside(self.folders.files(record.session_id), file.name)

    async def delete(self, record: SessionRecord, name: str) -> None:
        self.path_of(record, name)
        await self._remove(record, name)
        await self._changed(record)

    async def _remove(self, record: SessionRecord, name: str) -> None:
        path = inside(self.folders.files(record.session_id), name)
        file = record.files.get(name)
        await self.sessions.remove_file(record, name)
        await asyncio.to_thread(path.unlink, True)
        if file is not None and all(other.sha256 != file.sha256 for other in record.files.values()):
            await asyncio.to_thread(self.folders.text(record.session_id, file.sha256).unlink, True)

    async def _changed(self, record: SessionRecord) -> None:
        if self.on_change is not None:
            await self.on_change(record)

    # -- the assistant's view -----------------------------------------------------------------
    async def file_context(self, record: SessionRecord) -> FileContext | None:
        """The text of the session's readable files, for prompts; None when there is none."""
        texts = {f.name: await self._read_text(record.session_id, f) for f in record.files.values() if f.extracted_chars}
        texts = {name: text for name, text in texts.items() if text.strip()}
        return FileContext(texts, self.settings.context_chars) if texts else None

    async def context_for(self, record: SessionRecord, question: str) -> tuple[str, list[dict[str, Any]]]:
        """The files' text that a first question gets, within budget, and which parts it is."""
        files = await self.file_context(record)
        if files is None:
            return "", []
        passages = await asyncio.to_thread(files.choose, question)
        return render(passages), sources_json(passages)


def _log_extraction(file: FileRecord, seconds: float, peak_rss_bytes: int, result: str) -> None:
    log.info("text extraction of %s: %s (%.2f s, worker peak RSS %d MiB)", file.name, result, seconds, peak_rss_bytes // 2**20,
             extra={"worker_peak_rss_bytes": peak_rss_bytes, "extract_seconds": seconds})
