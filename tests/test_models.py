"""seg.models: registry, output shapes, size contract, parameter counts, learning, encoder transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg.errors import SegError
from seg.models import (
    build_classifier,
    build_model,
    count_parameters,
    encoder_for,
    input_size_for,
    load_encoder_weights,
    load_pretrained_encoder,
    model_names,
    output_size,
    size_divisor,
)

TINY_UNET = {"base_channels": 4, "depth": 3}
TINY_VGG = {"width": 1 / 16}
SMALL_DEC = {"decoder_channels": [16, 16, 16, 16, 16]}  # smp decoder only; the encoder is unchanged


def _out(model, h, w, cin=1):
    model.eval()
    with torch.inference_mode():
        return tuple(model(torch.randn(1, cin, h, w)).shape)


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_miss_lists_names():
    names = model_names()
    for n in ("unet", "fcn32s", "fcn16s", "fcn8s", "unet-resnet18", "unet-resnet34", "unet-resnet50",
              "unet-densenet121", "unet-densenet169", "fpn-resnet34", "unetplusplus-resnet18"):
        assert n in names
    with pytest.raises(SegError, match=r"unknown model name.*unet-resnet34"):
        build_model("unet-resnet35")
    with pytest.raises(SegError, match="params.foo"):
        build_model("unet", foo=1)
    with pytest.raises(SegError, match="padding"):
        build_model("unet", padding="full")
    with pytest.raises(SegError, match="encoder_weights"):
        build_model("unet-resnet18", encoder_weights="imagenet")


def test_extra_params_pass_through_to_smp():
    small = build_model("unet-resnet18", decoder_channels=[32, 16, 8, 8, 4])
    assert count_parameters(small) < count_parameters(build_model("unet-resnet18"))
    assert small.decoder.blocks[0].conv1[0].out_channels == 32
    # an unregistered <decoder>-<smp encoder> pair builds by name
    assert _out(build_model("fpn-mobilenet_v2", classes=3), 64, 96) == (1, 3, 64, 96)


def test_building_never_touches_the_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access while building a model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = build_model("unet-resnet34", **SMALL_DEC)
    assert m.encoder.conv1.in_channels == 1


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("h,w", [(24, 40), (56, 8)])  # odd multiples of the divisor 8
def test_unet_same_shapes(h, w):
    m = build_model("unet", classes=3, **TINY_UNET)
    assert size_divisor(m) == 8
    assert _out(m, h, w) == (1, 3, h, w)
    with pytest.raises(SegError, match="not legal"):
        _out(m, 20, 24)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("h,w", [(1, 1), (33, 47), (101, 64)])
def test_fcn_vgg_any_size(name, h, w):
    m = build_model(name, classes=3, **TINY_VGG)
    assert size_divisor(m) == 1 and output_size(m, h) == h
    assert _out(m, h, w) == (1, 3, h, w)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fcn_resnet_odd_sizes(name):
    m = build_model(name, backbone="resnet18", classes=2)
    assert _out(m, 37, 53) == (1, 2, 37, 53)
    with pytest.raises(SegError, match="backbone"):
        build_model(name, backbone="alexnet")


# smp decoders and encoders: every registered pair is built and run by tests/test_registry.py


# ----------------------------------------------------------------------------- valid U-Net sizes
def test_valid_unet_paper_sizes():
    m = build_model("unet", padding="valid")  # paper defaults (64 channels, depth 4); not run here
    assert m.valid_border == 92
    assert output_size(m, 572) == 388 and input_size_for(m, 388) == 572
    tiny = build_model("unet", padding="valid", base_channels=2)  # same geometry, cheap to run
    assert _out(tiny, 572, 572) == (1, 2, 388, 388)
    assert _out(tiny, 188, 204) == (1, 2, 4, 20)  # the smallest legal size and the next one


def test_valid_unet_size_relation_is_exact():
    m = build_model("unet", padding="valid", **TINY_UNET)  # depth 3
    legal = []
    for n in range(1, 400):
        try:
            o = output_size(m, n)
        except SegError:
            continue
        assert n - o == 2 * m.valid_border
        legal.append(n)
    assert np.all(np.diff(legal) == 8) and legal[0] == 92  # step 2**depth
    assert _out(m, legal[1], legal[2]) == (1, 2, legal[1] - 2 * m.valid_border, legal[2] - 2 * m.valid_border)
    for want in range(1, 120):
        n = input_size_for(m, want)
        assert output_size(m, n) >= want
        assert n == legal[0] or output_size(m, n - 8) < want  # the smallest such input
        assert (output_size(m, n) == want) == (want in {x - 2 * m.valid_border for x in legal})
    with pytest.raises(SegError, match="not legal"):
        output_size(m, 93)


# ----------------------------------------------------------------------------- parameter counts
def _unet_count(cin, classes, c=64, depth=4):
    """Analytic count of the paper's U-Net: two 3x3 convs (+bias) per level, 2x2 ConvTranspose2d
    up-convs (+bias) halving channels, 1x1 output conv."""
    ch = [c * 2**i for i in range(depth + 1)]
    block = lambda a, b: 9 * a * b + b + 9 * b * b + b  # noqa: E731
    enc = sum(block(a, b) for a, b in zip([cin] + ch[:-1], ch))
    up = sum(4 * ch[i + 1] * ch[i] + ch[i] for i in range(depth))
    dec = sum(block(2 * ch[i], ch[i]) for i in range(depth))
    return enc + up + dec + ch[0] * classes + classes


def test_parameter_counts():
    with torch.device("meta"):
        unet = build_model("unet")
        # 31,030,658 = 31.0M (the paper's figure is not printed; this is the architecture's own count:
        # 18,842,048 contracting + 2,786,240 up-convs + 9,402,240 expanding + 130 output).
        assert count_parameters(unet) == _unet_count(1, 2) == 31_030_658
        assert count_parameters(build_model("unet", batch_norm=True)) > count_parameters(unet)
        # FCN-8s VGG16 for PASCAL (21 classes, RGB): the paper's "134M"; exact: torchvision VGG16
        # features 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score layers 102,207 + learned
        # up-sampling 127,008 = 134,489,759.
        fcn8 = build_model("fcn8s", in_channels=3, classes=21)
        assert count_parameters(fcn8) == 134_489_759
        assert abs(count_parameters(fcn8) / 134e6 - 1) < 0.01
        import segmentation_models_pytorch as smp
        import torchvision

        ours = build_model("unet-resnet34", classes=2)
        theirs = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2)
        assert count_parameters(ours) == count_parameters(theirs) == 24_430_242
        tv = torchvision.models.resnet34(weights=None)  # encoder = torchvision trunk, 1-ch conv1, no fc
        assert count_parameters(ours.encoder) == count_parameters(tv) - 512 * 1000 - 1000 - 2 * 64 * 49


# ----------------------------------------------------------------------------- learning on real data
def _isbi_tile(isbi_stacks, size=48):
    img = isbi_stacks["train"][0, 100 : 100 + size, 200 : 200 + size].astype(np.float32)
    lab = (isbi_stacks["labels"][0, 100 : 100 + size, 200 : 200 + size] > 0).astype(np.int64)
    x = torch.from_numpy((img - img.mean()) / img.std())[None, None]
    return x, torch.from_numpy(lab)[None]


@pytest.mark.parametrize("name,params", [("unet", {"base_channels": 8, "depth": 2}),
                                         ("fcn8s", {"width": 1 / 16}),
                                         ("unet", {"base_channels": 4, "depth": 2, "padding": "valid"})])
def test_few_steps_reduce_loss_on_isbi_tile(isbi_stacks, name, params):
    torch.manual_seed(0)
    model = build_model(name, **params)
    x, y = _isbi_tile(isbi_stacks)
    if hasattr(model, "valid_border"):
        b = model.valid_border
        x = torch.nn.functional.pad(x, (b, b, b, b), mode="reflect")  # overlap-tile input
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


# ----------------------------------------------------------------------------- encoder transfer
TRANSFER = [  # (encoder, segmentation model, params); every family that has an encoder
    ("resnet18", "unet-resnet18", SMALL_DEC),
    ("resnet34", "fpn-resnet34", {}),
    ("resnet50", "unet-resnet50", SMALL_DEC),
    ("densenet121", "unet-densenet121", SMALL_DEC),
    ("densenet169", "unet-densenet169", SMALL_DEC),
    ("vgg16", "fcn8s", TINY_VGG),
    ("resnet18", "fcn16s", {"backbone": "resnet18"}),
    ("unet", "unet", {"base_channels": 8, "depth": 3, "padding": "valid"}),
]


def _expected_encoder_tensor(key, clf_sd, enc_name):
    """The classifier tensor that must land in encoder ``key`` (independent of the loader)."""
    if enc_name == "vgg16" and key.startswith(("fc6.", "fc7.")):
        src = {"fc6.": "classifier.0.", "fc7.": "classifier.3."}[key[:4]] + key[4:]
        return clf_sd[src]
    return clf_sd[key]


@pytest.mark.parametrize("enc,name,params", TRANSFER, ids=[f"{e}->{n}" for e, n, _ in TRANSFER])
def test_classifier_weights_transfer_every_encoder_tensor(enc, name, params):
    assert encoder_for(name, params)[0] == enc
    torch.manual_seed(1)
    clf = build_classifier(enc, num_classes=5, **encoder_for(name, params)[1])
    assert clf(torch.randn(2, 1, 32, 32)).shape == (2, 5)  # it classifies 1-channel patches
    with torch.no_grad():  # make every classifier tensor differ from a fresh init
        for t in clf.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    clf_sd = clf.state_dict()
    model = build_model(name, **params)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    keys = load_encoder_weights(model, dict(clf_sd))
    after = model.encoder.state_dict()
    assert sorted(keys) == sorted(after)  # every encoder tensor reported ...
    for k, v in after.items():  # ... and really replaced by the classifier's
        exp = _expected_encoder_tensor(k, clf_sd, enc)
        assert torch.equal(v.reshape(exp.shape), exp.to(v.dtype)), k
        if v.is_floating_point():
            assert not torch.equal(before[k], v), k
    # the classifier's own state dict also loads strictly with model.encoder.load_state_dict
    model.encoder.load_state_dict(dict(clf_sd))


def test_imagenet_style_rgb_state_dict_is_adapted(tmp_path):
    import torchvision

    torch.manual_seed(2)
    tv = torchvision.models.resnet18(weights=None)  # the layout of an ImageNet checkpoint file
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(tv.state_dict(), path)
    model = build_model("unet-resnet18")
    keys = load_pretrained_encoder(model, path)
    assert len(keys) == len(model.encoder.state_dict())
    torch.testing.assert_close(model.encoder.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.encoder.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    # the summed kernel makes a gray image x behave like (x, x, x) in the RGB network's first conv
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model.encoder.conv1(x), tv.conv1(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_transfer_refuses_missing_or_extra_keys(tmp_path):
    model = build_model("unet-resnet18")
    sd = build_classifier("resnet18").state_dict()
    missing = {k: v for k, v in sd.items() if not k.startswith("layer4.1.")}
    with pytest.raises(SegError, match="missing.*layer4.1"):
        load_encoder_weights(model, missing)
    with pytest.raises(SegError, match="unexpected.*extra"):
        load_encoder_weights(model, {**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(SegError, match="shape"):
        load_encoder_weights(build_model("unet-resnet34"), build_classifier("resnet34", num_classes=2).state_dict()
                             | {"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(SegError, match="not found"):
        load_pretrained_encoder(model, tmp_path / "nope.pt")


@pytest.mark.slow
def test_torchvision_vgg16_imagenet_layout_loads_into_fcn8s():
    import torchvision

    tv = torchvision.models.vgg16(weights=None)
    model = build_model("fcn8s", classes=2)
    load_encoder_weights(model, tv.state_dict())
    torch.testing.assert_close(model.encoder.features[0].weight, tv.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(model.encoder.fc6.weight.flatten(1), tv.classifier[0].weight)
    assert torch.equal(model.encoder.fc7.weight.flatten(1), tv.classifier[3].weight)
