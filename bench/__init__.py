"""Benchmarks of pas against simple baselines (not part of the installed package).

Run from the repository root:  python -m bench.core [--quick]
"""
