"""The reference central: the other end of the gate protocol, for integrators and tests.

Not part of the gate firmware (it has its own distribution, ``facepass-central``, and
console script): :mod:`~central.core` publishes templates, revocations and commands and
collects events, receipts and status; :mod:`~central.atrest` keeps its templates
encrypted in central.db; :mod:`~central.pki` provisions a venue (CA, certificates, keys,
broker config); :mod:`~central.broker` runs a local Mosquitto for it;
:mod:`~central.enrol` turns photos into templates; :mod:`~central.cli` is the command
line and :mod:`~central.bench` the protocol benchmark. It builds on the protocol
(:mod:`sync`) only; :mod:`central.enrol` alone borrows the gate's face pipeline, so both
ends embed faces with the same model.
"""
