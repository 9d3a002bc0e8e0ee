"""The kernel under test is the one the offline tests relocate against.

``btf/`` holds the BTF of the kernels the matrix boots (``python -m vmtest matrix``); when the
running kernel is one of them, its ``/sys/kernel/btf/vmlinux`` must be that file byte for
byte, so offline relocation against ``btf/`` is relocation for these real kernels.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from pathlib import Path

import pytest

BTF_DIR = Path(__file__).resolve().parent.parent / "btf"


@pytest.mark.kernel
def test_running_kernel_btf_is_the_one_in_btf_dir(need_root: None) -> None:
    release = os.uname().release
    files = sorted(BTF_DIR.glob(f"*-{release}.btf.xz"))
    if not files:
        pytest.skip(f"no btf/*-{release}.btf.xz for this kernel")
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        running = hashlib.sha256(f.read()).hexdigest()
    assert hashlib.sha256(lzma.open(files[0]).read()).hexdigest() == running, files[0]
