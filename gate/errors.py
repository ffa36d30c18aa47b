"""One exception tree for the whole firmware.

Every error the gate raises on purpose derives from :class:`GateError` and also from
the built-in exception it is closest to, so callers can catch either. Messages are a
single line that says what is wrong and, where there is one, what fixes it: the
technician reads them in ``gatectl`` and in ``systemctl status``. Messages never
contain attendee ids, images or embeddings (promise P10).
"""

from __future__ import annotations


class GateError(Exception):
    """Base of every error raised by the gate firmware."""


class ConfigError(GateError, ValueError):
    """The configuration is invalid; ``path`` names the offending key."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class ModelError(GateError, RuntimeError):
    """A model file is missing, corrupt or not the pinned one."""


class ModelMissingError(ModelError, FileNotFoundError):
    """A model file named in the manifest is not on disk."""


class ModelHashError(ModelError):
    """A model file's sha256 differs from the committed manifest."""


class RuntimeBackendError(GateError, ImportError):
    """No usable TFLite runtime (ai_edge_litert or tflite_runtime) is installed."""


class ImageError(GateError, ValueError):
    """An input image cannot be decoded or is not a usable picture."""


class EvalError(GateError, ValueError):
    """An evaluation dataset or pairs file is malformed."""


class TemplateError(GateError, ValueError):
    """A template, attendee id or lifecycle value is invalid; nothing was changed."""


class CacheError(GateError, RuntimeError):
    """The encrypted template cache is missing, tampered, truncated or of another key.

    The gate fails closed on it: nobody is matched until a verified cache arrives.
    """


class StorageError(CacheError):
    """The cache's files could not be written (disk full, I/O error, read-only).

    Nothing on disk was corrupted by the failed write (a partial journal record is cut
    back off, a snapshot is written beside the old one): the change waits in RAM and is
    retried. Raised to a caller only when a change cannot even wait (too many waiting).
    ``problem`` is the short cause for a status line ("disk full", "I/O error").
    """

    def __init__(self, message: str, problem: str = "storage error") -> None:
        super().__init__(message)
        self.problem = problem


class KeyMaterialError(GateError, PermissionError):
    """A key is missing, malformed or stored with unsafe permissions or ownership."""


class ProtocolError(GateError, ValueError):
    """An MQTT message is malformed, unsigned, stale or not meant for this gate.

    The message is dropped (logged in one line without its content, counted in status);
    the cache and the outbox are not touched.
    """


class ServiceError(GateError, RuntimeError):
    """The running gate service refused a request or answered nonsense."""


class ServiceNotRunningError(ServiceError, ConnectionError):
    """No gate service answers on the control socket."""


class StateError(GateError, OSError):
    """The link's durable state (SQLite) cannot be read or written: disk full, damaged.

    The link keeps what it could not write in RAM, says so in status, and retries.
    """
