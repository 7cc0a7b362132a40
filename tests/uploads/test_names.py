import pytest

from agentic.uploads.names import MAX_NAME_BYTES, inside, sanitize_filename, unique_name


@pytest.mark.parametrize("raw, expected", [
    ("../../etc/passwd", "passwd"),
    ("a/b", "b"),
    ("..", "file"),
    (".", "file"),
    ("", "file"),
    (None, "file"),
    ("..\\..\\boot.ini", "boot.ini"),
    (".hidden", "hidden"),
    ("re\x00port.txt", "re_port.txt"),
    ("line\nbreak.md", "line_break.md"),
    ("ｆｕｌｌｗｉｄｔｈ.txt", "fullwidth.txt"),
    ("evil\u202etxt.exe", "eviltxt.exe"),
    ("ok name.pdf", "ok name.pdf"),
])
def test_sanitize(raw, expected):
    assert sanitize_filename(raw) == expected


def test_long_names_are_bounded_and_keep_their_extension():
    name = sanitize_filename("x" * 300 + ".pdf")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".pdf")
    name = sanitize_filename("é" * 300 + ".txt")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".txt")


def test_look_alike_slashes_never_make_a_path():
    for raw in ("a\u2215b.txt", "a\u2044b.txt", "a\uff0fb.txt"):
        name = sanitize_filename(raw)
        assert "/" not in name and "\\" not in name


def test_unique_name_never_overwrites():
    assert unique_name("a.txt", set()) == "a.txt"
    assert unique_name("a.txt", {"a.txt"}) == "a (2).txt"
    assert unique_name("a.txt", {"a.txt", "a (2).txt"}) == "a (3).txt"
    assert unique_name("README", {"README"}) == "README (2)"


def test_inside_refuses_escapes(tmp_path):
    assert inside(tmp_path, "a.txt") == (tmp_path / "a.txt").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError):
            inside(tmp_path, bad)
