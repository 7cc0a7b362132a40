"""Receives uploads into data/uploads/session_<uuid>/, streamed to disk, checked, extracted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiofiles
import aiofiles.os
from aiohttp import BodyPartReader, MultipartReader

from agentic.api.errors import ApiError
from agentic.config import UploadSettings
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.models import FileRecord, SessionRecord, now
from agentic.uploads.extract import ExtractionFailed, Extractor
from agentic.uploads.names import inside, sanitize_filename, unique_name
from agentic.uploads.passages import best_passages
from agentic.uploads.types import FileKind, classify

log = logging.getLogger("agentic.uploads")

CHUNK = 64 * 1024
SNIFF_BYTES = 8192


class UploadService:
    def __init__(self, settings: UploadSettings, sessions: SessionManager, text_dir: Path) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = sessions.store
        self.text_dir = text_dir
        self.extractor = Extractor(settings.extract_timeout_s, settings.max_extracted_chars, settings.max_pdf_pages)
        self.on_change: Callable[[SessionRecord], Awaitable[None]] | None = None

    def close(self) -> None:
        self.extractor.close()

    # -- receiving ---------------------------------------------------------------
    async def receive(self, record: SessionRecord, reader: MultipartReader) -> list[FileRecord]:
        folder = self.sessions.upload_dir(record.session_id)
        await aiofiles.os.makedirs(folder, exist_ok=True)
        received: list[FileRecord] = []
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.filename is None:
                    raise ApiError(422, "invalid_field", "every part of the upload must be a file")
                if len(received) >= self.settings.max_files_per_upload:
                    raise ApiError(413, "too_many_files", f"at most {self.settings.max_files_per_upload} files per upload")
                if len(record.files) + len(received) >= self.settings.max_files_per_session:
                    raise ApiError(413, "too_many_files", f"a session holds at most {self.settings.max_files_per_session} files")
                received.append(await self._receive_part(record, part, folder, received))
        except BaseException:
            for file in received:  # an upload is all or nothing
                await self._remove(record, file.name)
            raise
        if not received:
            raise ApiError(422, "invalid_field", "no file in the upload")
        await self._changed(record)
        return received

    async def _receive_part(self, record: SessionRecord, part: BodyPartReader, folder: Path, received: list[FileRecord]) -> FileRecord:
        name = sanitize_filename(part.filename)
        head = await part.read_chunk(SNIFF_BYTES)
        kind = classify(name, head)
        if kind is None:
            raise ApiError(415, "file_type_refused", f"{name!r}: this file type is not accepted (text, source code, csv, json, pdf, xlsx, pptx, docx are)")
        room = self.settings.max_session_bytes - sum(f.size for f in record.files.values()) - sum(f.size for f in received)
        limit = min(self.settings.max_file_bytes, room)
        tmp = folder / f".incoming-{uuid.uuid4().hex}"
        size, digest = await self._write(part, head, tmp, limit, name)
        final = unique_name(name, set(record.files) | {f.name for f in received})
        path = inside(folder, final)
        await aiofiles.os.replace(tmp, path)
        file = FileRecord(final, size, kind.content_type, now(), sha256=digest)
        await self._extract(file, path, kind)
        await self.store.add_file(record, file)
        log.info("file stored: %s (%d bytes, %d chars)", final, size, file.extracted_chars)
        return file

    async def _write(self, part: BodyPartReader, head: bytes, tmp: Path, limit: int, name: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        try:
            async with aiofiles.open(tmp, "wb") as out:
                chunk = head
                while chunk:
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, "file_too_large", self._too_large_message(name, limit))
                    digest.update(chunk)
                    await out.write(chunk)
                    chunk = await part.read_chunk(CHUNK)
        except BaseException:
            await asyncio.to_thread(tmp.unlink, True)
            raise
        return size, digest.hexdigest()

    def _too_large_message(self, name: str, limit: int) -> str:
        if limit < self.settings.max_file_bytes:
            return f"{name!r}: the session's upload space is full ({self.settings.max_session_bytes} bytes in all)"
        return f"{name!r} is larger than {self.settings.max_file_bytes} bytes"

    async def _extract(self, file: FileRecord, path: Path, kind: FileKind) -> None:
        """Text of the file, cached by content hash so the same document is read once."""
        cached = self.text_dir / f"{file.sha256}.txt"
        if await aiofiles.os.path.exists(cached):
            text = await self._read_text(file)
        else:
            try:
                text = await self.extractor.extract(path, kind.family)
            except ExtractionFailed as exc:
                file.status, file.note = "unreadable", str(exc)
                return
            await aiofiles.os.makedirs(self.text_dir, exist_ok=True)
            async with aiofiles.open(cached, "w", encoding="utf-8") as out:
                await out.write(text)
        file.extracted_chars = len(text)
        if not text.strip():
            file.note = "no text found in this file"

    async def _read_text(self, file: FileRecord) -> str:
        try:
            async with aiofiles.open(self.text_dir / f"{file.sha256}.txt", encoding="utf-8") as f:
                return await f.read()
        except FileNotFoundError:
            return ""

    # -- reading and removing -----------------------------------------------------------
    def path_of(self, record: SessionRecord, name: str) -> tuple[FileRecord, Path]:
        file = record.files.get(name)
        if file is None:
            raise ApiError(404, "file_not_found", "no such file in this session")
        return file, inside(self.sessions.upload_dir(record.session_id), file.name)

    async def delete(self, record: SessionRecord, name: str) -> None:
        self.path_of(record, name)
        await self._remove(record, name)
        await self._changed(record)

    async def _remove(self, record: SessionRecord, name: str) -> None:
        path = inside(self.sessions.upload_dir(record.session_id), name)
        await self.store.remove_file(record, name)
        await asyncio.to_thread(path.unlink, True)

    async def _changed(self, record: SessionRecord) -> None:
        if self.on_change is not None:
            await self.on_change(record)

    # -- the assistant's view -----------------------------------------------------------------
    async def context_for(self, record: SessionRecord, question: str) -> tuple[str, list[dict[str, Any]]]:
        """Text of the session's files for the prompt, within budget, and which parts were used."""
        texts = {f.name: await self._read_text(f) for f in record.files.values() if f.extracted_chars}
        texts = {name: text for name, text in texts.items() if text.strip()}
        if not texts:
            return "", []
        budget = self.settings.context_chars
        if sum(len(t) for t in texts.values()) <= budget:
            sections = [f"--- file: {name} ---\n{text}" for name, text in texts.items()]
            sources = [{"name": name, "passages": "all"} for name in texts]
        else:
            passages = await asyncio.to_thread(best_passages, texts, question, budget)
            sections = [f"--- file: {p.file} (passage {p.index}) ---\n{p.text}" for p in passages]
            sources = _group_sources(passages)
        intro = "The user shared these files. Answer from them when the question is about them."
        return intro + "\n\n" + "\n\n".join(sections), sources


def _group_sources(passages: list) -> list[dict[str, Any]]:
    grouped: dict[str, list[int]] = {}
    for p in passages:
        grouped.setdefault(p.file, []).append(p.index)
    return [{"name": name, "passages": indexes} for name, indexes in grouped.items()]
