"""Editions: assemble (which articles), render (one variant), compose (one recipient).

All three are pure: they take plain values and touch neither the database nor
the network, so they are tested without either and are cheap to benchmark.
"""
