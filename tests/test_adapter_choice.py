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


def test_an_adapter_measured_worse_than_its_base_is_not_imposed():
    import json

    from lowrank_batch.pipeline.adapter_choice import measured_worse

    def provenance(delta_db):
        ref = [{"quality": q, "bpp": 0.1 * 2 ** (k / 2), "psnr": 40 + 3 * k} for k, q in enumerate((36, 40, 44, 48, 52))]
        # the trained curve's bytes include a 32-byte adapter digest: ignored (same latents)
        trained = [{**p, "bpp": p["bpp"] * 1.2, "psnr": p["psnr"] + delta_db} for p in ref]
        return {"figures": json.dumps({"validation": {"lossy": {"reference": ref, "trained": trained}}})}

    assert measured_worse(provenance(-0.5)) > 0  # lower PSNR at the same latents: worse
    assert measured_worse(provenance(+0.1)) is None  # better PSNR, though its files are bigger
    assert measured_worse({"figures": "not json"}) is None and measured_worse({}) is None
