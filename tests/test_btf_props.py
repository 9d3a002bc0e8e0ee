"""Property tests of the encoder and parser: parse(encode(x)) == x for generated types of
every kind, both byte orders, and for every type of real kernel BTF re-encoded."""

from __future__ import annotations

import lzma
from pathlib import Path

from btf_strategies import any_types, kernel_types
from hypothesis import HealthCheck, given, settings

from pybpf.btf import BTF, BTF_KIND_ENUM, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF, BTF_KIND_UNION
from pybpf.btf_dump import dump_raw
from pybpf.btf_encoder import BTFBuilder
from pybpf.btf_show import show

ROOT = Path(__file__).resolve().parent.parent


def encode(types: list, order: str = "little") -> bytes:
    b = BTFBuilder()
    for t in types:
        assert b.add_type(t) == t.id
    return b.encode(order)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_types())
def test_parse_encode_any(types: list) -> None:
    for order in ("little", "big"):
        btf = BTF.from_bytes(encode(types, order))
        assert len(btf) == len(types) + 1
        assert list(btf.iter_types()) == types
        for t in types:  # name look-up agrees with the list
            if "\0" not in t.name:
                assert t.id in btf.find(t.name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_types())
def test_parse_encode_kernel_like(types: list) -> None:
    btf = BTF.from_bytes(encode(types))
    assert list(btf.iter_types()) == types
    lines = list(dump_raw(btf))
    assert sum(line.startswith("[") for line in lines) == len(types)
    for t in types:  # the viewer handles whatever the encoder built
        if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_TYPEDEF):
            assert show(btf, str(t.id))


def test_real_blob_reencoded() -> None:
    """Every type of a real kernel's BTF survives add_type -> encode -> parse."""
    btf = BTF.from_bytes(lzma.decompress(
        (ROOT / "btf" / "debian-5.10.0-46-amd64.btf.xz").read_bytes()))
    types = list(btf.iter_types())
    again = BTF.from_bytes(encode(types))
    assert len(again) == len(btf)
    assert list(again.iter_types()) == types
