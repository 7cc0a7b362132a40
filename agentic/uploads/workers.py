"""Extraction jobs, each in its own worker process, at most one at a time per session.

A process per job means killing one (time or memory used up) touches no other job: the
other sessions' uploads go on as if nothing happened. Workers are forked from a fork server
that has the document libraries loaded, so a job starts in milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import AsyncIterator

from agentic.config import UploadSettings
from agentic.uploads.archives import ArchiveCaps
from agentic.uploads.extract import Job, Outcome, peak_rss, run_job

# Not fork: forking a process that runs the inference thread is unsafe. The fork server is
# spawned clean, once, and forks each worker from its single thread.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["agentic.uploads.extract", "docx", "openpyxl", "pptx", "pypdf"])


class ExtractionFailed(Exception):
    """The file's text could not be read; the file is kept and marked unreadable."""

    def __init__(self, message: str, peak_rss_bytes: int = 0) -> None:
        super().__init__(message)
        self.peak_rss_bytes = peak_rss_bytes


class ExtractionRefused(ExtractionFailed):
    """The file is a zip bomb: refused, not stored."""


@dataclass(frozen=True)
class Extraction:
    chars: int
    peak_rss_bytes: int  # the worker's resident-memory high-water mark


@dataclass
class _SessionLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Extractor:
    def __init__(self, settings: UploadSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.extract_workers)
        self._sessions: dict[str, _SessionLock] = {}
        self._running: set[BaseProcess] = set()

    async def extract(self, owner: str, path: Path, family: str, out_path: Path) -> Extraction:
        """Write the text of `path` to `out_path`, in a worker, after `owner`'s earlier jobs."""
        job = Job(str(path), family, str(out_path), self.settings.max_extracted_chars, self.settings.max_pdf_pages,
                  self.settings.extract_memory_bytes, ArchiveCaps(self.settings.max_unzipped_bytes, self.settings.max_zip_ratio))
        async with self._one_per_session(owner), self._slots:
            outcome = await self._run(job)
        if outcome.kind == "refused":
            raise ExtractionRefused(outcome.detail, outcome.peak_rss_bytes)
        if outcome.kind != "ok":
            raise ExtractionFailed(outcome.detail, outcome.peak_rss_bytes)
        return Extraction(outcome.chars, outcome.peak_rss_bytes)

    @contextlib.asynccontextmanager
    async def _one_per_session(self, owner: str) -> AsyncIterator[None]:
        entry = self._sessions.setdefault(owner, _SessionLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._sessions[owner]

    async def _run(self, job: Job) -> Outcome:
        receiver, sender = _CONTEXT.Pipe(duplex=False)
        process = _CONTEXT.Process(target=run_job, args=(job, sender), name="agentic-extract", daemon=True)
        try:
            await _start(process)
            sender.close()
            self._running.add(process)
            return await self._outcome(process, receiver)
        finally:
            self._running.discard(process)
            if process.pid is not None:
                if process.exitcode is None:
                    process.kill()
                    await _ended(process)
                process.join()
            process.close()
            receiver.close()
            sender.close()

    async def _outcome(self, process: BaseProcess, receiver: Connection) -> Outcome:
        timeout = self.settings.extract_timeout_s
        try:
            await asyncio.wait_for(_ended(process), timeout)  # counted from the job's start
        except asyncio.TimeoutError:
            return Outcome("failed", f"text extraction took longer than {timeout:g} s", 0, peak_rss(process.pid))
        with contextlib.suppress(EOFError):  # EOF: it died before it could answer
            if receiver.poll():
                return receiver.recv()
        return Outcome("failed", f"the extraction worker ended without an answer ({_exit_reason(process)})", 0, 0)

    def close(self) -> None:
        for process in list(self._running):
            process.kill()


async def _start(process: BaseProcess) -> None:
    """Start the process off the event loop; a cancelled caller still waits for the start,
    so that it can end the process it started."""
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))  # the first waits for the fork server
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        await starting
        raise


async def _ended(process: BaseProcess) -> None:
    """Wait, without blocking the event loop, until the process has ended."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(process.sentinel, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(process.sentinel)


def _exit_reason(process: BaseProcess) -> str:
    process.join()
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
