"""The reference central's exception tree.

Central builds on the protocol (:mod:`sync`), whose :class:`~sync.errors.ProtocolError` it
also raises and catches; everything central itself refuses derives from
:class:`CentralError` and from the built-in it is closest to. Messages are one line.
"""

from __future__ import annotations


class CentralError(Exception):
    """Base of every error the reference central raises on purpose."""


class VenueExistsError(CentralError, FileExistsError):
    """The output directory already holds files; nothing was written."""


class VenueNameError(CentralError, ValueError):
    """A venue, event or gate name is malformed, duplicated or reserved."""


class EnrolmentError(CentralError, ValueError):
    """A gate's CSR or public keys are unusable, or a photo cannot be enrolled; nothing
    was written."""


class BrokerError(CentralError, RuntimeError):
    """Mosquitto did not start, or a client could not connect, subscribe or publish."""


class DataKeyError(CentralError, ValueError):
    """The central data key (``central-db-key``) is missing, malformed, in a key file open
    to others or owned by someone else, or not the key central.db was written under."""


class StoreError(CentralError, ValueError):
    """central.db holds something central cannot use: a template blob that does not
    decrypt (tampered with or moved), or a database from before encryption at rest."""
