"""`--adapter auto`: DICOM Modality first, then per-source rules, else none."""

import pytest

from lowrank_batch.errors import InvalidParameterError
from lowrank_batch.pipeline.adapter_choice import choose_adapter, parse_rules


@pytest.mark.parametrize("modality,adapter", [("CT", "ct"), ("MR", "mr"), ("CR", "xray"), ("DX", "xray"),
                                              ("DR", "xray"), ("MG", "xray"), ("ct ", "ct"), ("US", None),
                                              ("", None)])
def test_dicom_modality_picks_the_adapter(modality, adapter):
    assert choose_adapter({"Modality": modality}, "scan.dcm") == adapter


def test_rules_apply_when_there_is_no_dicom_modality_first_match_wins():
    rules = parse_rules(["photos/*=natural", "*.png=none", "xr/*.tif=xray", "*=mr"])
    assert choose_adapter({"format": "PNG"}, "photos/a.png", rules) == "natural"
    assert choose_adapter({"format": "PNG"}, "other/a.png", rules) is None  # 'none' means none
    assert choose_adapter({}, "xr/leg.tif", rules) == "xray"
    assert choose_adapter({}, "misc/b.tif", rules) == "mr"
    assert choose_adapter({"Modality": "CT"}, "photos/ct.dcm", rules) == "ct"  # the tag wins over rules
    assert choose_adapter({}, "anything.png") is None


@pytest.mark.parametrize("bad", ["natural", "=ct", "photos/*=", ""])
def test_malformed_rules_are_named(bad):
    with pytest.raises(InvalidParameterError, match="GLOB=ADAPTER"):
        parse_rules([bad])
