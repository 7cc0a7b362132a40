"""Per-session KV cache state on disk, so an evicted or restarted session resumes without re-reading its history.

File layout: MAGIC, 4-byte header length, JSON header {"model", "tokens"}, then llama.cpp's
per-sequence state. The header's tokens say what the state holds; it is used only when
they are a prefix of the prompt being answered, and only by the session it is named for.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

MAGIC = b"AGKV1\n"


class KvStore:
    def __init__(self, folder: Path, model_identity: str) -> None:
        self.folder = folder
        self.model_identity = model_identity
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.kv"

    def save(self, session_id: str, tokens: list[int], state: bytes) -> None:
        header = json.dumps({"model": self.model_identity, "tokens": tokens}).encode()
        target = self.path(session_id)
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(header)) + header + state)
        os.replace(tmp, target)

    def load(self, session_id: str) -> tuple[list[int], bytes] | None:
        try:
            data = self.path(session_id).read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            return None
        (size,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(data[start:start + size])
        except ValueError:
            return None
        if header.get("model") != self.model_identity:
            return None
        return list(header["tokens"]), data[start + size:]

    def drop(self, session_id: str) -> None:
        self.path(session_id).unlink(missing_ok=True)
