"""Simulation rigs: the real gate in a simulated world.

:mod:`~gate.sim.lane` drives the real runtime with gpiozero's mock pins and the replay
camera; :mod:`~gate.sim.venue` opens a gate of a venue provisioned on this machine (or a
lone gate with fresh keys); :mod:`~gate.sim.process` runs such a gate as a process of
its own; :mod:`~gate.sim.demo` is ``make demo``. Nothing here imports the reference
central: where the demo needs it, it runs it as other processes.
"""
