"""Build a one-layer TFLite model: float probe × int8 matrix → float scores.

The 1:N matcher's coarse pass at large gallery sizes. A dynamic-range FULLY_CONNECTED
op with int8 weights (one scale per row) reads a quarter of the bytes a float32
matrix-vector product does, which is what bounds 1:N search at 100k templates. The
flatbuffer is written with the schema that ships in ``ai_edge_litert``; without that
package the matcher stays on its exact float32 path.
"""

from __future__ import annotations

import numpy as np

from gate.types import Array


def build_int8_fc(weights: Array, scales: Array) -> bytes:
    """Model bytes computing ``scores = (weights * scales[:, None]) @ probe``.

    ``weights`` is (N, D) int8, ``scales`` (N,) float32. Input "probe" [1, D] float32,
    output "scores" [1, N] float32. Raises ImportError when the schema is unavailable.
    """
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.tools import flatbuffer_utils

    n, d = weights.shape
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    empty, probe_buf, weight_buf, out_buf = s.BufferT(), s.BufferT(), s.BufferT(), s.BufferT()
    weight_buf.data = np.ascontiguousarray(weights, np.int8).reshape(-1).view(np.uint8)

    def tensor(name: bytes, shape: list[int], kind: int, buffer: int) -> s.TensorT:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, kind, buffer
        return t

    probe = tensor(b"probe", [1, d], s.TensorType.FLOAT32, 1)
    matrix = tensor(b"gallery", [n, d], s.TensorType.INT8, 2)
    quant = s.QuantizationParametersT()
    quant.scale = np.ascontiguousarray(scales, np.float32)
    quant.zeroPoint = np.zeros(n, np.int64)
    quant.quantizedDimension = 0
    matrix.quantization = quant
    scores = tensor(b"scores", [1, n], s.TensorType.FLOAT32, 3)
    options = s.FullyConnectedOptionsT()
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = options
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [probe, matrix, scores], [0], \
        [2], [op]
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [empty, probe_buf, weight_buf, out_buf]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
