"""The plain-path shortcut of MAIL FROM / RCPT TO agrees with Twisted's Address."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.mail import smtp

from mailengine.inbound.paths import simple_path

# Atom characters, dots, and the characters that make a path not plain.
ALPHABET = "aZ09-!#$%&'*+/=?^_`{|}~." + '@<>"\\ ,:[]'


def twisted_reading(path: bytes) -> tuple[str, str] | None:
    try:
        address = smtp.Address(path, b"")
    except smtp.AddressError:
        return None
    return address.local.decode("ascii"), address.domain.decode("ascii")


@given(st.text(alphabet=ALPHABET, max_size=30))
def test_a_path_taken_by_the_shortcut_reads_as_twisted_reads_it(text):
    path = text.encode("ascii")
    simple = simple_path(path)
    if simple is not None:
        assert simple == twisted_reading(path)


@given(
    st.text(alphabet="abcXYZ019-!#$%&'*+/=?^_`{|}~.", min_size=1, max_size=20),
    st.text(alphabet="abcXYZ019-.", min_size=1, max_size=20),
)
def test_every_plain_bracketed_path_takes_the_shortcut(local, domain):
    path = f"<{local}@{domain}>".encode("ascii")
    assert simple_path(path) == (local, domain) == twisted_reading(path)


def test_other_forms_are_left_to_twisted():
    for path in (b"<>", b"a@b", b'<"a b"@c>', b"<@relay:a@b>", b"<a@b@c>", b"<a@[1.2.3.4]>"):
        assert simple_path(path) is None
