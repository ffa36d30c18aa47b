"""The TFLite inference runtime, behind one small class.

Backends are tried in order, each in its own module that alone imports its library:
``ai_edge_litert`` (the maintained runtime, numpy 2 ready) first, then
``tflite_runtime`` (the product card's package; needs numpy < 2). The rest of the
firmware never imports either. Which backend loaded is logged once, and a fallback is
logged as a warning, the way gpiozero reports pin-factory fallbacks.

Models are loaded from bytes that the caller already verified against the manifest
(:mod:`gate.models`), so the file cannot change between hashing and loading.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gate.errors import ModelError, RuntimeBackendError
from gate.types import Array

log = logging.getLogger(__name__)

#: Backend name -> module (relative to this package) that builds its interpreter.
BACKENDS: dict[str, str] = {
    "ai_edge_litert": ".litert",
    "tflite_runtime": ".tflite",
}


def _make_interpreter(content: bytes, threads: int, backend: str) -> tuple[Any, str]:
    """Build an interpreter with the named backend, or the first that imports."""
    if backend != "auto" and backend not in BACKENDS:
        raise RuntimeBackendError(f"unknown inference backend {backend!r}")
    order = list(BACKENDS) if backend == "auto" else [backend]
    failures = []
    for name in order:
        try:
            module = importlib.import_module(BACKENDS[name], __name__)
            interpreter = module.make_interpreter(content, threads)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            if backend == "auto" and name != order[-1]:
                log.warning("inference backend %s unavailable (%s); trying the next", name, exc)
            continue
        return interpreter, name
    raise RuntimeBackendError(
        "no TFLite runtime could be loaded (" + "; ".join(failures)
        + "); install ai-edge-litert or tflite-runtime"
    )


class Model:
    """A loaded TFLite model with one input and one or more outputs.

    ``run(x)`` copies ``x`` into the input tensor, invokes, and returns copies of the
    outputs keyed by tensor name. ``wipe()``
    zero-fills the interpreter's own input and output buffers, which otherwise keep
    the last face crop and embedding in memory (promise P2).
    """

    def __init__(self, content: bytes, *, name: str, threads: int = 2,
                 backend: str = "auto") -> None:
        self.name = name
        self.threads = threads
        #: Milliseconds the last :meth:`run` spent inside the runtime's ``invoke``.
        self.invoke_ms = 0.0
        try:
            self._it, self.backend = _make_interpreter(content, threads, backend)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{name}: not a loadable TFLite model ({first}); run `make models`"
                             ) from None
        self._refresh_details()

    def _refresh_details(self) -> None:
        inputs = self._it.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.name}: expected one input tensor, found {len(inputs)}")
        self._in = inputs[0]
        self._outs = sorted(self._it.get_output_details(), key=lambda d: d["index"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the input tensor, batch first."""
        return tuple(int(v) for v in self._in["shape"])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        """Numpy dtype of the input tensor."""
        return np.dtype(self._in["dtype"])

    @property
    def output_names(self) -> list[str]:
        """Output tensor names in tensor-index order."""
        return [str(d["name"]) for d in self._outs]

    def output_shapes(self) -> list[tuple[int, ...]]:
        """Output tensor shapes in tensor-index order."""
        return [tuple(int(v) for v in d["shape"]) for d in self._outs]

    def tensor_details(self) -> list[dict[str, Any]]:
        """Every tensor's details (name, dtype, shape, quantization) from the runtime."""
        details: list[dict[str, Any]] = self._it.get_tensor_details()
        return details

    def resize_batch(self, batch: int) -> None:
        """Resize the input's leading (batch) dimension and reallocate."""
        shape = list(self.input_shape)
        if shape[0] == batch:
            return
        shape[0] = batch
        self._it.resize_tensor_input(self._in["index"], shape)
        self._it.allocate_tensors()
        self._refresh_details()

    def run(self, x: Array) -> dict[str, Array]:
        """Run one inference; returns outputs by tensor name (copies owned by the caller)."""
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"{self.name}: input shape {x.shape} != {self.input_shape}")
        self._it.set_tensor(self._in["index"], x)
        return self._invoke()

    def run_into(self, fill: Callable[[Array], None]) -> dict[str, Array]:
        """Like :meth:`run`, but ``fill`` writes the input straight into the interpreter's
        input tensor (batch first): no buffer of our own to fill, copy and wipe. ``fill``
        must not keep the array it is given (the runtime refuses to run while a view of
        its memory is alive)."""
        view = self._it.tensor(self._in["index"])
        fill(view())
        del view
        return self._invoke()

    def _invoke(self) -> dict[str, Array]:
        t = time.perf_counter()
        self._it.invoke()
        self.invoke_ms = (time.perf_counter() - t) * 1000.0
        return {str(d["name"]): self._it.get_tensor(d["index"]) for d in self._outs}

    def wipe(self) -> None:
        """Zero-fill the interpreter's input and output tensors."""
        for detail in (self._in, *self._outs):
            view = self._it.tensor(detail["index"])
            view().fill(0)
            del view

    def read_tensor(self, index: int) -> Array:
        """Copy of a tensor by index (tests use it to check that wipes happened)."""
        value: Array = self._it.get_tensor(index)
        return value.copy()

    @property
    def io_indices(self) -> Sequence[int]:
        """Tensor indices of the input and outputs."""
        return [int(self._in["index"]), *(int(d["index"]) for d in self._outs)]
