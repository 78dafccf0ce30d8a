import os

from mailengine.observe.logfiles import DailyLogFiles, format_lines
from mailengine.observe.timestamps import parse_stamp


def event(text, when):
    return {"log_format": "{text}", "text": text, "log_time": when, "log_level": None}


def test_lines_carry_the_manuals_stamp():
    when = parse_stamp("2001/01/24 14:40:49")
    assert format_lines(event("401 recv", when)) == "2001/01/24 14:40:49 401 recv\n"
    assert format_lines(event("a\nb", when)).count("2001/01/24 14:40:49 ") == 2


def test_one_file_per_day_and_old_files_are_removed(tmp_path):
    days = {"n": 3}
    files = DailyLogFiles(str(tmp_path), lambda: days["n"])
    for name in ("mailengine-2001-01-10.log", "mailengine-2001-01-21.log", "other.txt"):
        (tmp_path / name).write_text("old\n")
    files(event("hello", parse_stamp("2001/01/24 10:00:00")))
    files(event("again", parse_stamp("2001/01/24 11:00:00")))
    files(event("next day", parse_stamp("2001/01/25 00:00:01")))
    files.close()
    assert sorted(os.listdir(tmp_path)) == [
        "mailengine-2001-01-24.log",
        "mailengine-2001-01-25.log",
        "other.txt",
    ]
    assert (tmp_path / "mailengine-2001-01-24.log").read_text().count("\n") == 2


def test_retention_zero_writes_no_files(tmp_path):
    files = DailyLogFiles(str(tmp_path), lambda: 0)
    files(event("hello", parse_stamp("2001/01/24 10:00:00")))
    assert os.listdir(tmp_path) == []


def test_a_shorter_retention_set_while_running_prunes_at_the_next_line(tmp_path):
    days = {"n": 10}
    files = DailyLogFiles(str(tmp_path), lambda: days["n"])
    (tmp_path / "mailengine-2001-01-20.log").write_text("old\n")
    files(event("hello", parse_stamp("2001/01/24 10:00:00")))
    assert (tmp_path / "mailengine-2001-01-20.log").exists()
    days["n"] = 2
    files(event("again", parse_stamp("2001/01/24 10:00:05")))
    files.close()
    assert sorted(os.listdir(tmp_path)) == ["mailengine-2001-01-24.log"]
