"""Zip-bomb checks on Office files, before any library opens them (in this process: no worker)."""

import io
import zipfile

import pytest

from agentic.uploads.archives import ArchiveCaps, ArchiveRefused, check_archive
from tests.uploads.bombs import MIB, declare_size, docx_bomb
from tests.uploads.documents import docx_bytes, pptx_bytes, xlsx_bytes

CAPS = ArchiveCaps(max_unzipped_bytes=100 * MIB, max_ratio=100)


@pytest.mark.parametrize("content, name", [
    (docx_bytes(["hello"] * 50), "a.docx"),
    (xlsx_bytes({"S": [[i, f"row {i}"] for i in range(500)]}), "a.xlsx"),
    (pptx_bytes(["one", "two"]), "a.pptx"),
])
def test_real_office_files_pass(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    check_archive(path, CAPS)


def test_a_part_compressed_past_the_ratio_is_refused(tmp_path):
    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_bomb(20 * MIB))
    with pytest.raises(ArchiveRefused, match=r"'word/document.xml' is compressed [\d,]+ to 1, more than the 100 to 1 allowed"):
        check_archive(path, CAPS)


def test_an_archive_larger_than_the_cap_unzipped_is_refused(tmp_path):
    path = tmp_path / "big.docx"
    path.write_bytes(docx_bomb(20 * MIB))
    with pytest.raises(ArchiveRefused, match=r"would unzip to 2\d MiB, more than the 10 MiB allowed"):
        check_archive(path, ArchiveCaps(max_unzipped_bytes=10 * MIB, max_ratio=10_000))


def test_a_header_that_understates_a_part_is_refused(tmp_path):
    path = tmp_path / "liar.docx"
    path.write_bytes(declare_size(docx_bomb(20 * MIB), "word/document.xml", 1000))
    assert zipfile.ZipFile(path).getinfo("word/document.xml").file_size == 1000  # within every cap
    with pytest.raises(ArchiveRefused, match="unzips to more than the 1,000 bytes its header declares"):
        check_archive(path, CAPS)


def test_compression_methods_office_never_uses_are_refused(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    path = tmp_path / "odd.docx"
    path.write_bytes(out.getvalue())
    with pytest.raises(ArchiveRefused, match="compression method"):
        check_archive(path, CAPS)
