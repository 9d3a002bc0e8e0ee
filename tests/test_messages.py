"""Messages count in proper English: "1 event", "2 events"."""

from __future__ import annotations

import io

from pybpf.tool import Tool, plural


def test_counts_have_the_right_plural() -> None:
    assert [plural(n, "histogram") for n in (0, 1, 2)] == [
        "0 histograms", "1 histogram", "2 histograms"]  # fmt: skip
    err = io.StringIO()
    Tool().on_lost(3, 1, err)
    Tool().on_lost(0, 7, err)
    assert err.getvalue() == "Lost 1 event on CPU #3!\nLost 7 events on CPU #0!\n"
