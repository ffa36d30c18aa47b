"""Tools a technician runs on a gate, apart from the lane: the installer
(:mod:`~gate.tools.install`, standard library only), the gate's own key generation
(:mod:`~gate.tools.keygen`) and the camera-aiming read-out (:mod:`~gate.tools.aim`)."""
