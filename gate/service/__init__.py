"""The gate as a long-running systemd service.

:mod:`~gate.service.daemon` assembles config, models, keys, cache, camera, pins and the
MQTT link, then runs the lane; :mod:`~gate.service.notify` speaks systemd's notify
protocol (READY, WATCHDOG, STATUS, STOPPING); :mod:`~gate.service.harden` switches off
core dumps and locks memory; :mod:`~gate.service.control` is the local, permission-
restricted unix socket that ``gatectl status`` and friends talk to.
"""
