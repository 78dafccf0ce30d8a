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
