"""Text extraction, run in a separate process with page, size and time caps.

Functions here run in a worker process: a hostile document can use up its own CPU and
memory, never the server's event loop, and is killed when its time is up.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

log = logging.getLogger("agentic.uploads")


class ExtractionFailed(Exception):
    pass


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


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Runs in the worker: end it when the server is gone (a kill -9 gives the pool no chance to)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Extractor:
    """A one-process pool; a job past its time limit kills the worker and a fresh one starts."""

    def __init__(self, timeout_s: float, max_chars: int, max_pages: int) -> None:
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.max_pages = max_pages
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: forking a process that runs the inference thread is unsafe
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    async def extract(self, path: Path, family: str) -> str:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor(), extract_text, str(path), family, self.max_chars, self.max_pages)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:
            self._kill()
            raise ExtractionFailed(f"text extraction took longer than {self.timeout_s:g} s") from None
        except Exception as exc:  # the worker's own error, e.g. a malformed PDF
            if "BrokenProcessPool" in type(exc).__name__:
                self._kill()
            raise ExtractionFailed(f"could not read the file: {type(exc).__name__}: {exc}"[:300]) from None

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
