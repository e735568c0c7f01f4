"""The registry of scoring methods that training chooses among, by name.

Add a method with one import and one entry in `METHODS`. Training cross-validates every
registered method whose class does not set `auto_select = False` (such a method, like the
ONNX backbone one, needs an option the user supplies and is only tried when asked for);
one with an `unavailable(normal_count, anomaly_count)` class method is skipped, with its
reason in the report, where that returns one; one with `fair_on_synthetic = False` is
skipped the same way in normal-only training (where synthetic defects judge the methods)
unless asked for by name. A class that is another's settings at another size says so with
`variant_of = "<that method's name>"`: training then never pairs the two in an ensemble,
and cross-validates the variant only when that method came near the best
(`training.VARIANT_REACH`), unless the variant was asked for by name.
"""

from __future__ import annotations

from pipeline.detector.methods.align import AlignEnvelope, AlignPatch
from pipeline.detector.methods.base import Method, State
from pipeline.detector.methods.baseline import PixelGaussian
from pipeline.detector.methods.cnn import CoarseCnn, SmallCnn
from pipeline.detector.methods.ensemble import ScoreEnsemble
from pipeline.detector.methods.onnx_backbone import OnnxPatchCore
from pipeline.detector.methods.shape import ObjectShape
from pipeline.detector.methods.texture import TextureMemory

METHODS: dict[str, type[Method]] = {
    PixelGaussian.name: PixelGaussian,
    OnnxPatchCore.name: OnnxPatchCore,
    ScoreEnsemble.name: ScoreEnsemble,
    AlignEnvelope.name: AlignEnvelope,
    AlignPatch.name: AlignPatch,
    ObjectShape.name: ObjectShape,
    SmallCnn.name: SmallCnn,
    CoarseCnn.name: CoarseCnn,
    TextureMemory.name: TextureMemory,
}

__all__ = ["METHODS", "Method", "State"]
