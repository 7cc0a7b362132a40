"""Zip bombs refused before a library opens an Office file (.docx, .xlsx, .pptx are zip archives).

Runs in the extraction worker. The central directory declares each part's size: the caps are
checked against that, then every part is inflated in bounded chunks to prove the declaration
true. zipfile itself never returns more of a part than its declared size, but inflates a whole
part in one call when a library reads it at once, so a header that lies is refused here.
"""

from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024
RATIO_FLOOR = 1024 * 1024  # a part smaller than this cannot hurt, however well it compresses
OFFICE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class ArchiveRefused(Exception):
    """The archive would unzip to more than the caps allow."""


@dataclass(frozen=True)
class ArchiveCaps:
    max_unzipped_bytes: int
    max_ratio: int


def check_archive(path: Path, caps: ArchiveCaps) -> None:
    """Raise ArchiveRefused when the zip at `path` is, or pretends not to be, a bomb."""
    with zipfile.ZipFile(path) as archive:
        parts = archive.infolist()
        _check_declared(parts, caps)
        for part in parts:
            _check_inflated(archive, part)


def _check_declared(parts: list[zipfile.ZipInfo], caps: ArchiveCaps) -> None:
    unzipped = sum(part.file_size for part in parts)
    if unzipped > caps.max_unzipped_bytes:
        raise ArchiveRefused(f"it would unzip to {_mib(unzipped)}, more than the {_mib(caps.max_unzipped_bytes)} allowed")
    for part in parts:
        if part.compress_type not in OFFICE_METHODS:
            raise ArchiveRefused(f"its part {part.filename!r} uses a compression method Office files never use")
        if part.file_size > RATIO_FLOOR and part.file_size > caps.max_ratio * max(part.compress_size, 1):
            ratio = part.file_size / max(part.compress_size, 1)
            raise ArchiveRefused(f"its part {part.filename!r} is compressed {ratio:,.0f} to 1, more than the {caps.max_ratio} to 1 allowed")


def _check_inflated(archive: zipfile.ZipFile, part: zipfile.ZipInfo) -> None:
    # zipfile stops a part at its declared size: asking for one byte more shows whether there is
    # more. Without a CRC zipfile checks none, so the probe reads on where a CRC check would stop.
    probe = copy.copy(part)
    probe.file_size = part.file_size + 1
    del probe.CRC
    inflated = 0
    with archive.open(probe) as stream:
        while chunk := stream.read(CHUNK):
            inflated += len(chunk)
            if inflated > part.file_size:
                raise ArchiveRefused(f"its part {part.filename!r} unzips to more than the {part.file_size:,} bytes its header declares")


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.0f} MiB"
