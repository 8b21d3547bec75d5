"""The one way every long-running stage shows progress: a labelled tqdm bar on a terminal, plain
periodic lines otherwise (a log file or a pipe gets no carriage-return frames or escape sequences).

A bar's `desc` says what it is doing (``reconstruct block 3/12 [candidate neurons-only]``). Off a
terminal a line is written at most every :data:`LINE_SECONDS` seconds (``PATHPRUNE_PROGRESS_SECONDS``
overrides) and once at the end::

    >>> import io
    >>> out = io.StringIO()
    >>> bar = progress_bar(4, "analyze", stream=out)
    >>> bar.update(4); bar.close()
    >>> out.getvalue().startswith("analyze: 100% 4/4 img")
    True
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

#: seconds between two plain progress lines (off a terminal)
LINE_SECONDS = 30.0
#: an estimating bar says its expected total only when the job will take at least this long
SAY_ESTIMATE_SECONDS = 10.0


def _line_seconds() -> float:
    try:
        return float(os.environ.get("PATHPRUNE_PROGRESS_SECONDS", LINE_SECONDS))
    except ValueError:
        return LINE_SECONDS


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """A progress bar for logs: ``label: 40% 12/30 img  12.1 img/s  ETA 0:31`` every few seconds.

    Same calls as the tqdm bars it replaces off a terminal (update, close, set_postfix, set_postfix_str,
    write, iteration).
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "img", initial: int = 0, leave: bool = True,
                 stream: TextIO | None = None, seconds: float | None = None, iterable: Iterable[Any] | None = None):
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.n = self._start = int(initial)
        self.stream = stream
        self.seconds = _line_seconds() if seconds is None else float(seconds)
        self.started = self._last = time.monotonic()
        self.postfix = ""
        self.iterable = iterable
        self.closed = False
        self._emitted_at: int | None = None  # the count of the last line written

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = self.n - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}:"]
        if self.total:
            parts.append(f"{100 * self.n / self.total:.0f}% {self.n}/{self.total} {self.unit}")
        else:
            parts.append(f"{self.n} {self.unit}")
        if rate > 0:
            parts.append(f" {rate:.3g} {self.unit}/s" if rate >= 1 else f" {1 / rate:.3g} s/{self.unit}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f" ETA {_clock((self.total - self.n) / rate)}")
        elif self.closed:
            parts.append(f" in {_clock(elapsed)}")
        if self.postfix:
            parts.append(f" [{self.postfix}]")
        return " ".join(parts)

    def _emit(self) -> None:
        out = self._out()
        out.write(self.line() + "\n")
        out.flush()
        self._last = time.monotonic()
        self._emitted_at = self.n

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if time.monotonic() - self._last >= self.seconds:
            self._emit()

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def write(self, text: str) -> None:
        out = self._out()
        out.write(text + "\n")
        out.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if (self.leave or self.n > self._start) and self._emitted_at != self.n:
            self._emit()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(PlainProgress):
    """A disabled bar: counts, writes nothing (except explicit :meth:`write`)."""

    def _emit(self) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += int(n)


def progress_bar(total: int | None, desc: str, enabled: bool = True, *, unit: str = "img", initial: int = 0,
                 leave: bool = True, stream: TextIO | None = None, iterable: Iterable[Any] | None = None,
                 estimate: bool = False) -> Any:
    """A progress bar labelled `desc`: tqdm (count, rate, ETA) when `stream` (default stderr) is a terminal,
    :class:`PlainProgress` lines otherwise, a silent one when `enabled` is False. With `iterable`,
    iterating the bar yields its items and counts them. With `estimate` (long stages: analyze, finetune,
    bench), the bar is an :class:`EstimatingBar`: it prints the expected total time once, measured on
    its first update (the first batch), and keeps it for the stage's report."""
    if not enabled:
        bar: Any = _Silent(total, desc, unit=unit, initial=initial, leave=leave, stream=stream, iterable=iterable)
    else:
        out = stream if stream is not None else sys.stderr
        if _is_terminal(out):
            from tqdm import tqdm

            bar = tqdm(iterable, total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True,
                       smoothing=0.1, leave=leave, file=out)
        else:
            bar = PlainProgress(total, desc, unit=unit, initial=initial, leave=leave, stream=stream,
                                iterable=iterable)
    return EstimatingBar(bar, total, desc, unit=unit, initial=initial, show=enabled) if estimate else bar


def duration(seconds: float) -> str:
    """A duration for people: ``42 s``, ``3 min 5 s``, ``2 h 05 min``, ``6 d 3 h``.

    >>> duration(42.4), duration(185), duration(7500), duration(6 * 86400 + 3 * 3600)
    ('42 s', '3 min 5 s', '2 h 05 min', '6 d 3 h')
    """
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


class EstimatingBar:
    """A progress bar that says, after its first update, how long the whole job will take: the rate of
    the first batch times the work left (``analyze: expected 1 h 12 min for 2000 img (first 32 img in
    1 min 9 s)``), for jobs of at least :data:`SAY_ESTIMATE_SECONDS`. The estimate stays in
    :attr:`estimate` (seconds, or None before the first update) for the stage's report, beside
    :attr:`elapsed` (seconds since the bar started).

    >>> import io
    >>> out = io.StringIO()
    >>> bar = progress_bar(10, "analyze", stream=out, estimate=True)
    >>> bar.update(2); bar.close()
    >>> bar.estimate is not None and "expected" not in out.getvalue()  # a job of a moment: nothing said
    True
    """

    def __init__(self, bar: Any, total: int | None, desc: str, *, unit: str = "img", initial: int = 0,
                 show: bool = True) -> None:
        self.bar, self.total, self.desc, self.unit, self.show = bar, total, desc, unit, show
        self.initial = int(initial)
        self.started = time.monotonic()
        self.estimate: float | None = None
        self._done = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, n: int = 1) -> None:
        self._done += int(n)
        if self.estimate is None and self._done > 0 and self.total:
            first = self.elapsed
            self.estimate = first * max(0, self.total - self.initial) / self._done
            if self.show and self.estimate >= SAY_ESTIMATE_SECONDS:
                self.bar.write(f"{self.desc}: expected {duration(self.estimate)} for "
                               f"{self.total - self.initial} {self.unit} (first {self._done} {self.unit} in "
                               f"{duration(first)})")
        self.bar.update(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bar, name)

    def __iter__(self) -> Iterator[Any]:
        for item in self.bar.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "EstimatingBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_list(items: Iterable[Any], desc: str, enabled: bool = True, *, unit: str = "item",
                  stream: TextIO | None = None) -> Any:
    """Iterate `items` with a progress bar (:func:`progress_bar` with an iterable)."""
    items = list(items)
    return progress_bar(len(items), desc, enabled, unit=unit, leave=False, stream=stream, iterable=items)
