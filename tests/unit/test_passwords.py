from mailengine.config.passwords import (
    hash_password,
    load_password_file,
    set_password,
    verify_password,
)


def test_hash_verifies_only_its_secret():
    stored = hash_password("opensesame")
    assert stored.startswith("scrypt$") and "opensesame" not in stored
    assert verify_password(stored, "opensesame")
    assert not verify_password(stored, "opensesam")
    assert not verify_password("garbage", "x")


def test_a_plain_manual_style_line_is_accepted_and_rewritten_as_a_hash(tmp_path):
    path = tmp_path / "password.txt"
    path.write_text("admin:opensesame\n")
    pw = load_password_file(str(path))
    assert pw.verify("admin", "opensesame") and not pw.verify("admin", "nope")
    assert "plain-text password for admin replaced" in pw.warnings[0]
    text = path.read_text()
    assert "opensesame" not in text and text.startswith("admin:scrypt$")
    assert load_password_file(str(path)).warnings == []


def test_set_password_adds_and_replaces(tmp_path):
    path = str(tmp_path / "config" / "password.txt")
    set_password(path, "admin", "one")
    set_password(path, "ops", "two")
    set_password(path, "admin", "three")
    pw = load_password_file(path)
    assert pw.verify("admin", "three") and pw.verify("ops", "two")
    assert not pw.verify("admin", "one") and not pw.verify("nobody", "x")


def test_rewriting_keeps_comments_and_unreadable_lines_where_they_were(tmp_path):
    path = tmp_path / "password.txt"
    path.write_text(
        "# web admin users\nadmin:opensesame\n\n# the night shift\nbroken line\nops:x\n"
    )
    pw = load_password_file(str(path))
    lines = path.read_text().splitlines()
    assert lines[0] == "# web admin users" and lines[1].startswith("admin:scrypt$")
    assert lines[2:5] == ["", "# the night shift", "broken line"]
    assert lines[5].startswith("ops:scrypt$") and len(lines) == 6
    assert pw.verify("admin", "opensesame") and pw.verify("ops", "x")
    set_password(str(path), "new", "pw")
    assert path.read_text().splitlines()[:5] == lines[:5]
    assert load_password_file(str(path)).verify("new", "pw")


def test_a_plain_password_in_a_file_that_cannot_be_rewritten_still_works_with_a_warning(
    tmp_path, monkeypatch
):
    import os

    path = tmp_path / "password.txt"
    path.write_text("admin:opensesame\n")

    def refused(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refused)  # a config directory the engine cannot write
    pw = load_password_file(str(path))
    assert pw.verify("admin", "opensesame")
    assert "cannot be rewritten with a hash (Permission denied)" in pw.warnings[0]
    assert path.read_text() == "admin:opensesame\n"
    assert os.listdir(tmp_path) == ["password.txt"]  # no temporary file left behind
