"""Program section names as libbpf reads them: ``SEC("...")`` -> program and attach type.

The table follows libbpf's ``section_defs`` (same names, same order: the first match
wins).  A name ending in ``+`` matches itself or itself followed by ``/...``; a name
ending in ``/`` matches any name it begins; others match exactly.  ``.s`` variants load
sleepable (BPF_F_SLEEPABLE, 5.10), ``xdp.frags`` with BPF_F_XDP_HAS_FRAGS (5.18).  A
leading ``?`` (libbpf 1.0) makes the program not load unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import uapi as _u

BPF_F_SLEEPABLE = 1 << 4
BPF_F_XDP_HAS_FRAGS = 1 << 5

# enum bpf_attach_type (include/uapi/linux/bpf.h): stable UAPI numbers; checked against
# the running kernel's BTF by the tests.
ATTACH_TYPES = (
    "CGROUP_INET_INGRESS CGROUP_INET_EGRESS CGROUP_INET_SOCK_CREATE CGROUP_SOCK_OPS "
    "SK_SKB_STREAM_PARSER SK_SKB_STREAM_VERDICT CGROUP_DEVICE SK_MSG_VERDICT "
    "CGROUP_INET4_BIND CGROUP_INET6_BIND CGROUP_INET4_CONNECT CGROUP_INET6_CONNECT "
    "CGROUP_INET4_POST_BIND CGROUP_INET6_POST_BIND CGROUP_UDP4_SENDMSG CGROUP_UDP6_SENDMSG "
    "LIRC_MODE2 FLOW_DISSECTOR CGROUP_SYSCTL CGROUP_UDP4_RECVMSG CGROUP_UDP6_RECVMSG "
    "CGROUP_GETSOCKOPT CGROUP_SETSOCKOPT TRACE_RAW_TP TRACE_FENTRY TRACE_FEXIT MODIFY_RETURN "
    "LSM_MAC TRACE_ITER CGROUP_INET4_GETPEERNAME CGROUP_INET6_GETPEERNAME "
    "CGROUP_INET4_GETSOCKNAME CGROUP_INET6_GETSOCKNAME XDP_DEVMAP CGROUP_INET_SOCK_RELEASE "
    "XDP_CPUMAP SK_LOOKUP XDP SK_SKB_VERDICT SK_REUSEPORT_SELECT "
    "SK_REUSEPORT_SELECT_OR_MIGRATE PERF_EVENT TRACE_KPROBE_MULTI LSM_CGROUP STRUCT_OPS "
    "NETFILTER TCX_INGRESS TCX_EGRESS TRACE_UPROBE_MULTI CGROUP_UNIX_CONNECT "
    "CGROUP_UNIX_SENDMSG CGROUP_UNIX_RECVMSG CGROUP_UNIX_GETPEERNAME CGROUP_UNIX_GETSOCKNAME "
    "NETKIT_PRIMARY NETKIT_PEER TRACE_KPROBE_SESSION TRACE_UPROBE_SESSION"
).split()
ATTACH = {"BPF_" + name: i for i, name in enumerate(ATTACH_TYPES)}

# (section name, program type, expected attach type, flags); flags: "s" sleepable,
# "f" xdp frags, "b" needs attach_btf_id
_TABLE = """
socket SOCKET_FILTER -
sk_reuseport/migrate SK_REUSEPORT SK_REUSEPORT_SELECT_OR_MIGRATE
sk_reuseport SK_REUSEPORT SK_REUSEPORT_SELECT
kprobe+ KPROBE -
uprobe+ KPROBE -
uprobe.s+ KPROBE - s
kretprobe+ KPROBE -
uretprobe+ KPROBE -
uretprobe.s+ KPROBE - s
kprobe.multi+ KPROBE TRACE_KPROBE_MULTI
kretprobe.multi+ KPROBE TRACE_KPROBE_MULTI
kprobe.session+ KPROBE TRACE_KPROBE_SESSION
uprobe.multi+ KPROBE TRACE_UPROBE_MULTI
uretprobe.multi+ KPROBE TRACE_UPROBE_MULTI
uprobe.session+ KPROBE TRACE_UPROBE_SESSION
uprobe.multi.s+ KPROBE TRACE_UPROBE_MULTI s
uretprobe.multi.s+ KPROBE TRACE_UPROBE_MULTI s
uprobe.session.s+ KPROBE TRACE_UPROBE_SESSION s
ksyscall+ KPROBE -
kretsyscall+ KPROBE -
usdt+ KPROBE -
usdt.s+ KPROBE - s
tc/ingress SCHED_CLS TCX_INGRESS
tc/egress SCHED_CLS TCX_EGRESS
tcx/ingress SCHED_CLS TCX_INGRESS
tcx/egress SCHED_CLS TCX_EGRESS
tc SCHED_CLS -
classifier SCHED_CLS -
action SCHED_ACT -
netkit/primary SCHED_CLS NETKIT_PRIMARY
netkit/peer SCHED_CLS NETKIT_PEER
tracepoint+ TRACEPOINT -
tp+ TRACEPOINT -
tracepoint.s+ TRACEPOINT - s
tp.s+ TRACEPOINT - s
raw_tracepoint+ RAW_TRACEPOINT -
raw_tp+ RAW_TRACEPOINT -
raw_tracepoint.s+ RAW_TRACEPOINT - s
raw_tp.s+ RAW_TRACEPOINT - s
raw_tracepoint.w+ RAW_TRACEPOINT_WRITABLE -
raw_tp.w+ RAW_TRACEPOINT_WRITABLE -
tp_btf+ TRACING TRACE_RAW_TP b
tp_btf.s+ TRACING TRACE_RAW_TP bs
fentry+ TRACING TRACE_FENTRY b
fmod_ret+ TRACING MODIFY_RETURN b
fexit+ TRACING TRACE_FEXIT b
fentry.s+ TRACING TRACE_FENTRY bs
fmod_ret.s+ TRACING MODIFY_RETURN bs
fexit.s+ TRACING TRACE_FEXIT bs
freplace+ EXT - b
lsm+ LSM LSM_MAC b
lsm.s+ LSM LSM_MAC bs
lsm_cgroup+ LSM LSM_CGROUP b
iter+ TRACING TRACE_ITER b
iter.s+ TRACING TRACE_ITER bs
syscall SYSCALL - s
xdp.frags/devmap XDP XDP_DEVMAP f
xdp/devmap XDP XDP_DEVMAP
xdp.frags/cpumap XDP XDP_CPUMAP f
xdp/cpumap XDP XDP_CPUMAP
xdp.frags XDP XDP f
xdp XDP XDP
perf_event PERF_EVENT -
lwt_in LWT_IN -
lwt_out LWT_OUT -
lwt_xmit LWT_XMIT -
lwt_seg6local LWT_SEG6LOCAL -
sockops SOCK_OPS CGROUP_SOCK_OPS
sk_skb/stream_parser SK_SKB SK_SKB_STREAM_PARSER
sk_skb/stream_verdict SK_SKB SK_SKB_STREAM_VERDICT
sk_skb/verdict SK_SKB SK_SKB_VERDICT
sk_skb SK_SKB -
sk_msg SK_MSG SK_MSG_VERDICT
lirc_mode2 LIRC_MODE2 LIRC_MODE2
flow_dissector FLOW_DISSECTOR FLOW_DISSECTOR
cgroup_skb/ingress CGROUP_SKB CGROUP_INET_INGRESS
cgroup_skb/egress CGROUP_SKB CGROUP_INET_EGRESS
cgroup/skb CGROUP_SKB -
cgroup/sock_create CGROUP_SOCK CGROUP_INET_SOCK_CREATE
cgroup/sock_release CGROUP_SOCK CGROUP_INET_SOCK_RELEASE
cgroup/sock CGROUP_SOCK CGROUP_INET_SOCK_CREATE
cgroup/post_bind4 CGROUP_SOCK CGROUP_INET4_POST_BIND
cgroup/post_bind6 CGROUP_SOCK CGROUP_INET6_POST_BIND
cgroup/bind4 CGROUP_SOCK_ADDR CGROUP_INET4_BIND
cgroup/bind6 CGROUP_SOCK_ADDR CGROUP_INET6_BIND
cgroup/connect4 CGROUP_SOCK_ADDR CGROUP_INET4_CONNECT
cgroup/connect6 CGROUP_SOCK_ADDR CGROUP_INET6_CONNECT
cgroup/connect_unix CGROUP_SOCK_ADDR CGROUP_UNIX_CONNECT
cgroup/sendmsg4 CGROUP_SOCK_ADDR CGROUP_UDP4_SENDMSG
cgroup/sendmsg6 CGROUP_SOCK_ADDR CGROUP_UDP6_SENDMSG
cgroup/sendmsg_unix CGROUP_SOCK_ADDR CGROUP_UNIX_SENDMSG
cgroup/recvmsg4 CGROUP_SOCK_ADDR CGROUP_UDP4_RECVMSG
cgroup/recvmsg6 CGROUP_SOCK_ADDR CGROUP_UDP6_RECVMSG
cgroup/recvmsg_unix CGROUP_SOCK_ADDR CGROUP_UNIX_RECVMSG
cgroup/getpeername4 CGROUP_SOCK_ADDR CGROUP_INET4_GETPEERNAME
cgroup/getpeername6 CGROUP_SOCK_ADDR CGROUP_INET6_GETPEERNAME
cgroup/getpeername_unix CGROUP_SOCK_ADDR CGROUP_UNIX_GETPEERNAME
cgroup/getsockname4 CGROUP_SOCK_ADDR CGROUP_INET4_GETSOCKNAME
cgroup/getsockname6 CGROUP_SOCK_ADDR CGROUP_INET6_GETSOCKNAME
cgroup/getsockname_unix CGROUP_SOCK_ADDR CGROUP_UNIX_GETSOCKNAME
cgroup/sysctl CGROUP_SYSCTL CGROUP_SYSCTL
cgroup/getsockopt CGROUP_SOCKOPT CGROUP_GETSOCKOPT
cgroup/setsockopt CGROUP_SOCKOPT CGROUP_SETSOCKOPT
cgroup/dev CGROUP_DEVICE CGROUP_DEVICE
struct_ops+ STRUCT_OPS -
struct_ops.s+ STRUCT_OPS - s
sk_lookup SK_LOOKUP SK_LOOKUP
netfilter NETFILTER NETFILTER
"""


@dataclass(frozen=True)
class SectionDef:
    """What a program section name means to libbpf."""

    pattern: str
    prog_type: int
    expected_attach_type: int
    prog_flags: int
    attach_btf: bool  # the kernel needs attach_btf_id (tracing, LSM, freplace)

    @property
    def kind(self) -> str:
        """The name without ``+``: ``tp_btf``, ``kprobe``, ``xdp.frags/devmap``."""
        return self.pattern.rstrip("+")


def _parse() -> list[SectionDef]:
    out = []
    for line in _TABLE.strip().splitlines():
        name, ptype, atype, *flags = line.split()
        f = flags[0] if flags else ""
        out.append(SectionDef(
            name, getattr(_u, "BPF_PROG_TYPE_" + ptype),
            0 if atype == "-" else ATTACH["BPF_" + atype],
            (BPF_F_SLEEPABLE if "s" in f else 0) | (BPF_F_XDP_HAS_FRAGS if "f" in f else 0),
            "b" in f,
        ))  # fmt: skip
    return out


SECTION_DEFS = _parse()


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("+"):
        prefix = pattern[:-1]
        return name == prefix or name.startswith(prefix + "/")
    if pattern.endswith("/"):
        return name.startswith(pattern)
    return name == pattern


def find_section_def(section: str) -> Optional[SectionDef]:
    """libbpf's ``find_sec_def``: the definition for a section name (``?`` stripped)."""
    name = section[1:] if section.startswith("?") else section
    for d in SECTION_DEFS:
        if _matches(d.pattern, name):
            return d
    return None


def attach_target(section: str) -> str:
    """What follows the kind: ``sched_switch`` of ``tp_btf/sched_switch``."""
    name = section[1:] if section.startswith("?") else section
    return name.split("/", 1)[1] if "/" in name else ""
