"""A scripted kernel behind pybpf.syscall's one entry point (:func:`pybpf.syscall.use_kernel`).

Each call is answered from a script: per call name (``BPF_LINK_CREATE``, ``ioctl:0x2400``,
``perf_event_open``), a list of answers used in order.  An answer is ``-errno``, :data:`FD`
(a fresh descriptor on /dev/null: the code under test owns and closes it), or a function of
the call's arguments returning either.  A call the script does not expect fails the test: the fake
states exactly the sequence a fallback path must make.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, Union

from pybpf import syscall

FD = object()
Answer = Union[int, object, Callable[..., Union[int, object]]]


class FakeKernel(syscall.Kernel):
    def __init__(self, script: dict[str, list[Answer]]) -> None:
        self.script = {name: list(answers) for name, answers in script.items()}
        self.calls: list[str] = []
        self.fds: list[int] = []

    def _answer(self, name: str, *args: object) -> int:
        self.calls.append(name)
        answers = self.script.get(name)
        assert answers, f"unexpected call {name} (calls so far: {self.calls})"
        answer = answers.pop(0)
        if callable(answer):
            answer = answer(*args)
        if answer is FD:
            fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            self.fds.append(fd)
            return fd
        assert isinstance(answer, int)
        return answer

    def bpf(self, cmd: int, attr: object, size: int) -> int:
        return self._answer(syscall._CMD_NAMES[cmd], attr, size)

    def perf_event_open(self, attr: object, pid: int, cpu: int, group_fd: int, flags: int) -> int:
        return self._answer("perf_event_open", attr, pid, cpu, group_fd, flags)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        return self._answer(f"ioctl:{request:#x}", fd, arg)

    def unused(self) -> dict[str, int]:
        return {name: len(a) for name, a in self.script.items() if a}


@contextmanager
def fake_kernel(script: dict[str, list[Answer]]) -> Iterator[FakeKernel]:
    kernel = FakeKernel(script)
    previous = syscall.use_kernel(kernel)
    try:
        yield kernel
    finally:
        syscall.use_kernel(previous)
