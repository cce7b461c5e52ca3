"""`python -m benchmarks.detection --iou` on the tiny world: the learned detector sees pixels."""

from __future__ import annotations

import pytest

from benchmarks.detection import learned_iou_report


@pytest.mark.slow
def test_learned_detector_iou_report_on_tiny(tmp_path, capsys):
    result = learned_iou_report(str(tmp_path), "tiny")
    out = capsys.readouterr().out
    assert "mean IoU" in out and "text -> channels" in out
    assert result["iou"], "no class was scored"
    # Regions cover most of a frame; a detector that sees pixels gets them nearly right.
    from a2o.data.synthetic import load_dataset_info

    regions = [r for r in load_dataset_info(str(tmp_path / "synth"))["vocabulary"]["regions"] if r in result["iou"]]
    assert regions, f"no region is seen in the tiny world's val clips: {result['iou']}"
    assert min(result["iou"][r] for r in regions) > 0.5, result["iou"]
    inside, outside = result["probes"]["giraffe"]
    assert inside == 0.0 and outside == 0.0  # a word the world does not know gives an empty map
