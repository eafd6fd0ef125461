"""How long an evaluation has left: the remaining cells' token-work (samples x length, what prefill time
follows) at the rate of the cells this run has timed. Cells answered from the journal, unavailable or cut
short count as done and teach it nothing."""

from __future__ import annotations


class Pace:
    def __init__(self, cells: list[tuple[str, int]], samples: int):
        self.left = {cell: samples * cell[1] for cell in cells}
        self.work, self.seconds = 0, 0.0

    def done(self, cell: tuple[str, int], seconds: float | None = None) -> None:
        """`cell` is finished; `seconds`: the time it took when this run generated all of its answers."""
        work = self.left.pop(cell, 0)
        if seconds is not None and work:
            self.work += work
            self.seconds += seconds

    def seconds_left(self) -> float | None:
        """The estimate, or None before any cell was timed."""
        return sum(self.left.values()) * self.seconds / self.work if self.work else None


def duration(seconds: float) -> str:
    """`about 40 s`, `about 12 min`, `about 3 h 05 min`."""
    if seconds < 60:
        return f"about {seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60:02d} min"
