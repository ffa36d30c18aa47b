"""The gate's end of the link to central (the protocol itself is :mod:`sync`).

:mod:`~gate.link.link` joins the parts: :mod:`~gate.link.base` is the transport
contract and :mod:`~gate.link.mqtt` its MQTT implementation (the only module here that
imports paho); :mod:`~gate.link.handler` applies central's messages to the template
cache; :mod:`~gate.link.state` is the durable SQLite state (outbox, sequence numbers,
entry log, central's keys); :mod:`~gate.link.local` is the entry log of a gate without a
link.
"""
