"""Benchmarks of the firmware, each reporting the figures its issue names.

:mod:`~gate.bench.pipeline` (``gatectl bench``, ``make bench``): per-stage latency and
memory of the face pipeline; :mod:`~gate.bench.store` (``gatectl bench --store``): 1:N
search, cache load and changes at scale; :mod:`~gate.bench.lane` (``make bench-lane``):
the whole lane in simulation; :mod:`~gate.bench.peer` (``make bench-peer``): side by side
with ``face_recognition``. The protocol's own benchmark times central's side and lives
with the reference central (``central.bench``, ``make bench-sync``).
"""
