"""The broker ties each client id to its certificate's CN (``use_username_as_clientid``).

Without it, any certificate of the venue could connect with another gate's client id:
Mosquitto then closes the older connection with that id (a session takeover) and, with a
clean start, drops its session, so a revocation central sent meanwhile was lost to the
real gate. Checked against a real Mosquitto with the config central.pki writes.
"""

from __future__ import annotations

import queue
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import broker as tb
from tests.central.conftest import Site, T, wait_for
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "broker identity"
REVOCATIONS = f"{T}/gate-1/revocations"


@dataclass
class Live:
    """gate-1, central and admin connected as the running system would be."""

    site: Site
    gate1: mqtt.Client
    gate1_inbox: queue.Queue[mqtt.MQTTMessage]
    central: mqtt.Client
    admin: mqtt.Client

    def healthy(self) -> dict[str, list[str]]:
        """Disconnections each legitimate client suffered (all empty when healthy)."""
        return {name: list(tb.disconnections(c)) for name, c in
                (("gate-1", self.gate1), ("central", self.central), ("admin", self.admin))}


@pytest.fixture(scope="module")
def live(site: Site) -> Iterator[Live]:
    gate1 = tb.connect(site.dir, "gate-1", client_id="gate-1", clean_start=False)
    inbox, code = tb.subscribe(gate1, REVOCATIONS)
    assert not code.is_failure
    central = tb.connect(site.dir, "central", client_id="central", clean_start=False)
    admin = tb.connect(site.dir, "admin", client_id="admin")
    yield Live(site, gate1, inbox, central, admin)
    for c in (gate1, central, admin):
        tb.close(c)


def impersonate(live: Live, cert: str, client_id: str, *, clean_start: bool = True) -> None:
    """Connect with ``cert`` and ``client_id``, and while connected have central publish a
    revocation to gate-1: gate-1 must get it, and nobody legitimate may be disconnected."""
    assert live.healthy() == {"gate-1": [], "central": [], "admin": []}
    impostor = tb.connect(live.site.dir, cert, client_id=client_id, clean_start=clean_start)
    try:
        payload = f"revocation {secrets.token_hex(4)}".encode()
        assert not tb.publish(live.central, REVOCATIONS, payload).is_failure
        got = live.gate1_inbox.get(timeout=5)
        assert got.payload == payload
        assert tb.subscribe(impostor, f"{T}/+/status")[1] is not None  # it is connected
    finally:
        tb.close(impostor)
    assert live.healthy() == {"gate-1": [], "central": [], "admin": []}


@pytest.mark.parametrize("client_id", ["gate-1", "", "central", "admin", "gate-1 ", "GATE-1",
                                       "gate-1/x", "gate-2", "x" * 23, "x" * 200])
@pytest.mark.parametrize("clean_start", [True, False])
def test_another_gates_certificate_cannot_take_gate_1s_client_id(live, ledger: Ledger,
                                                                 client_id, clean_start):
    with ledger.case(CLASS):
        impersonate(live, "gate-2", client_id, clean_start=clean_start)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client_id=st.one_of(
    st.sampled_from(["gate-1", "central", "admin", ""]),
    st.text(string.ascii_letters + string.digits + "-_.:/ ", min_size=1, max_size=64),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)))
def test_random_client_ids_never_disconnect_gate_1(live, ledger: Ledger, client_id):
    with ledger.case(CLASS):
        impersonate(live, "gate-2", client_id)


def test_the_client_id_is_the_certificate_cn(live, ledger: Ledger):
    """The other side of the same rule: whatever id it asks for, a client gets its CN, so
    a second connection with one certificate replaces the first (one connection per
    certificate: a gate's diagnostics must not connect while the gate is online)."""
    with ledger.case(CLASS):
        gate2 = tb.connect(live.site.dir, "gate-2", client_id="gate-2", clean_start=False)
        try:
            second = tb.connect(live.site.dir, "gate-2", client_id="anything-else")
            try:
                wait_for(lambda: tb.disconnections(gate2), 5,
                         "a second connection with gate-2's certificate to replace the first")
            finally:
                tb.close(second)
        finally:
            gate2.loop_stop()  # before paho reconnects it
            tb.close(gate2)
        assert live.healthy() == {"gate-1": [], "central": [], "admin": []}


def test_the_acl_stays_per_cn_whatever_the_client_id(live, ledger: Ledger):
    """gate-2's certificate under gate-1's id still has gate-2's rights, not gate-1's."""
    with ledger.case(CLASS):
        impostor = tb.connect(live.site.dir, "gate-2", client_id="gate-1")
        try:
            stolen, _ = tb.subscribe(impostor, REVOCATIONS)
            assert tb.publish(impostor, f"{T}/gate-1/events", b"forged").value == 0x87
            assert not tb.publish(live.central, REVOCATIONS, b"for gate-1 only").is_failure
            assert live.gate1_inbox.get(timeout=5).payload == b"for gate-1 only"
            with pytest.raises(queue.Empty):
                stolen.get(timeout=0.5)
        finally:
            tb.close(impostor)
        assert live.healthy() == {"gate-1": [], "central": [], "admin": []}
