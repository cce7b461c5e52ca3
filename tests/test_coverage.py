"""Detection coverage (a2o.detect.coverage) and its line in the ICRL prompt."""

from __future__ import annotations

import numpy as np
import pytest

from a2o.detect.classes import ClassSet
from a2o.detect.coverage import class_coverage, unseen_classes


class FakeMaps:
    """(T, C, h, w) maps where class 0 shows in even-numbered clips, class 1 never, class 2 always."""

    def __init__(self):
        self.reads: list[str] = []

    def read(self, video_id: str) -> np.ndarray:
        self.reads.append(video_id)
        planes = np.zeros((4, 3, 8, 8), dtype=np.uint8)
        if int(video_id[1:]) % 2 == 0:
            planes[2, 0, 3, 3] = 200  # one bright pixel in one frame is enough
        planes[:, 1] = 127  # just under the 0.5 threshold everywhere: never found
        planes[:, 2] = 255
        return planes


def test_coverage_is_the_share_of_clips_where_a_class_reaches_half_likelihood():
    classes = ClassSet.parse(["spoon", "spatula", "floor"])
    ids = [f"v{i}" for i in range(10)]
    coverage = class_coverage(FakeMaps(), classes, ids)
    assert coverage == {"spoon": 0.5, "spatula": 0.0, "floor": 1.0}
    assert unseen_classes(coverage) == ["spatula"]
    assert class_coverage(FakeMaps(), ClassSet.parse([]), ids) == {}


def test_coverage_samples_deterministically_and_checks_the_map_shape():
    classes = ClassSet.parse(["spoon", "spatula", "floor"])
    ids = [f"v{i}" for i in range(500)]
    first, second = FakeMaps(), FakeMaps()
    assert class_coverage(first, classes, ids, sample=20, seed=3) == class_coverage(second, classes, ids, sample=20, seed=3)
    assert first.reads == second.reads and len(first.reads) == 20
    with pytest.raises(ValueError, match="expected"):
        class_coverage(FakeMaps(), ClassSet.parse(["spoon", "floor"]), ids[:2])
