"""The measurements: each script prints a table, writes JSON to results/ and its block of benchmarks/README.md.

Run from the repository root as modules, e.g. `.venv/bin/python -m benchmarks.footage --model DIR`.
"""
