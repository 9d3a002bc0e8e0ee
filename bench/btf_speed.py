"""BTF speed and memory: cold resolution of runqslower's types, full name index, warm start.

Each measurement runs in a fresh interpreter (the one running this script; use the real
``python3`` and let it cache bytecode: ``env -u PYTHONDONTWRITEBYTECODE``), N times; medians.

* cold: ``BTF.kernel()`` (``PYBPF_BTF_CACHE=0``) then every look-up runqslower's preparation
  makes of the kernel's BTF (CO-RE candidates ``task_struct`` and ``task_struct___*``, their
  members and sizes, ``enum bpf_func_id``, the three ``btf_trace_*`` typedefs down to their
  FUNC_PROTO); peak RSS above a bare interpreter (``-c pass``) and above one that only
  imported ``pybpf.btf``;
* index: ``BTF.kernel()`` then ``name_index()`` (every name of vmlinux -> ids);
* warm: the same look-ups through ``btf_cache.load_cached`` with the cache already written;
* prepare: all of ``prepare(runqslower, BTF.kernel())`` (CO-RE engine included), cold.

    env -u PYTHONDONTWRITEBYTECODE python3 bench/btf_speed.py [N] [--btf FILE]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = r'''
def resolve(btf):
    from pybpf.btf import BTF_KIND_ENUM, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF
    out = []
    cands = btf.find("task_struct") + btf.find_prefix("task_struct___")
    for tid in cands:
        if btf.kind_of(tid) == BTF_KIND_STRUCT:
            t = btf.type(tid)
            for m in t.members:
                if m.name in ("pid", "tgid", "comm", "__state", "state"):
                    out.append((m.name, m.bit_offset, btf.resolve_size(m.type)))
    (enum,) = btf.find("bpf_func_id", BTF_KIND_ENUM)
    out.append([v.value for v in btf.type(enum).values if v.name == "BPF_FUNC_ktime_get_ns"])
    for tp in ("sched_switch", "sched_wakeup", "sched_wakeup_new"):
        (td,) = btf.find("btf_trace_" + tp, BTF_KIND_TYPEDEF)
        proto = btf.type(btf.type(btf.type(td).type).type)
        out.append((tp, len(proto.params)))
    return out
'''

CHILD = {
    "cold": WORKLOAD + r'''
import time, resource
from pybpf.btf import BTF
t = time.perf_counter()
r = resolve(BTF.kernel(PATH))
ms = (time.perf_counter() - t) * 1000
''',
    "index": r'''
import time, resource
from pybpf.btf import BTF
t = time.perf_counter()
n = len(BTF.kernel(PATH).name_index())
ms = (time.perf_counter() - t) * 1000
''',
    "warm": WORKLOAD + r'''
import time, resource
from pybpf.btf import BTF
from pybpf import btf_cache
t = time.perf_counter()
r = resolve(btf_cache.load_cached(PATH, CACHE))
ms = (time.perf_counter() - t) * 1000
''',
    "prepare": r'''
import time, resource
from pybpf.btf import BTF
from pybpf.object import prepare
from pybpf.programs import runqslower
spec = runqslower.build_object()
t = time.perf_counter()
prepare(spec, BTF.kernel(PATH))
ms = (time.perf_counter() - t) * 1000
''',
    "bare": "ms = 0\nimport resource\n",
    "import": "ms = 0\nimport resource\nimport pybpf.btf\n",
}
REPORT = "\nprint(ms, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"


def run(kind: str, path: str, cache: str) -> tuple[float, int]:
    code = f"PATH = {path!r}\nCACHE = {cache!r}\n" + CHILD[kind] + REPORT
    # BTF.kernel() uses the on-disk cache by default: off for the cold measurements
    env = dict(os.environ, PYBPF_BTF_CACHE="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, env=env).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    args = sys.argv[1:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 15
    path = args[args.index("--btf") + 1] if "--btf" in args else "/sys/kernel/btf/vmlinux"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("warning: PYTHONDONTWRITEBYTECODE is set: imports recompile every run")
    with tempfile.TemporaryDirectory() as cache:
        run("warm", path, cache)  # writes the cache (at exit)
        res = {}
        for kind in ("bare", "import", "cold", "index", "warm", "prepare"):
            run(kind, path, cache)  # page cache, bytecode
            res[kind] = [run(kind, path, cache) for _ in range(n)]
    base = statistics.median(r for _, r in res["bare"])
    imp = statistics.median(r for _, r in res["import"])
    print(f"{sys.executable}, {n} runs each, BTF {path}; medians (min-max)")
    for kind in ("cold", "index", "warm", "prepare"):
        ms = sorted(t for t, _ in res[kind])
        rss = statistics.median(r for _, r in res[kind])
        print(f"{kind:8} {statistics.median(ms):7.1f} ms ({ms[0]:.1f}-{ms[-1]:.1f})   "
              f"peak RSS +{(rss - base) / 1024:5.1f} MiB over bare interpreter, "
              f"+{(rss - imp) / 1024:5.1f} MiB over `import pybpf.btf`")


if __name__ == "__main__":
    main()
