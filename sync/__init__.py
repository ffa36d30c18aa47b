"""MQTT sync with the central event system (templates in; entry events, receipts and
status out). The protocol, the gate-side client and the reference central live here;
they are built on the template store, so this package is still empty."""
