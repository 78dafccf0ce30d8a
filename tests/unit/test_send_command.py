"""``mailengine send``: how standard input becomes the manual's sendMessage headers and body."""

import pytest

from mailengine.cli import build_parser, split_message


def test_headers_and_body_split_at_the_first_blank_line_in_either_line_ending():
    assert split_message(b"Subject: a\r\nTo: b\r\n\r\nline 1\r\n\r\nline 2\r\n") == (
        b"Subject: a\nTo: b",
        b"line 1\n\nline 2\n",
    )


def test_without_a_blank_line_header_fields_stay_headers_and_plain_text_is_the_body():
    assert split_message(b"Subject: only headers\n\tfolded\nX-A: 1\n") == (
        b"Subject: only headers\n\tfolded\nX-A: 1\n",
        b"",
    )
    assert split_message(b"just a note\nto you\n") == (b"", b"just a note\nto you\n")
    assert split_message(b"") == (b"", b"")


@pytest.mark.parametrize("priority", ["-1", "100", "high"])
def test_a_priority_outside_0_to_99_is_refused(priority, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--priority", priority, "a@b.test"])
    assert "is not a whole number from 0 to 99" in capsys.readouterr().err
