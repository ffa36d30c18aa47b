"""The gate protocol: what central and the gates say to each other over MQTT.

Only the protocol lives here, and it imports nothing else of this repository: the
template types both sides share (:mod:`sync.templates`), the cancelable transform they
both apply (:mod:`sync.protect`), signed envelopes and topics (:mod:`sync.messages`), the
body of every message type (:mod:`sync.schemas`), sealed template payloads
(:mod:`sync.seal`, :mod:`sync.payloads`), the mutual-TLS client settings
(:mod:`sync.tls`) and the AsyncAPI document (``asyncapi.yaml``). The gate's end of the
link is :mod:`gate.link`; the reference central is the ``central`` package.
"""
