"""BPF maps from user space alone, with no program: create, typed access, per-CPU values,
batches, freezing and pinning.  Run it as root: ``python docs/examples/maps_tour.py``.

With ``--keep DIR`` the hash map stays pinned at ``DIR/tour_hash`` after the script exits, for
``bpftool map dump pinned DIR/tour_hash``; remove the file to free it.  ``DIR`` is a bpffs
(``/sys/fs/bpf``, or any directory, where one is then mounted).
"""

from __future__ import annotations

import argparse
import os
import struct

from pybpf.errors import BPFSyscallError
from pybpf.maps import Map, mount_bpffs
from pybpf.object import MapSpec
from pybpf.uapi import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="leave the hash map pinned in DIR, a bpffs")
    args = parser.parse_args()

    # A hash map of u32 -> (u64, u32): typed with struct formats, used as a dict.
    spec = MapSpec("tour_hash", BPF_MAP_TYPE_HASH, 4, 16, 64)
    with Map.create(spec, key_type="I", value_type="QI4x") as h:
        h[1] = (100, 7)
        h[2] = (200, 8)
        print("hash:", sorted(h.typed_items()), "len", len(h), "2 in h:", 2 in h)
        del h[1]
        print("after del:", dict(h.typed_items()), "get(1):", h.get(1))

        # Batches (Linux 5.6): one syscall for many elements.
        h.update_batch((k, (k * k, k)) for k in range(10, 15))
        print("batch:", sorted(k for k, _ in h.lookup_batch()))
        print("deleted:", h.delete_batch([10, 11]), "left:", sorted(h))

        # The raw level: bytes of the key and value sizes, as the kernel copies them.
        print("raw:", h.lookup(struct.pack("I", 12)))

        # Pinning (4.4): the map outlives this process until its bpffs file is removed.
        if args.keep:
            mount_bpffs(args.keep)  # unless one is mounted there already
            path = os.path.join(args.keep, "tour_hash")
            h.pin(path)
            with Map.from_pin(path, "I", "QI4x") as again:
                print("pinned:", path, "id", again.info().id, "sees", sorted(again))

    # A per-CPU array: a value per possible CPU (reads give a list; a scalar writes all).
    with Map.create(MapSpec("tour_percpu", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1),
                    "I", "Q") as pc:  # fmt: skip
        pc[0] = 5
        values = pc[0]
        print("per-CPU:", len(values), "CPUs, all 5:", values == [5] * len(values))
        pc[0] = list(range(len(values)))
        print("per-CPU set one by one:", pc[0] == list(range(len(values))))

    # Freezing (5.2): user space can no longer write (programs still can, unless the map
    # is also BPF_F_RDONLY_PROG, as pybpf's .rodata is).
    with Map.create(MapSpec("tour_array", BPF_MAP_TYPE_ARRAY, 4, 8, 4),
                    "I", "Q") as arr:  # fmt: skip
        arr[3] = 42
        arr.freeze()
        try:
            arr[3] = 43
        except BPFSyscallError as err:
            print("frozen:", arr[3], "write refused:", os.strerror(err.errno))


if __name__ == "__main__":
    main()
