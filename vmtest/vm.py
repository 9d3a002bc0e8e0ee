"""One boot, one command: QEMU runs a Debian kernel with this machine's root read-only.

Without KVM (these machines have none usable by a stock kernel) QEMU emulates with TCG, so
what costs time is what the guest does, not the boot (2-4 s): ``mitigations=off`` is passed
because, under TCG, the speculation mitigations make every syscall and 9p request several
times slower, and verifier behaviour does not depend on them for root.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .kernels import KernelImage, VMError, cache_dir

# A TCG CPU model with the extensions distribution userlands expect (x86-64-v2).
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_NO_STATUS = 125  # the guest never reported one: boot or setup failure


@dataclass
class Result:
    kernel: str  # uname -r
    returncode: int
    stdout: bytes
    stderr: bytes
    console: str  # kernel console and init messages
    seconds: float  # wall time, boot included
    boot_seconds: Optional[float] = None  # guest uptime when the command started
    notes: list[str] = field(default_factory=list)


def _guest_path() -> str:
    """The caller's PATH; a pyenv shim's real interpreter first (each shim forks a few shells,
    which costs seconds under TCG)."""
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    python3 = shutil.which("python3") or ""
    if "/shims/" in python3:
        path = f"{Path(os.path.realpath(sys.executable)).parent}:{path}"
    return path


def run(
    image: KernelImage,
    argv: Sequence[str],
    *,
    shares: Sequence[str] = (),
    env: Optional[dict[str, str]] = None,
    cwd: Optional[str] = None,
    timeout: float = 600,
    memory: str = "2G",
    cpus: Optional[int] = None,
    append: str = "",
    stdout: Optional[Callable[[bytes], None]] = None,
    stderr: Optional[Callable[[bytes], None]] = None,
    keep: bool = False,
) -> Result:
    """Boot ``image``, run ``argv`` as root in ``cwd`` (default: ours) and power off.

    ``shares``: host directories mounted read-write at the same path.  ``stdout``/``stderr``
    receive the command's output as it comes (it is also returned)."""
    if not shutil.which("qemu-system-x86_64"):
        raise VMError("needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    runs = cache_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rundir = Path(tempfile.mkdtemp(dir=runs, prefix="run."))
    try:
        ncpu = cpus or min(os.cpu_count() or 1, 4)
        return _run(image, argv, rundir, shares, env or {}, cwd or os.getcwd(), timeout,
                    memory, ncpu, append, stdout, stderr)  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(rundir, ignore_errors=True)


def _run(image: KernelImage, argv: Sequence[str], rundir: Path, shares: Sequence[str],
         env: dict[str, str], cwd: str, timeout: float, memory: str, cpus: int, append: str,
         on_out: Optional[Callable[[bytes], None]],
         on_err: Optional[Callable[[bytes], None]]) -> Result:  # fmt: skip
    exports = {
        "PATH": _guest_path(),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TERM": "dumb",
        "VMTEST_KERNEL": image.release,
        **env,
    }
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"cd {shlex.quote(cwd)} 2>/dev/null || cd /")
    (rundir / "env.sh").write_text("\n".join(lines) + "\n")
    (rundir / "cmd.sh").write_text(shlex.join(argv) + "\n")
    virtfs = [
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={rundir},mount_tag=vmrun,security_model=none",
    ]  # fmt: skip
    resolved = []
    for i, share in enumerate(shares):
        path = os.path.realpath(share)
        if not os.path.isdir(path):
            raise VMError(f"cannot share {share}: not a directory")
        resolved.append(path)
        virtfs += ["-virtfs", f"local,path={path},mount_tag=share{i},security_model=none,"
                   "multidevs=remap"]  # fmt: skip
    (rundir / "shares").write_text("".join(f"{p}\n" for p in resolved))
    files = {name: rundir / name for name in ("console", "out", "err", "qemu.log")}
    for path in files.values():
        path.touch()
    cmd = [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi,tb-size=512", "-cpu", TCG_CPU,
        "-m", memory, "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
        "-kernel", str(image.vmlinux), "-initrd", str(image.initramfs),
        "-append", f"console=ttyS0 panic=-1 loglevel=4 mitigations=off {append}".strip(),
        "-serial", f"file:{files['console']}",
        "-serial", f"file:{files['out']}",
        "-serial", f"file:{files['err']}",
        *virtfs,
    ]  # fmt: skip
    start = time.monotonic()
    with open(files["qemu.log"], "wb") as qlog:
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
    out, err = bytearray(), bytearray()
    timed_out = False
    try:
        with open(files["out"], "rb") as fout, open(files["err"], "rb") as ferr:
            while True:
                done = qemu.poll() is not None
                for f, buf, sink in ((fout, out, on_out), (ferr, err, on_err)):
                    chunk = f.read()
                    if chunk:
                        buf += chunk
                        if sink:
                            sink(chunk)
                if done:
                    break
                if time.monotonic() - start > timeout:
                    timed_out = True
                    qemu.kill()
                time.sleep(0.1)
    finally:
        if qemu.poll() is None:
            qemu.kill()
        qemu.wait()
    seconds = time.monotonic() - start
    console = files["console"].read_text(errors="replace")
    result = Result(image.release, EXIT_NO_STATUS, bytes(out), bytes(err), console, seconds)
    for line in console.splitlines():
        if "vmtest-init[" in line and "exec command" in line:
            result.boot_seconds = float(line.split("[", 1)[1].split("]", 1)[0])
    rc = (rundir / "rc").read_text().strip() if (rundir / "rc").exists() else ""
    if rc:
        result.returncode = int(rc)
    elif timed_out:
        result.returncode = EXIT_TIMEOUT
        result.notes.append(f"timed out after {timeout:.0f} s")
    else:
        tail = "\n".join(console.splitlines()[-25:])
        qtail = files["qemu.log"].read_text(errors="replace").strip()
        result.notes.append(f"the guest reported no exit status (qemu {qemu.returncode}); "
                            f"console tail:\n{tail}\n{qtail}")  # fmt: skip
    return result
