"""Extraction workers (real processes): time and memory limits, one job per session, isolation
between sessions, and passage selection."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from agentic.config import UploadSettings
from agentic.uploads.passages import best_passages, split_passages
from agentic.uploads.types import classify
from agentic.uploads.workers import ExtractionFailed, Extractor
from tests.uploads.bombs import MIB, docx_bomb
from tests.uploads.documents import docx_bytes


def stuck_file(tmp_path, name="stuck.txt"):
    """A named pipe nobody writes to: a worker reading it waits until it is killed."""
    path = tmp_path / name
    os.mkfifo(path)
    return path


def text_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    return path


async def test_a_job_past_its_time_is_killed_and_the_next_one_runs(tmp_path):
    extractor = Extractor(UploadSettings(extract_timeout_s=0.5))
    with pytest.raises(ExtractionFailed, match="longer than 0.5 s"):
        await extractor.extract("a", stuck_file(tmp_path), "text", tmp_path / "out1")
    result = await extractor.extract("a", text_file(tmp_path, "t.csv", "a,b\n" * 10), "text", tmp_path / "out2")
    assert "a | b" in (tmp_path / "out2").read_text() and result.chars == len((tmp_path / "out2").read_text())


async def test_the_time_limit_counts_from_the_job_start_not_its_submission(tmp_path):
    """One worker: B's job waits the whole of A's time limit in the queue, then still runs."""
    extractor = Extractor(UploadSettings(extract_timeout_s=1.0, extract_workers=1))
    stuck = asyncio.create_task(extractor.extract("session-a", stuck_file(tmp_path), "text", tmp_path / "a.out"))
    await asyncio.sleep(0.1)
    queued = asyncio.create_task(extractor.extract("session-b", text_file(tmp_path, "b.txt", "hello from b"), "text", tmp_path / "b.out"))
    with pytest.raises(ExtractionFailed, match="longer than"):
        await stuck
    assert (await queued).chars == len("hello from b")
    assert (tmp_path / "b.out").read_text() == "hello from b"


async def test_one_job_per_session_at_a_time(tmp_path):
    extractor = Extractor(UploadSettings(extract_timeout_s=1.0, extract_workers=2))
    finished: list[str] = []

    async def job(owner: str, label: str, path) -> None:
        try:
            await extractor.extract(owner, path, "text", tmp_path / f"{label}.out")
        except ExtractionFailed:
            label += " killed"
        finished.append(label)

    await asyncio.gather(
        job("session-a", "a stuck", stuck_file(tmp_path)),
        job("session-a", "a second", text_file(tmp_path, "a.txt", "a")),
        job("session-b", "b", text_file(tmp_path, "b.txt", "b")),
    )
    # b had a free worker at once; a's second job waited for a's first, though a worker was free
    assert finished == ["b", "a stuck killed", "a second"]


async def test_the_address_space_limit_stops_a_document_that_needs_too_much_memory(tmp_path):
    limit = 384 * MIB
    extractor = Extractor(UploadSettings(extract_memory_bytes=limit, max_unzipped_bytes=1 << 40, max_zip_ratio=1 << 20))
    (tmp_path / "small.docx").write_bytes(docx_bytes(["fits in memory"]))
    assert (await extractor.extract("a", tmp_path / "small.docx", "docx", tmp_path / "small.out")).chars > 0
    (tmp_path / "huge.docx").write_bytes(docx_bomb(30 * MIB))  # caps lifted: only the memory limit is left
    with pytest.raises(ExtractionFailed, match="needs more than the 384 MiB of memory a worker may use") as failure:
        await extractor.extract("a", tmp_path / "huge.docx", "docx", tmp_path / "huge.out")
    assert 0 < failure.value.peak_rss_bytes < limit


async def test_extraction_is_capped(tmp_path):
    extractor = Extractor(UploadSettings(max_extracted_chars=100))
    await extractor.extract("a", text_file(tmp_path, "long.txt", "y" * 10_000), "text", tmp_path / "out")
    assert (tmp_path / "out").read_text() == "y" * 100


SERVER_WITH_A_WORKER = """
import asyncio, pathlib, sys
from agentic.config import UploadSettings
from agentic.uploads.workers import Extractor
if __name__ == "__main__":
    extractor = Extractor(UploadSettings(extract_timeout_s=600))
    asyncio.run(extractor.extract("a", pathlib.Path(sys.argv[1]), "text", pathlib.Path(sys.argv[1] + ".out")))
"""


def test_the_workers_end_when_the_server_is_killed(tmp_path):
    stuck = stuck_file(tmp_path)
    script = tmp_path / "server.py"
    script.write_text(SERVER_WITH_A_WORKER)
    server = subprocess.Popen([sys.executable, str(script), str(stuck)], cwd=os.getcwd())
    writer = _open_when_read(stuck, server)  # the worker has the file open: it is running
    helpers = _descendants(server.pid)
    assert len(helpers) >= 2  # the fork server and the worker
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_alive, helpers)):
        time.sleep(0.1)
    os.close(writer)
    assert not any(map(_alive, helpers))


def _open_when_read(fifo, server) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.1)
    raise AssertionError("no worker opened the file")


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_passages_most_relevant_first_within_budget():
    filler = "\n\n".join(f"Paragraph {i} talks about weather and clouds." * 5 for i in range(30))
    texts = {"a.txt": filler + "\n\nThe launch code is stored under the BLUE FLAMINGO vault.\n\n" + filler}
    chosen = best_passages(texts, "where is the flamingo vault?", budget_chars=700)
    assert sum(len(p.text) for p in chosen) <= 700
    assert any("FLAMINGO" in p.text for p in chosen)


def test_split_passages_cover_the_text():
    text = "\n\n".join("word " * 50 for _ in range(10))
    passages = split_passages("f", text)
    assert all(len(p.text) <= 700 for p in passages)
    assert sum(p.text.count("word") for p in passages) == text.count("word")


def test_classify_checks_content_not_just_extension():
    assert classify("a.pdf", b"%PDF-1.7").family == "pdf"
    assert classify("a.pdf", b"hello") is None
    assert classify("a.docx", b"PK\x03\x04").family == "docx"
    assert classify("a.txt", "héllo".encode()).family == "text"
    assert classify("a.txt", b"\x00\x00") is None
    assert classify("a.exe", b"MZ") is None
    assert classify("noext", b"text") is None
