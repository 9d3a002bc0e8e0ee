"""BPF programs written with the pybpf DSL, shipped as ``pybpf.programs``."""
