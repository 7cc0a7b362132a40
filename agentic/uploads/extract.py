"""Text extraction: runs in a worker process (see workers.py), one process per job.

A hostile document can use up its worker's CPU and memory, never the server's: the worker
has an address-space limit, and Office files are checked for zip bombs before a library
opens them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import select
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from agentic.uploads.archives import ArchiveCaps, ArchiveRefused, check_archive

ARCHIVE_FAMILIES = frozenset({"xlsx", "pptx", "docx"})


@dataclass(frozen=True)
class Job:
    path: str
    family: str
    out_path: str
    max_chars: int
    max_pages: int
    memory_bytes: int
    caps: ArchiveCaps


@dataclass(frozen=True)
class Outcome:
    """What a worker reports: "ok" (text written to out_path), "refused" or "failed"."""

    kind: str
    detail: str
    chars: int
    peak_rss_bytes: int


def run_job(job: Job, results: Connection) -> None:
    """The worker's entry point: read one file, write its text, report how it went."""
    exit_with_server(results)
    _limit_address_space(job.memory_bytes)
    results.send(_outcome(job))
    results.close()


def _limit_address_space(limit: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:  # a limit already set around the server is never raised
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _outcome(job: Job) -> Outcome:
    try:
        if job.family in ARCHIVE_FAMILIES:
            check_archive(Path(job.path), job.caps)
        text = extract_text(job.path, job.family, job.max_chars, job.max_pages)
        text = text if text.strip() else ""
        with open(job.out_path, "w", encoding="utf-8", errors="replace") as out:
            out.write(text)
    except ArchiveRefused as exc:
        return Outcome("refused", str(exc), 0, peak_rss(os.getpid()))
    except Exception as exc:  # the library's own error, e.g. a malformed PDF
        return Outcome("failed", _failure(exc, job.memory_bytes), 0, peak_rss(os.getpid()))
    return Outcome("ok", "", len(text), peak_rss(os.getpid()))


def _failure(exc: Exception, memory_bytes: int) -> str:
    # Libraries report a failed allocation in their own words (lxml: "unknown error"), so a
    # failure near the address-space limit is taken for what it most likely is.
    if isinstance(exc, MemoryError) or _status_bytes(os.getpid(), "VmPeak") > memory_bytes * 3 // 4:
        return f"reading it needs more than the {memory_bytes // 2**20} MiB of memory a worker may use"
    return f"could not read the file: {type(exc).__name__}: {exc}"[:300]


def peak_rss(pid: int) -> int:
    """The process's resident-memory high-water mark (VmHWM) in bytes, 0 when it is gone."""
    return _status_bytes(pid, "VmHWM")


def _status_bytes(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def extract_text(path: str, family: str, max_chars: int, max_pages: int) -> str:
    """Runs in the worker: the text of a file, capped at max_chars."""
    extractor = {"text": _text, "pdf": _pdf, "xlsx": _xlsx, "pptx": _pptx, "docx": _docx}[family]
    return extractor(Path(path), max_chars, max_pages)[:max_chars]


def _text(path: Path, max_chars: int, max_pages: int) -> str:
    with open(path, "rb") as f:
        raw = f.read(max_chars * 4)
    text = raw.decode("utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            return json.dumps(json.loads(text), indent=1, ensure_ascii=False)
        except ValueError:
            return text
    if path.suffix.lower() == ".csv":
        rows = csv.reader(io.StringIO(text))
        return "\n".join(" | ".join(row) for row in rows)
    return text


def _pdf(path: Path, max_chars: int, max_pages: int) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    parts: list[str] = []
    total = 0
    for number, page in enumerate(reader.pages[:max_pages], start=1):
        text = page.extract_text() or ""
        parts.append(f"[page {number}]\n{text}")
        total += len(text)
        if total >= max_chars:
            break
    return "\n\n".join(parts)


def _xlsx(path: Path, max_chars: int, max_pages: int) -> str:
    from openpyxl import load_workbook

    workbook = load_workbook(str(path), read_only=True, data_only=True)
    parts: list[str] = []
    total = 0
    for sheet in workbook.worksheets[:max_pages]:
        parts.append(f"[sheet {sheet.title}]")
        for row in sheet.iter_rows(values_only=True):
            line = " | ".join("" if v is None else str(v) for v in row).rstrip(" |")
            if line:
                parts.append(line)
                total += len(line)
            if total >= max_chars:
                return "\n".join(parts)
    workbook.close()
    return "\n".join(parts)


def _pptx(path: Path, max_chars: int, max_pages: int) -> str:
    from pptx import Presentation

    deck = Presentation(str(path))
    parts: list[str] = []
    for number, slide in enumerate(list(deck.slides)[:max_pages], start=1):
        texts = [shape.text_frame.text for shape in slide.shapes if shape.has_text_frame and shape.text_frame.text.strip()]
        parts.append(f"[slide {number}]\n" + "\n".join(texts))
    return "\n\n".join(parts)


def _docx(path: Path, max_chars: int, max_pages: int) -> str:
    from docx import Document

    return "\n".join(p.text for p in Document(str(path)).paragraphs if p.text.strip())


def exit_with_server(results: Connection) -> None:
    """End the worker when the server is gone, kill -9 included: the server holds the reading
    end of the result pipe, and the kernel flags the writing end once no reader is left.
    (The worker's parent is the fork server, which outlives the server while a worker runs.)"""
    def watch() -> None:
        watcher = select.poll()
        watcher.register(results.fileno(), select.POLLERR | select.POLLHUP)
        watcher.poll()
        os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()
