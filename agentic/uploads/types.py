"""Which uploads are accepted: an allow-list by extension, confirmed by the content itself."""

from __future__ import annotations

from dataclasses import dataclass

ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class FileKind:
    content_type: str
    family: str  # text, pdf, xlsx, pptx, docx


TEXT_EXTENSIONS = {
    "txt": "text/plain", "md": "text/markdown", "csv": "text/csv", "json": "application/json", "log": "text/plain",
    "py": "text/x-python", "js": "text/javascript", "ts": "text/plain", "java": "text/plain", "c": "text/plain",
    "h": "text/plain", "cpp": "text/plain", "go": "text/plain", "rs": "text/plain", "rb": "text/plain",
    "sh": "text/plain", "yaml": "text/plain", "yml": "text/plain", "toml": "text/plain", "ini": "text/plain",
    "cfg": "text/plain", "sql": "text/plain", "html": "text/plain", "css": "text/plain", "xml": "text/plain",
    "tsx": "text/plain", "jsx": "text/plain", "kt": "text/plain", "swift": "text/plain",
}
BINARY_EXTENSIONS = {
    "pdf": FileKind("application/pdf", "pdf"),
    "xlsx": FileKind("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "pptx": FileKind("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    "docx": FileKind("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
}


def extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def classify(name: str, head: bytes) -> FileKind | None:
    """The kind of an upload from its name and first bytes, or None when refused."""
    ext = extension(name)
    if ext in BINARY_EXTENSIONS:
        kind = BINARY_EXTENSIONS[ext]
        magic = b"%PDF-" if kind.family == "pdf" else ZIP_MAGIC
        return kind if head.startswith(magic) else None
    if ext in TEXT_EXTENSIONS and _looks_like_text(head):
        # Served as plain text whatever it is, so an uploaded .html or .js never runs in a browser.
        return FileKind(TEXT_EXTENSIONS[ext] if ext in ("csv", "json", "md") else "text/plain", "text")
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the sniffing window
    return True
