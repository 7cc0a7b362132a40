"""Zip bombs dressed as Office files: a real document with one huge, well-compressed part."""

from __future__ import annotations

import io
import struct
import zipfile

from tests.uploads.documents import docx_bytes, xlsx_bytes

MIB = 1024 * 1024
SHARED_STRINGS_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
SHARED_STRINGS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"


def docx_bomb(unzipped_bytes: int) -> bytes:
    """A .docx whose word/document.xml inflates to about `unzipped_bytes` of paragraphs."""
    head = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
    part = _repeated(head, b"<w:p><w:r><w:t>boom boom boom boom</w:t></w:r></w:p>", b"</w:body></w:document>", unzipped_bytes)
    return _with_part(docx_bytes(["innocent"]), "word/document.xml", part, {}, level=9)


def xlsx_bomb(unzipped_bytes: int) -> bytes:
    """An .xlsx whose shared-strings table, which its sheet uses, inflates to about `unzipped_bytes`."""
    head = b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    part = _repeated(head, b"<si><t>boom boom boom boom boom boom</t></si>", b"</sst>", unzipped_bytes)
    wiring = {
        "[Content_Types].xml": (b"</Types>", f'<Override PartName="/xl/sharedStrings.xml" ContentType="{SHARED_STRINGS_TYPE}"/></Types>'.encode()),
        "xl/_rels/workbook.xml.rels": (b"</Relationships>", f'<Relationship Type="{SHARED_STRINGS_REL}" Target="sharedStrings.xml" Id="rId99"/></Relationships>'.encode()),
        "xl/worksheets/sheet1.xml": (b'<c r="A1" t="inlineStr"><is><t>innocent</t></is></c>', b'<c r="A1" t="s"><v>0</v></c>'),
    }
    # level 1: a gigabyte compresses in a second or two (to 8 MiB, still 128 to 1)
    return _with_part(xlsx_bytes({"Sheet": [["innocent"]]}), "xl/sharedStrings.xml", part, wiring, level=1)


def declare_size(archive: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size of part `name` in its local and central headers: a lie."""
    data = bytearray(archive)
    for signature, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        header = data.index(signature)
        while data[header + name_at:header + name_at + len(name)] != name.encode():
            header = data.index(signature, header + 4)
        struct.pack_into("<I", data, header + size_at, size)
    return bytes(data)


def _repeated(head: bytes, unit: bytes, tail: bytes, size: int):
    block = unit * (MIB // len(unit))
    yield head
    for _ in range(max(1, size // len(block))):
        yield block
    yield tail


def _with_part(archive: bytes, name: str, chunks, edits: dict[str, tuple[bytes, bytes]], level: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as bomb:
        for item in source.infolist():
            if item.filename != name:
                content = source.read(item.filename)
                old, new = edits.get(item.filename, (b"", b""))
                bomb.writestr(item.filename, content.replace(old, new) if old else content)
        with bomb.open(name, "w") as part:
            for chunk in chunks:
                part.write(chunk)
    return out.getvalue()
