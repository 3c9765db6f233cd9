"""The elastic MobileFaceNet: exact seeding, subnet extraction, channel sorting, configs, export."""
import copy

import numpy as np
import pytest
import torch

from supernet.calibrate import unfold_batchnorm
from supernet.models import MobileFaceNet
from supernet.spaces import build_static, build_supernet, space_of
from supernet.spaces.mobilefacenet import ElasticMobileFaceNet, MobileFaceNetSpace


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    return _randomise_bn(MobileFaceNet("sirius")).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kernels", [(3,), (3, 5)])
def test_largest_subnet_is_the_pretrained_network_exactly(pretrained, x, kernels):
    net = ElasticMobileFaceNet(MobileFaceNetSpace(kernels=kernels), normalize=False).load_pretrained(pretrained).eval()
    with torch.no_grad():
        ref = pretrained(x)
        assert torch.allclose(net(x), ref, atol=1e-5 * float(ref.abs().max()))
        # The extracted largest subnet too (a 5x5 kernel is the zero-padded 3x3).
        assert torch.allclose(net.get_subnet(net.space.largest()).eval()(x), ref, atol=1e-5 * float(ref.abs().max()))


def test_subnets_extract_to_equal_static_modules(pretrained, x):
    space = MobileFaceNetSpace(kernels=(3, 5))
    net = ElasticMobileFaceNet(space).load_pretrained(pretrained).eval()
    rng = np.random.default_rng(0)
    params = []
    for arch in [space.smallest(), space.sample(rng), space.sample(rng), space.largest()]:
        net.set_active(arch)
        with torch.no_grad():
            y = net(x)
            sub = net.get_subnet(arch).eval()
            rebuilt = build_static(sub.net_config)
            rebuilt.load_state_dict(sub.state_dict())
            assert torch.allclose(sub(x), y, atol=1e-5) and torch.allclose(rebuilt.eval()(x), y, atol=1e-5)
        params.append(sum(p.numel() for p in sub.parameters()))
    assert params[0] < min(params[1:3]) and max(params[1:3]) < params[3]


def test_channel_sorting_keeps_the_largest_and_puts_important_channels_first(pretrained, x):
    net = ElasticMobileFaceNet().load_pretrained(pretrained).eval()
    with torch.no_grad():
        before = net(x)
        net.sort_channels()
        assert torch.allclose(net(x), before, atol=1e-5)
    block = net.stages[0][1]
    importance = block.project.conv.weight.abs().sum((0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_expand_percentages_set_the_mid_channels():
    space = MobileFaceNetSpace()
    assert space.block_channels(0, 0, 100) == (64, 128, 64)
    assert space.block_channels(0, 1, 50) == (64, 64, 64)
    assert space.block_channels(1, 0, 75) == (64, 192, 128)     # the strided block expands 4x
    assert space.block_channels(2, 0, 100) == (128, 512, 128)
    with pytest.raises(ValueError, match="largest must be 100"):
        MobileFaceNetSpace(expands=(50, 75))


def test_configs_round_trip_through_the_registry(pretrained, x):
    net = ElasticMobileFaceNet(MobileFaceNetSpace(stage_depths=((4, 5), (6, 7), (2, 3))), normalize=True)
    cfg = net.supernet_config()
    assert cfg["kind"] == "elastic_mfn" and space_of(cfg) == net.space
    rebuilt = build_supernet(cfg)
    assert type(rebuilt) is ElasticMobileFaceNet and rebuilt.space == net.space
    with pytest.raises(ValueError, match="unknown search space"):
        build_supernet({**cfg, "kind": "resnet"})
    with pytest.raises(ValueError, match="unknown elastic_mfn space keys"):
        MobileFaceNetSpace.from_config({"widths": [1]})
    with pytest.raises(ValueError, match="112px"):
        net(torch.zeros(1, 3, 96, 96))


def test_supernet_file_round_trip(pretrained, x, tmp_path):
    from supernet.io import load_supernet, read_supernet_config, save_supernet
    from supernet.spaces import space_of

    net = ElasticMobileFaceNet().load_pretrained(pretrained).eval()
    path = save_supernet(net, tmp_path / "mfn.safetensors", dtype=torch.float32)
    loaded = load_supernet(path)
    assert type(loaded) is ElasticMobileFaceNet
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    # The search space comes from the file's metadata alone (the predictors need no weights).
    assert space_of(read_supernet_config(path)).largest() == net.space.largest()


def test_unfolding_folded_batchnorm_keeps_eval_and_fixes_train_mode(x):
    torch.manual_seed(0)
    model = MobileFaceNet("sirius").eval()
    with torch.no_grad():  # a deployed model's BN: folded into the conv, identity statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0), m.bias.normal_(0, 0.1), m.running_mean.zero_(), m.running_var.fill_(1 - m.eps)
        ref = model(x)
        gen = torch.Generator().manual_seed(3)
        data = [torch.randn(16, 3, 112, 112, generator=gen) for _ in range(4)]
        train_before = copy.deepcopy(model).train()(data[0])  # a copy: train mode updates running stats
        unfold_batchnorm(model, data, max_images=64)
        assert torch.allclose(model.eval()(x), ref, atol=1e-4 * float(ref.abs().max()))
        eval_out = model.eval()(data[0])
        train_after = model.train()(data[0])
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b).mean().item()  # noqa: E731
    assert cos(train_after, eval_out) > 0.99 > cos(train_before, eval_out) + 0.05


def test_export_parity_onnx_and_tflite(pretrained, tmp_path):
    from supernet.export import export_onnx, export_tflite, load_subnet, parity, save_subnet

    space = MobileFaceNetSpace()
    net = ElasticMobileFaceNet(space).load_pretrained(pretrained)
    sub = net.get_subnet(space.sample(np.random.default_rng(4))).eval()
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    diffs = parity(sub, export_onnx(sub, tmp_path / "s.onnx", 112), export_tflite(sub, tmp_path / "s.tflite"), x)
    assert diffs["onnx"] < 1e-4 and diffs["tflite"] < 1e-4, diffs
    loaded = load_subnet(save_subnet(sub, tmp_path / "s.safetensors"))
    assert type(loaded) is type(sub)
    with torch.no_grad():
        assert torch.allclose(loaded(torch.from_numpy(x)), sub(torch.from_numpy(x)), atol=1e-6)


def test_geometry_counts_parameters_and_lists_every_block(pretrained):
    from supernet.nas.measure import block_input_shape, block_module
    from supernet.profile import count_params

    space = MobileFaceNetSpace(kernels=(3, 5))
    net = ElasticMobileFaceNet(space)
    geom = net.geometry()
    rng = np.random.default_rng(7)
    for arch in [space.smallest(), space.largest(), space.sample(rng), space.sample(rng)]:
        assert geom.params(arch) == count_params(net.get_subnet(arch))
    blocks = list(geom.all_blocks())
    # stem + head + 3 stages x (strided first block, repeated block) x 2 kernels x 3 expands
    assert len(blocks) == 2 + 3 * 2 * 2 * 3 and len({b.key for b in blocks}) == len(blocks)
    for b in blocks:
        module = block_module(b).eval()
        with torch.no_grad():
            y = module(torch.zeros(block_input_shape(b)))
        expected = (1, b.cout) if b.kind == "mfn_head" else (1, b.cout, b.size_out, b.size_out)
        assert tuple(y.shape) == expected, b.key
    # Every block of any subnet has a LUT key.
    keys = {b.key for b in blocks}
    assert all(b.key in keys for b in geom.blocks(space.sample(rng)))
