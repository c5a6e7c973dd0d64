"""Base tester over the whole model registry: every name `seg models` lists builds at a small
size, honours its size contract, runs one backward pass, and has a classification version whose
weights load strictly into its segmentation encoder.

Small means: the classic U-Net at 4 base channels and depth 2 (same and valid padding), FCNs at
1/8 of VGG16's width, smp models as registered (their encoders have fixed widths) on a 2 x 1 x 64^2
batch (128^2 for PAN, whose pyramid needs it)."""

from __future__ import annotations

import pytest
import torch

from seg.errors import SegError
from seg.models import build_model
from seg.models.classification import (build_classifier, classifier_to_encoder_state, encoder_for,
                                        load_encoder_weights)
from seg.models.registry import input_size_for, model_names, output_size, size_divisor

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"unet": {"base_channels": 4, "depth": 2}, "fcn": {"width": 0.125}}
CASES = [(name, {**SMALL["unet"], "padding": pad}) for name in ("unet",) for pad in ("same", "valid")] + [
    (name, SMALL["fcn"] if name.startswith("fcn") else {}) for name in model_names() if name != "unet"]


def _ids(case):
    name, params = case
    return f"{name}-{params['padding']}" if "padding" in params else name


def test_every_registry_name_is_covered():
    assert {name for name, _ in CASES} == set(model_names())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_model_contract(case):
    name, params = case
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, classes=3, **params)
    assert model.seg_name == name and model.seg_params == params
    want = 128 if name.startswith("pan-") else 64
    size = input_size_for(model, want)
    out_size = output_size(model, size)
    d = size_divisor(model)
    if hasattr(model, "valid_border"):  # valid padding: a larger input yields the wanted output
        assert out_size >= want and size - out_size == 2 * model.valid_border
        with pytest.raises(SegError):
            output_size(model, size + 1)  # not a legal input size
    else:
        assert out_size == size and size % d == 0 and size - want < d
    width = input_size_for(model, out_size + 1)  # the next legal size: a non-square input
    out_width = output_size(model, width)
    x = torch.randn(2, 1, size, width)
    y = model(x)
    assert y.shape == (2, 3, out_size, out_width) and torch.isfinite(y).all()
    target = torch.randint(0, 3, (2, out_size, out_width))
    torch.nn.functional.cross_entropy(y, target).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # finite everywhere; FCN score layers start at zero (Long 2015), so only some grads are non-zero
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


ENCODER_CASES = sorted({encoder_for(name, params)[0]: (name, params) for name, params in CASES}.items())


@pytest.mark.parametrize("encoder, case", ENCODER_CASES, ids=[e for e, _ in ENCODER_CASES])
def test_classification_version_loads_strictly_into_the_encoder(encoder, case):
    """For each encoder of the registry: the classifier trains (one backward pass) and its weights
    load into the segmentation model's encoder, every tensor set and equal to the classifier's."""
    name, params = case
    enc_name, enc_params = encoder_for(name, params)
    torch.manual_seed(0)
    clf = build_classifier(enc_name, in_channels=1, num_classes=5, **enc_params)
    x = torch.randn(2, 1, 64, 64)
    logits = clf(x)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 4])).backward()
    assert all(torch.isfinite(p.grad).all() for p in clf.parameters() if p.grad is not None)
    model = build_model(name, in_channels=1, classes=2, **params)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    keys = load_encoder_weights(model, clf.state_dict())
    after = model.encoder.state_dict()
    assert sorted(keys) == sorted(after)
    expected = classifier_to_encoder_state(clf.state_dict(), enc_name)  # head dropped, fc6/fc7 as convs
    assert set(expected) == set(after)
    assert all(torch.equal(after[k], expected[k].to(after[k].dtype)) for k in after)
    # not vacuous: the model's own (different) initial weights were replaced
    assert any(not torch.equal(before[k], after[k]) for k in after if k.endswith("weight"))
