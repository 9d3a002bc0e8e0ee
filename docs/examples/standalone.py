"""pybpf as a library, without ``pybpf run``: build an object, relocate it for the running
kernel, load, attach, read a BPF ring buffer, close.  Run it as root:
``python docs/examples/standalone.py``; it runs ``/bin/true`` and reports the exec it saw.
"""

from __future__ import annotations

import struct
import subprocess

from pybpf.asm import FP, R0, R1, R2, R3, R4, Asm
from pybpf.btf import BTF
from pybpf.loader import LoadedObject
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.ringbuf import RingBuffer
from pybpf.uapi import BPF_MAP_TYPE_RINGBUF


def exec_program() -> ObjectSpec:
    """On every exec, output the new process's tgid (bpf_get_current_pid_tgid() >> 32)."""
    a = Asm()
    a.call("get_current_pid_tgid").rsh(R0, 32).stx(FP, -8, R0, size=4)
    a.ld_map_fd(R1, "events").mov(R2, FP).add(R2, -8).mov(R3, 4).mov(R4, 0)
    a.call("ringbuf_output")
    a.mov(R0, 0).exit()
    return ObjectSpec(
        "standalone",
        programs=[ProgramSpec("on_exec", "tp_btf/sched_process_exec", a.assemble())],
        maps=[MapSpec("events", BPF_MAP_TYPE_RINGBUF, 0, 0, 64 * 1024)],
    )


def main() -> None:
    prepared = prepare(exec_program(), BTF.kernel())  # helper numbers, attach ids: from BTF
    seen: list[int] = []
    with LoadedObject(prepared) as obj:  # leaving the block frees programs, links, maps
        obj.load()
        obj.attach()
        with RingBuffer(obj.maps["events"].fd,
                        on_sample=lambda data: seen.append(struct.unpack("<I", data)[0])) as rb:
            child = subprocess.Popen(["/bin/true"])
            child.wait()
            while child.pid not in seen:
                rb.poll(100)  # wait for a wakeup (or 100 ms), then drain
    print(f"exec of pid {child.pid} seen: {child.pid in seen}")


if __name__ == "__main__":
    main()
