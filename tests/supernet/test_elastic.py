import numpy as np
import pytest
import torch

from supernet.calibrate import recalibrate_bn
from supernet.elastic import OFAMobileNetV3
from supernet.io import load_supernet, save_supernet
from supernet.profile import count_macs, count_params
from supernet.space import DEFAULT_SPACE as S
from supernet.static import build_static


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = OFAMobileNetV3(width_mult=0.5, input_size=64).eval()
    for m in n.modules():  # non-trivial BN statistics so slicing mistakes show up
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    for blocks in n.stages:
        for b in blocks:
            for t in b.kernel_transforms.values():
                t.data += 0.05 * torch.randn_like(t)
    return n


def test_extracted_subnet_equals_the_active_supernet(net):
    x = torch.randn(2, 3, 64, 64)
    rng = np.random.default_rng(0)
    for arch in [S.largest(), S.smallest(), S.sample(rng), S.sample(rng)]:
        net.set_active(arch)
        sub = net.get_subnet(arch).eval()
        torch.testing.assert_close(net(x), sub(x), atol=1e-5, rtol=1e-5)
        # The JSON config alone rebuilds the same structure.
        rebuilt = build_static(sub.net_config)
        rebuilt.load_state_dict(sub.state_dict())
        torch.testing.assert_close(rebuilt.eval()(x), sub(x))


def test_depth_and_kernel_change_the_network(net):
    x = torch.randn(1, 3, 64, 64)
    big = S.largest()
    net.set_active(big)
    y_big = net(x)
    small_k = dict(big, k=[3] * 20)
    net.set_active(small_k)
    assert not torch.allclose(net(x), y_big)
    assert count_params(net.get_subnet(S.smallest())) < count_params(net.get_subnet(S.largest()))
    assert count_macs(net.get_subnet(S.smallest()), (1, 3, 64, 64)) < count_macs(net.get_subnet(big), (1, 3, 64, 64))


def test_channel_sorting_preserves_the_function(net):
    x = torch.randn(2, 3, 64, 64)
    clone = OFAMobileNetV3(width_mult=0.5, input_size=64).eval()
    clone.load_state_dict(net.state_dict())
    clone.set_active(S.largest())
    before = clone(x)
    clone.sort_channels()
    torch.testing.assert_close(clone(x), before, atol=1e-5, rtol=1e-4)


def test_bn_recalibration_sets_exact_batch_statistics(net):
    sub = net.get_subnet(S.smallest())
    data = [torch.randn(8, 3, 64, 64) * 2 + 1 for _ in range(3)]
    recalibrate_bn(sub, data, max_images=24)
    x = torch.cat(data)
    stem_out = sub.stem[0](x)
    torch.testing.assert_close(sub.stem[1].running_mean, stem_out.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)


def test_supernet_safetensors_round_trip(net, tmp_path):
    path = save_supernet(net, tmp_path / "sn.safetensors", dtype=torch.float32)
    loaded = load_supernet(path)
    x = torch.randn(1, 3, 64, 64)
    net.set_active(S.largest())
    torch.testing.assert_close(loaded(x), net(x))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="corrupt"):
        load_supernet(tmp_path / "bad.safetensors")
