"""The conv -> BatchNorm units of this project's `s3d`, which the importers of S3D files
(CoCLR's, torchvision's) name each in their own way."""
from __future__ import annotations

from typing import Iterator

from video_ssl.models.backbones.s3d import INCEPTION_WIDTHS

# The units of an Inception block, by the suffix of their Keras layer: the 1x1 conv of
# branch 0, the 1x1 conv then the separable 3x3x3 conv of branches 1 and 2, and the 1x1
# conv after branch 3's max-pool.
INCEPTION_PARTS = ("b0", "b1a", "b1b_spatial", "b1b_temporal", "b2a", "b2b_spatial",
                   "b2b_temporal", "b3b")


def units() -> Iterator[tuple[str, str, str | None]]:
    """(Keras conv layer, block, part) of every unit, in order; the unit's BatchNorm is
    the layer's name + "_bn". Blocks: "conv1a" and "conv2c" (separable convs: parts
    "spatial", "temporal"), "conv2b" (one 1x1x1 conv: part None) and the Inception
    blocks "mixed3b" ... "mixed5c" (parts `INCEPTION_PARTS`)."""
    for block, parts in (("conv1a", ("spatial", "temporal")), ("conv2b", (None,)),
                         ("conv2c", ("spatial", "temporal"))):
        for part in parts:
            yield (f"{block}_{part}" if part else block), block, part
    for block in INCEPTION_WIDTHS:
        for part in INCEPTION_PARTS:
            yield f"{block}_{part}", block, part
