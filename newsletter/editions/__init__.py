"""Editions: what an edition carries, how it looks, who gets which copy, and its life.

- ``assemble`` (which articles), ``render`` (one variant), ``compose`` (one
  recipient) are pure: they take plain values and touch neither the database
  nor the network, so they are tested without either and are cheap to benchmark.
- ``creation`` freezes an edition's content and writes its delivery rows (the
  outbox) in one transaction; ``readers()`` there is the one place that keys a
  subscriber to a variant.
- ``preview`` renders a variant with sample personal parts, and sends one test
  message; nothing it does is logged or changes state.
- ``state`` holds every edition state change, each with an audit row.
"""
