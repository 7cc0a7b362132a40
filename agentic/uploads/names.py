"""Client filenames are never trusted: this turns one into a safe, bounded, single path component."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

MAX_NAME_BYTES = 120
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def sanitize_filename(raw: str | None) -> str:
    name = unicodedata.normalize("NFKC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # drop any directory part
    name = _UNSAFE.sub("_", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cf", "Cs", "Co", "Cn"))
    name = re.sub(r"\s+", " ", name).strip(" .")
    name = name.lstrip(".")
    if not name or set(name) <= {".", "_"}:
        name = "file"
    return _bounded(name)


def _bounded(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    budget = MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
    stem = stem.encode()[:budget].decode("utf-8", errors="ignore").rstrip(" .") or "file"
    return f"{stem}.{ext}" if ext else stem


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name (2).ext`, `name (3).ext`... so an upload never overwrites another."""
    if name not in taken:
        return name
    stem, ext = (name.rsplit(".", 1) + [""])[:2] if "." in name else (name, "")
    n = 2
    while True:
        candidate = _bounded(f"{stem} ({n})" + (f".{ext}" if ext else ""))
        if candidate not in taken:
            return candidate
        n += 1


def inside(folder: Path, name: str) -> Path:
    """The path of `name` in `folder`, refusing anything that would land outside it."""
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise ValueError(f"{name!r} escapes its folder")
    return path
