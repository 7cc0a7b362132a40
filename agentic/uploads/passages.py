"""Choosing what of a session's files goes into the prompt: everything when it fits, otherwise
the passages that best match the question, ranked by SQLite FTS5 (bm25)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

PASSAGE_CHARS = 600


@dataclass(frozen=True)
class Passage:
    file: str
    index: int
    text: str


def split_passages(file: str, text: str) -> list[Passage]:
    passages: list[Passage] = []
    buffer = ""
    for paragraph in re.split(r"\n\s*\n", text):
        while len(paragraph) > PASSAGE_CHARS:
            if buffer:
                passages.append(Passage(file, len(passages), buffer))
                buffer = ""
            passages.append(Passage(file, len(passages), paragraph[:PASSAGE_CHARS]))
            paragraph = paragraph[PASSAGE_CHARS:]
        if len(buffer) + len(paragraph) > PASSAGE_CHARS and buffer:
            passages.append(Passage(file, len(passages), buffer))
            buffer = ""
        buffer = f"{buffer}\n\n{paragraph}" if buffer else paragraph
    if buffer.strip():
        passages.append(Passage(file, len(passages), buffer))
    return passages


def best_passages(texts: dict[str, str], question: str, budget_chars: int) -> list[Passage]:
    """Passages most relevant to `question`, in file order, within `budget_chars`."""
    passages = [p for name, text in texts.items() for p in split_passages(name, text)]
    terms = [t for t in re.findall(r"\w+", question.lower()) if len(t) > 2][:32]
    ranked = _rank(passages, terms) if terms else passages
    chosen: list[Passage] = []
    used = 0
    for passage in ranked:
        if used + len(passage.text) > budget_chars:
            continue
        chosen.append(passage)
        used += len(passage.text)
    order = {(p.file, p.index): i for i, p in enumerate(passages)}
    return sorted(chosen, key=lambda p: order[(p.file, p.index)])


def _rank(passages: list[Passage], terms: list[str]) -> list[Passage]:
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE p USING fts5(body, tokenize='unicode61')")
        db.executemany("INSERT INTO p(rowid, body) VALUES (?, ?)", ((i, p.text) for i, p in enumerate(passages)))
        query = " OR ".join('"' + t.replace('"', '') + '"' for t in terms)
        hits = [row[0] for row in db.execute("SELECT rowid FROM p WHERE p MATCH ? ORDER BY bm25(p)", (query,))]
    finally:
        db.close()
    seen = set(hits)
    return [passages[i] for i in hits] + [p for i, p in enumerate(passages) if i not in seen]
