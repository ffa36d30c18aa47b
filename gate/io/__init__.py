"""The lane's GPIO devices (gpiozero, with an injected pin factory): see
:mod:`gate.io.devices`."""
