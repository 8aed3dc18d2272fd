"""Benchmarks: raw physical limits (``m_*.py``) and engine measurements (``engine_*.py``).

Run ``python -m bench --help``; see bench/README.md.
"""
