"""MobileFaceNet architecture and TFLite-name import, without any weight file."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from supernet.models import (VARIANTS, ConvBN, MobileFaceNet, StageSpec, count_params_and_macs,
                             expected_tflite_tensors, load_tensor_dict, tf_same_padding)


@pytest.fixture(scope="module")
def sirius():
    return MobileFaceNet("sirius")


def synthetic_tensors(model: MobileFaceNet, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.1, shape).astype(np.float32)
            for name, shape in expected_tflite_tensors(model).items()}


@pytest.mark.parametrize("variant,embed_dim,params,macs", [
    # Paper: ~1.0 M params, ~221 M MACs; sirius-ai's two extra 1x1 convs: 1.30 M, 234 M.
    ("standard", 128, 1_003_136, 220_965_376),
    ("sirius", 192, 1_303_424, 234_105_344),
])
def test_variants_shapes_params_and_macs(variant, embed_dim, params, macs):
    net = MobileFaceNet(variant).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 112, 112)).shape == (2, embed_dim)
    assert count_params_and_macs(net, 112) == (params, macs)
    assert net.feature_size == 7 and net.head.gdconv.conv.kernel_size == (7, 7)


def test_spec_is_data_and_overridable():
    stages = [StageSpec(2, 32, 2, 2), StageSpec(2, 48, 1, 2, kernel=5)]
    net = MobileFaceNet("standard", stages=stages, stem_channels=16, head_channels=64, embed_dim=32,
                        input_size=64).eval()
    assert [len(s) for s in net.stages] == [2, 1]
    assert [b.residual for s in net.stages for b in s] == [False, True, False]
    assert net.stages[1][0].depthwise.conv.kernel_size == (5, 5)
    assert net.feature_size == 8
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 32)
    with pytest.raises(ValueError, match="built for 64px"):
        net(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="unknown MobileFaceNet variant"):
        MobileFaceNet("large")
    assert set(VARIANTS) == {"standard", "sirius"}


def test_sirius_extra_layers_and_residuals(sirius):
    assert set(sirius.stem._modules) == {"conv", "dw", "pointwise"}
    assert list(sirius.head._modules) == ["conv", "gdconv", "pointwise", "embedding"]
    assert "pointwise" not in MobileFaceNet("standard").stem._modules
    for linear in (sirius.stem.pointwise, sirius.head.gdconv, sirius.head.pointwise, sirius.head.embedding):
        assert isinstance(linear.act, nn.Identity)
    # Residual wherever stride 1 and channels match: every block except the first of stages 0, 1, 3.
    assert [[b.residual for b in s] for s in sirius.stages] == [
        [False] + [True] * 4, [False], [True] * 6, [False], [True] * 2]


@pytest.mark.parametrize("size,kernel,stride,pads", [
    (112, 3, 2, (0, 1)), (14, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (56, 3, 1, (1, 1)), (7, 7, 1, (3, 3)),
    (112, 1, 1, (0, 0)), (8, 5, 2, (1, 2)),
])
def test_tf_same_padding(size, kernel, stride, pads):
    assert tf_same_padding(size, kernel, stride) == pads


def test_stride2_same_pad_samples_like_tensorflow():
    """With a delta kernel at tap (0, 0), TF SAME at stride 2 on an even input picks x[::2, ::2]."""
    x = torch.randn(1, 1, 8, 8)
    layer = ConvBN(1, 1, 3, 2, act=False, in_size=8).eval()
    assert isinstance(layer.pad, nn.ZeroPad2d) and layer.pad.padding == (0, 1, 0, 1)
    assert layer.conv.padding == (0, 0)
    with torch.no_grad():
        layer.conv.weight.zero_()
        layer.conv.weight[0, 0, 0, 0] = 1.0
        layer.bn.running_var.fill_(1 - layer.bn.eps)
        assert torch.allclose(layer(x), x[..., ::2, ::2], rtol=0, atol=1e-6)
        sym = ConvBN(1, 1, 3, 2, act=False, in_size=8, same_pad=False).eval()
        sym.load_state_dict(layer.state_dict())
        assert sym.pad is None and sym.conv.padding == (1, 1)
        assert not torch.allclose(sym(x), layer(x))  # PyTorch's symmetric padding shifts the grid
    # Odd input: TF pads symmetrically, no explicit pad module.
    assert ConvBN(1, 1, 3, 2, in_size=7).pad is None


def test_same_pad_flag(sirius):
    pads = [n for n, m in sirius.named_modules() if isinstance(m, nn.ZeroPad2d)]
    assert pads == ["stem.conv.pad", "stages.0.0.depthwise.pad", "stages.1.0.depthwise.pad",
                    "stages.3.0.depthwise.pad"]
    assert not any(isinstance(m, nn.ZeroPad2d) for m in MobileFaceNet("sirius", same_pad=False).modules())


def test_expected_tflite_names(sirius):
    names = expected_tflite_tensors(sirius)
    assert len(names) == 137  # every float constant of the pretrained file
    assert names["MobileFaceNet/Conv2d_0/weights/read"] == (64, 3, 3, 3)
    assert names["MobileFaceNet/Conv/weights/read"] == (64, 1, 1, 64)
    assert names["MobileFaceNet/Conv_1/weights/read"] == (128, 1, 1, 64)
    assert names["MobileFaceNet/Conv_30/weights/read"] == (128, 1, 1, 256)
    assert names["MobileFaceNet/SeparableConv2d_15/depthwise_weights/read"] == (1, 3, 3, 256)
    assert names["MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_0/Conv/mul"] == (128,)
    assert names["MobileFaceNet/MobileFaceNet/Conv2d_5_InvResBlock_0/SeparableConv2d/depthwise_bias"] == (512,)
    assert names["MobileFaceNet/Conv2d_7/weights/read"] == (512, 1, 1, 128)
    assert names["MobileFaceNet/Logits/SeparableConv2d/depthwise_weights/read"] == (1, 7, 7, 512)
    assert names["MobileFaceNet/Logits/Conv/weights/read"] == (512, 1, 1, 512)
    assert names["MobileFaceNet/Logits/LinearConv1x1/Conv2D_bias"] == (192,)
    assert sum(n.endswith("/mul") for n in names) == 33
    assert not any(n.endswith("/mul") for n in names if "Logits" in n or "Conv_1/" in n)


def test_import_layout_prelu_and_identity_bn(sirius):
    tensors = synthetic_tensors(sirius)
    net = load_tensor_dict(MobileFaceNet("sirius"), tensors).eval()
    w = tensors["MobileFaceNet/Conv2d_0/weights/read"]  # (out, kh, kw, in)
    assert net.stem.conv.conv.weight[5, 2, 0, 1].item() == w[5, 0, 1, 2]
    dw = tensors["MobileFaceNet/SeparableConv2d_1/depthwise_weights/read"]  # (1, kh, kw, C)
    assert net.stages[0][0].depthwise.conv.weight[7, 0, 2, 1].item() == dw[0, 2, 1, 7]
    mul = tensors["MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_0/SeparableConv2d/mul"]
    assert torch.equal(net.stages[0][0].depthwise.act.weight, torch.from_numpy(2 * mul))
    # Every BN is an exact identity plus the folded bias.
    x = torch.randn(3, 512, 4, 4)
    for name, bn in [(n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]:
        c = bn.num_features
        with torch.no_grad():
            y = bn(x[:, :c])
        assert torch.allclose(y, x[:, :c] + bn.bias[None, :, None, None], rtol=1e-6, atol=1e-6), name
    bias = tensors["MobileFaceNet/Logits/LinearConv1x1/Conv2D_bias"]
    assert torch.equal(net.head.embedding.bn.bias, torch.from_numpy(bias))


def test_import_errors_name_the_tensor(sirius):
    tensors = synthetic_tensors(sirius)
    missing = dict(tensors)
    del missing["MobileFaceNet/Conv_7/weights/read"]
    with pytest.raises(ValueError, match=r"'MobileFaceNet/Conv_7/weights/read' \(for stages.0.3.expand\) is missing"):
        load_tensor_dict(MobileFaceNet("sirius"), missing)
    bad = dict(tensors)
    bad["MobileFaceNet/Logits/Conv/Conv2D_bias"] = np.zeros(256, np.float32)
    with pytest.raises(ValueError, match=r"'MobileFaceNet/Logits/Conv/Conv2D_bias'.*shape \(256,\), expected \(512,\)"):
        load_tensor_dict(MobileFaceNet("sirius"), bad)
    # The sirius file does not fit the standard variant: unused (and mis-shaped) tensors are refused.
    with pytest.raises(ValueError):
        load_tensor_dict(MobileFaceNet("standard", embed_dim=192), tensors)
    extra = dict(tensors, **{"MobileFaceNet/Extra/weights/read": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="not consumed.*Extra"):
        load_tensor_dict(MobileFaceNet("sirius"), extra)


def test_standard_variant_round_trips_its_own_names():
    net = MobileFaceNet("standard")
    load_tensor_dict(net, synthetic_tensors(net, seed=1))
    assert "MobileFaceNet/Conv/weights/read" in expected_tflite_tensors(net)  # first expand takes the counter's 0


def test_trainable_all_parameters_get_gradients():
    net = MobileFaceNet("sirius", input_size=64).train()
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_supernet_models_does_not_import_hyperver():
    code = ("import sys, supernet.models; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('hyperver', 'ai_edge_litert')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
