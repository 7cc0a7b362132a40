"""Choosing what of a session's files goes into the prompt: everything when it fits, otherwise
the passages that best match the question, ranked by SQLite FTS5 (bm25).

What is chosen goes with the user message that asked, and stays with it in every later prompt
(the reply's `usage.files_added` records it), so each turn's prompt begins with the whole previous
one and its model state is reused; a later question adds only what the conversation lacks.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

PASSAGE_CHARS = 600
INTRO = "The user shared these files. Answer from them when the question is about them."

# (file name, passage index), or (file name, None) for a whole file
Ref = tuple[str, int | None]


@dataclass(frozen=True)
class Passage:
    file: str
    index: int | None  # None: the whole file
    text: str

    @property
    def ref(self) -> Ref:
        return (self.file, self.index)


@dataclass(frozen=True)
class FileContext:
    """A session's file texts, and the parts of them that go with the user messages of a conversation."""

    texts: dict[str, str]
    budget_chars: int

    def choose(self, question: str, given: Iterable[Ref] = ()) -> list[Passage]:
        """For a new question: every file whole when all fit the budget, else the passages that
        best match it; less what the conversation already holds (`given`)."""
        given = set(given)
        if sum(len(t) for t in self.texts.values()) <= self.budget_chars:
            chosen = [Passage(name, None, text) for name, text in self.texts.items()]
        else:
            chosen = best_passages(self.texts, question, self.budget_chars)
        return [p for p in chosen if p.ref not in given and (p.file, None) not in given]

    def recall(self, sources: Any) -> list[Passage]:
        """The parts an earlier turn's `usage.files_added` names, as far as the files still hold them."""
        recalled = []
        for source in sources if isinstance(sources, list) else ():
            text = self.texts.get(source.get("name")) if isinstance(source, dict) else None
            if text is None:
                continue
            if source.get("passages") == "all":
                recalled.append(Passage(source["name"], None, text))
            else:
                passages = split_passages(source["name"], text)
                recalled += [passages[i] for i in source.get("passages") or () if isinstance(i, int) and 0 <= i < len(passages)]
        return recalled


def render(passages: list[Passage]) -> str:
    """The parts as the prompt shows them, or "" for none."""
    if not passages:
        return ""
    sections = [f"--- file: {p.file} ---\n{p.text}" if p.index is None else f"--- file: {p.file} (passage {p.index}) ---\n{p.text}" for p in passages]
    return INTRO + "\n\n" + "\n\n".join(sections)


def sources_json(passages: list[Passage]) -> list[dict[str, Any]]:
    """Which parts of which files: `usage.files` and `usage.files_added`."""
    grouped: dict[str, list[int] | str] = {}
    for p in passages:
        if p.index is None:
            grouped[p.file] = "all"
        else:
            grouped.setdefault(p.file, []).append(p.index)  # type: ignore[union-attr]
    return [{"name": name, "passages": parts} for name, parts in grouped.items()]


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
