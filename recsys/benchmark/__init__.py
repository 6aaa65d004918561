"""Benchmarks: the synthetic shop and its hidden truth, evaluation against that truth, and the
many-nights simulator. The only readers of the truth.
"""
