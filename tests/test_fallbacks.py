"""Every fallback path, driven by a scripted kernel (tests/fake_kernel.py).

The running kernel takes one branch of each choice (it has BPF_LINK_CREATE, a log_true_size,
perf links); these tests make the calls fail the way older or stricter kernels do and check
the exact sequence of calls pybpf makes then, and what it tells the user.
"""

from __future__ import annotations

import ctypes
import errno

import pytest
from fake_kernel import FD, fake_kernel

from pybpf import probes
from pybpf import syscall as S
from pybpf.errors import BPFSyscallError, VerifierError
from pybpf.loader import attach_all
from pybpf.object import PreparedProgram
from pybpf.uapi import BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP

EXIT0 = bytes.fromhex("b700000000000000" "9500000000000000")
OLD_KERNEL_ERRNOS = [errno.EINVAL, errno.EOPNOTSUPP, S.ENOTSUPP]


def tp_btf_program() -> PreparedProgram:
    return PreparedProgram(
        name="handle", section="tp_btf/sched_switch", prog_type=BPF_PROG_TYPE_TRACING,
        expected_attach_type=BPF_TRACE_RAW_TP, attach_btf_id=1, attach_point="sched_switch",
        insns=[], license="GPL", relocations=[], core_relos=[],
    )  # fmt: skip


def null_fd() -> S.FD:
    import os

    return S.FD(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))


# --- attaching ------------------------------------------------------------------------------


@pytest.mark.parametrize("err", OLD_KERNEL_ERRNOS, ids=S._errname)
def test_tracing_link_falls_back_to_raw_tracepoint_open(err: int) -> None:
    """Before 5.10 BPF_LINK_CREATE does not take tracing programs: BPF_RAW_TRACEPOINT_OPEN
    with no name attaches a tp_btf program (5.5)."""
    names = []

    def open_tp(attr: S.RawTracepointAttr, size: int) -> object:
        names.append(attr.name)
        return FD

    with null_fd() as prog, fake_kernel({"BPF_LINK_CREATE": [-err],
                                         "BPF_RAW_TRACEPOINT_OPEN": [open_tp]}) as k:  # fmt: skip
        links = attach_all(tp_btf_program(), prog)
    assert k.calls == ["BPF_LINK_CREATE", "BPF_RAW_TRACEPOINT_OPEN"]
    assert names == [0]  # no tracepoint name: the program's attach_btf_id says where
    assert len(links) == 1
    links[0].close()


def test_tracing_link_refused_for_another_reason_is_not_retried() -> None:
    with null_fd() as prog, fake_kernel({"BPF_LINK_CREATE": [-errno.EPERM]}) as k:
        with pytest.raises(BPFSyscallError) as exc:
            attach_all(tp_btf_program(), prog)
    assert k.calls == ["BPF_LINK_CREATE"]
    assert exc.value.errno == errno.EPERM and "BPF_LINK_CREATE" in str(exc.value)


def test_raw_tp_attaches_by_name() -> None:
    prog_spec = tp_btf_program()
    prog_spec.prog_type, prog_spec.section = BPF_PROG_TYPE_RAW_TRACEPOINT, "raw_tp/sched_switch"
    seen = []

    def open_tp(attr: S.RawTracepointAttr, size: int) -> object:
        seen.append(ctypes.string_at(attr.name))
        return FD

    with null_fd() as prog, fake_kernel({"BPF_RAW_TRACEPOINT_OPEN": [open_tp]}) as k:
        links = attach_all(prog_spec, prog)
    assert k.calls == ["BPF_RAW_TRACEPOINT_OPEN"] and seen == [b"sched_switch"]
    links[0].close()


SET_BPF = f"ioctl:{S.PERF_EVENT_IOC_SET_BPF:#x}"
ENABLE = f"ioctl:{S.PERF_EVENT_IOC_ENABLE:#x}"


@pytest.mark.parametrize("err", OLD_KERNEL_ERRNOS, ids=S._errname)
def test_perf_event_link_falls_back_to_ioctls(err: int) -> None:
    """BPF_PERF_EVENT links are 5.15: before, PERF_EVENT_IOC_SET_BPF then _ENABLE, and the
    perf event fd itself keeps the program attached."""
    from pybpf.loader import _attach_perf_event

    with null_fd() as prog, fake_kernel({"BPF_LINK_CREATE": [-err], SET_BPF: [0],
                                         ENABLE: [0]}) as k:  # fmt: skip
        event = null_fd()
        fds = _attach_perf_event(prog, event)
    assert k.calls == ["BPF_LINK_CREATE", SET_BPF, ENABLE]
    assert fds == [event] and not event.closed
    event.close()


def test_perf_event_link_used_when_the_kernel_has_it() -> None:
    from pybpf.loader import _attach_perf_event

    with null_fd() as prog, fake_kernel({"BPF_LINK_CREATE": [FD]}) as k:
        event = null_fd()
        fds = _attach_perf_event(prog, event)
    assert k.calls == ["BPF_LINK_CREATE"] and fds[1] is event
    for fd in fds:
        fd.close()


def test_failed_ioctl_closes_the_perf_event() -> None:
    """Nothing stays open (or attached) when the old path fails half way."""
    from pybpf.loader import _attach_perf_event

    with null_fd() as prog, fake_kernel({"BPF_LINK_CREATE": [-errno.EINVAL],
                                         SET_BPF: [-errno.EINVAL]}):  # fmt: skip
        event = null_fd()
        with pytest.raises(BPFSyscallError, match="ioctl"):
            _attach_perf_event(prog, event)
    assert event.closed


# --- verifier log -----------------------------------------------------------------------------

LOG = b"0: R1=ctx() R10=fp0\n0: (61) r0 = *(u32 *)(r1 +9999)\ninvalid bpf_context access off=9999 size=4\nprocessed 1 insns (limit 1000000)\n"  # noqa: E501


def write_log(attr: S.ProgLoadAttr, text: bytes) -> None:
    n = min(len(text), attr.log_size - 1)
    ctypes.memmove(attr.log_buf, text[:n] + b"\0", n + 1)


def test_log_grows_to_the_size_the_kernel_asks_for() -> None:
    """6.4+: a short log fails with ENOSPC and log_true_size says what is needed; the
    second try with that size gets the whole log, whose last real line is the message."""
    sizes = []

    def too_small(attr: S.ProgLoadAttr, size: int) -> int:
        sizes.append(attr.log_size)
        write_log(attr, LOG)
        attr.log_true_size = 1 << 20
        return -errno.ENOSPC

    def rejected(attr: S.ProgLoadAttr, size: int) -> int:
        sizes.append(attr.log_size)
        write_log(attr, LOG)
        return -errno.EACCES

    with fake_kernel({"BPF_PROG_LOAD": [-errno.EACCES, too_small, rejected]}) as k:
        with pytest.raises(VerifierError) as exc:
            S.prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, EXIT0, log_size=4096)
    assert k.calls == ["BPF_PROG_LOAD"] * 3
    assert sizes == [4096, (1 << 20) + 1]
    assert exc.value.log == LOG.decode() and exc.value.errno == errno.EACCES
    assert str(exc.value).endswith("invalid bpf_context access off=9999 size=4")


def test_log_doubles_on_kernels_that_do_not_say_the_size() -> None:
    """Before 6.4 log_true_size stays 0: the buffer doubles until the log fits."""
    sizes = []

    def answer(attr: S.ProgLoadAttr, size: int) -> int:
        sizes.append(attr.log_size)
        write_log(attr, LOG)
        return -errno.ENOSPC if attr.log_size < 512 else -errno.EACCES

    with fake_kernel({"BPF_PROG_LOAD": [-errno.EINVAL] + [answer] * 4}):
        with pytest.raises(VerifierError):
            S.prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, EXIT0, log_size=128)
    assert sizes == [128, 256, 512]


def test_permission_error_is_not_retried_with_a_log() -> None:
    with fake_kernel({"BPF_PROG_LOAD": [-errno.EPERM]}) as k:
        with pytest.raises(BPFSyscallError) as exc:
            S.prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, EXIT0)
    assert k.calls == ["BPF_PROG_LOAD"] and not isinstance(exc.value, VerifierError)


def test_failure_without_a_log_is_a_plain_syscall_error() -> None:
    """Bad attributes fail before the verifier runs: no log, so no VerifierError."""
    with fake_kernel({"BPF_PROG_LOAD": [-errno.E2BIG, -errno.E2BIG]}):
        with pytest.raises(BPFSyscallError) as exc:
            S.prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, EXIT0)
    assert not isinstance(exc.value, VerifierError)
    assert "too old for the feature" in str(exc.value)


# --- probes -----------------------------------------------------------------------------------


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    probes.reset_cache()
    yield
    probes.reset_cache()


def test_refusal_without_privilege_is_inconclusive_and_not_cached(
    fresh_probes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "privileged", lambda: False)
    with fake_kernel({"BPF_MAP_CREATE": [-errno.EPERM, FD]}) as k:
        with pytest.raises(probes.Inconclusive, match="cannot tell whether .* has ringbuf"):
            probes.have_ringbuf()
        assert probes.have_ringbuf() is True  # asked again, not a cached "missing"
    assert k.calls == ["BPF_MAP_CREATE"] * 2


def test_refusal_with_privilege_means_missing_and_is_cached(
    fresh_probes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "privileged", lambda: True)
    with fake_kernel({"BPF_MAP_CREATE": [-errno.EPERM]}) as k:
        assert probes.have_ringbuf() is False
        assert probes.have_ringbuf() is False
    assert k.calls == ["BPF_MAP_CREATE"]


def test_probe_all_reports_inconclusive_as_none(
    fresh_probes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "privileged", lambda: False)
    monkeypatch.setattr(probes, "_PROBES", {"ringbuf": probes._PROBES["ringbuf"],
                                            "btf": probes._PROBES["btf"]})  # fmt: skip
    with fake_kernel({"BPF_MAP_CREATE": [-errno.EPERM], "BPF_BTF_LOAD": [FD]}):
        assert probes.probe_all() == {"ringbuf": None, "btf": True}


@pytest.mark.parametrize(("answer", "memcg"), [(FD, True), (-errno.EPERM, False)])
def test_memcg_accounting_is_asked_with_a_zero_memlock_limit(
    fresh_probes: None, monkeypatch: pytest.MonkeyPatch, answer: object, memcg: bool
) -> None:
    """Before 5.11 a map is charged to RLIMIT_MEMLOCK (EPERM at a limit of 0, root or not);
    the limit is back as it was afterwards."""
    import resource

    monkeypatch.setattr(probes, "privileged", lambda: True)
    before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limits = []

    def create(attr: S.MapCreateAttr, size: int) -> object:
        limits.append(resource.getrlimit(resource.RLIMIT_MEMLOCK)[0])
        return answer

    with fake_kernel({"BPF_MAP_CREATE": [create]}):
        assert probes.have_memcg_accounting() is memcg
    assert limits == [0] and resource.getrlimit(resource.RLIMIT_MEMLOCK) == before
