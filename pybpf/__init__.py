"""pybpf: a pure-Python eBPF toolkit with CO-RE and no compiler."""

__version__ = "0.1.0"
