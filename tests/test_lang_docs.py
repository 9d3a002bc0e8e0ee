"""The program at the top of docs/language.md compiles, loads, and counts switches."""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def first_program(tmp_path: Path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "doc_example.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("doc_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.kernel
def test_the_documented_program_runs(tmp_path, need_root):
    from pybpf.btf import BTF
    from pybpf.lang import build
    from pybpf.loader import LoadedObject
    from pybpf.object import prepare
    from pybpf.ringbuf import RingBuffer

    doc = first_program(tmp_path)
    btf = BTF.kernel()
    compiled = build("doc", [doc.on_switch], btf)
    with LoadedObject(prepare(compiled.spec, btf)) as obj:
        obj.load()
        obj.attach()
        events = []
        with RingBuffer(obj.maps["events"].fd,
                        on_sample=lambda d: events.append(doc.Event.decode(d))) as rb:  # fmt: skip
            deadline = time.monotonic() + 5
            while len(events) < 10 and time.monotonic() < deadline:
                time.sleep(0.01)  # switches of our own
                rb.poll(10)
        counts = dict(compiled.typed_maps(obj)["counts"].typed_items())
    assert len(events) >= 10 and counts
    # every event's pid was counted, and a pid's count is at least its events so far
    seen: dict[int, int] = {}
    for ev in events:
        seen[ev.pid] = seen.get(ev.pid, 0) + 1
    assert all(counts.get(pid & 0xFFFFFFFF, 0) >= n for pid, n in seen.items())
    assert any(ev.comm for ev in events)
