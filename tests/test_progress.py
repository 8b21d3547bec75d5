"""Progress off a terminal: plain labelled lines, no carriage returns or escape sequences."""

from __future__ import annotations

import io
import re

from pathprune.progress import PlainProgress, progress_bar, progress_list

ESCAPE = re.compile(r"\x1b\[|\r")


def test_a_non_tty_stream_gets_plain_labelled_lines(monkeypatch):
    monkeypatch.setenv("PATHPRUNE_PROGRESS_SECONDS", "0")  # a line on every update
    out = io.StringIO()
    bar = progress_bar(4, "reconstruct block 3/12 [candidate neurons-only]", stream=out)
    assert isinstance(bar, PlainProgress)
    for _ in range(4):
        bar.update(1)
    bar.set_postfix_str("loss 0.1")
    bar.close()
    text = out.getvalue()
    assert not ESCAPE.search(text), repr(text)
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.startswith("reconstruct block 3/12 [candidate neurons-only]: ") for line in lines)
    assert "25% 1/4 img" in lines[0] and "ETA" in lines[0] and "100% 4/4 img" in lines[-1]
    assert all(line.strip() for line in lines)


def test_lines_are_periodic_not_per_update(monkeypatch):
    monkeypatch.setenv("PATHPRUNE_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    bar = progress_bar(1000, "analyze", stream=out)
    for _ in range(1000):
        bar.update(1)
    assert out.getvalue() == ""
    bar.close()
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("analyze: 100% 1000/1000 img")


def test_disabled_bars_write_nothing_and_lists_iterate():
    out = io.StringIO()
    bar = progress_bar(3, "calibrate", enabled=False, stream=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""
    out = io.StringIO()
    assert list(progress_list(["a", "b"], "export", stream=out, unit="model")) == ["a", "b"]
    assert out.getvalue().startswith("export: 100% 2/2 model") and not ESCAPE.search(out.getvalue())


def test_a_terminal_gets_a_tqdm_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress_bar(2, "analyze", stream=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
