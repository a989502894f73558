"""Kernel micro-benchmarks (pytest-benchmark): every kernel's speed as a ratio to
memcpy of the same bytes, so a regression in a kernel shows as a ratio.

Run from the repository root:  python -m bench.micro [--quick]   (see README.md)
"""
