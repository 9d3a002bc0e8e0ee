"""Measure what the running kernel does for pybpf (run inside each guest by the matrix).

``python -m vmtest.features OUT.json``: the kernel release, its BTF's sha256, every feature
probe, and for each attach kind the result of loading and attaching a trivial program of
that kind (``ok``, or the one-line error pybpf gives), the transports runqslower can use,
and the helpers the shipped programs call that the kernel declares.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

ATTACH = (
    "tp_btf/sched_switch",
    "raw_tp/sched_switch",
    "tracepoint/sched/sched_switch",
    "kprobe/ksys_read",
    "kretprobe/ksys_read",
    "fentry/ksys_read",
    "fexit/ksys_read",
)


def attach_kind(section: str) -> str:
    from pybpf.asm import R0, Asm
    from pybpf.btf import BTF
    from pybpf.loader import LoadedObject
    from pybpf.object import ObjectSpec, ProgramSpec, prepare

    a = Asm()
    a.mov(R0, 0)
    a.exit()
    try:
        spec = ObjectSpec("probe", [ProgramSpec("probe", section, a.assemble())])
        with LoadedObject(prepare(spec, BTF.kernel())) as obj:
            obj.load()
            obj.attach()
    except Exception as err:  # the measurement is the error itself
        return f"{type(err).__name__}: {err}".splitlines()[0][:200]
    return "ok"


def helpers_used() -> dict[str, bool]:
    """Helpers runqslower and runqlat call, and whether the kernel's enum bpf_func_id has
    them (what prepare() resolves the numbers from)."""
    from pybpf.btf import BTF
    from pybpf.programs import runqlat, runqslower

    raw = BTF.kernel().raw_bytes()  # the string table holds every enumerator's name
    hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from("<IIIII", raw, 4)
    strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
    names: set[str] = set()
    for tool in (runqslower, runqlat):
        for prog in tool.build_object().programs:
            names.update(i.helper for i in prog.insns if i.helper)
    return {n: f"\0BPF_FUNC_{n}\0".encode() in strings for n in sorted(names)}


def measure() -> dict:
    from pybpf import probes

    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        btf = f.read()
    return {
        "release": os.uname().release,
        "btf_sha256": hashlib.sha256(btf).hexdigest(),
        "probes": probes.probe_all(),
        "probe_versions": probes.probe_versions(),
        "attach": {s.split("/", 1)[0]: attach_kind(s) for s in ATTACH},
        "transports": {"ringbuf": probes.have_ringbuf(), "perf": True},
        "helpers": helpers_used(),
    }


def main() -> int:
    result = measure()
    text = json.dumps(result, indent=1, sort_keys=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
