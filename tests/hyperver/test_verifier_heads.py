"""f's heads: v2 (global average pooling) keeps its version and layout; v3 (global depthwise conv) in torch."""
import json

import pytest
import torch

from hyperver.hypernet.batched import score_matrix, stacked_scores, vmap_scores
from hyperver.hypernet.generator import WeightGenerator
from hyperver.hypernet.model_io import UserModel
from hyperver.hypernet.pretrain import EmbeddingF
from hyperver.hypernet.verifier import HEADS, VerifierModule, VerifierSpec, forward, init_theta, unflatten
from supernet.profile import count_params, mflops

# f v2: what the generators before #17's f v3 and their signed artifacts carry (configs/hypernet_cpu.yaml pins it).
F_V2_VERSION = "f-v2-365d831eb8"
V2_DICT = {"input_size": 64, "channels": [16, 32, 64, 64], "groups": [1, 2, 4, 4], "strides": [2, 2, 2, 2],
           "kernel": 3, "hidden": 32, "eps": 1e-05}
# The recommended f v3 (benchmarks/f_budget.py, commented in hyperver/default_configs/base.yaml).
F_V3 = VerifierSpec(input_size=112, channels=(16, 32, 48, 56), groups=(1, 2, 2, 4), head="gdconv")
SMALL_V3 = VerifierSpec(input_size=48, channels=(8, 16, 16), groups=(1, 2, 2), strides=(2, 2, 2), hidden=8,
                        head="gdconv")   # 6x6 map, fast


def test_f_v2_keeps_its_version_layout_and_serialisation():
    spec = VerifierSpec()
    assert spec.version == F_V2_VERSION == VerifierSpec.from_dict(V2_DICT).version
    assert spec.to_dict() == V2_DICT                      # no "head" key: files stay readable by older code
    assert VerifierSpec.from_dict({**V2_DICT, "head": "gap"}) == spec
    assert [n for n, _ in spec.layout()][-6:] == ["mix.weight", "mix.bias", "fc1.weight", "fc1.bias",
                                                  "fc2.weight", "fc2.bias"]
    assert spec.n_params == 23009 and spec.final_size == 4 and spec.head_layout() == []


def test_f_v3_spec_layout_version_and_errors():
    spec = VerifierSpec(input_size=112, head="gdconv")
    assert spec.final_size == 7 and VerifierSpec(input_size=96, head="gdconv").final_size == 6
    layout = dict(spec.layout())
    names = list(layout)
    assert names.index("mix.bias") + 1 == names.index("gdconv.weight") == names.index("fc1.weight") - 2
    assert layout["gdconv.weight"] == (64, 1, 7, 7) and layout["gdconv.bias"] == (64,)
    assert spec.n_params == 23009 + 64 * 49 + 64
    assert spec.version.startswith("f-v3-") and spec.version != VerifierSpec(input_size=96, head="gdconv").version
    assert VerifierSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.to_dict()["head"] == "gdconv"
    with pytest.raises(ValueError, match=r"unknown verifier head 'sum'.*\['gap', 'gdconv'\]"):
        VerifierSpec.from_dict({**V2_DICT, "head": "sum"})
    assert set(HEADS) == {"gap", "gdconv"}


def test_gdconv_with_uniform_weights_is_average_pooling():
    """The depthwise head weighs each position; with all weights 1/K^2 it IS global average pooling."""
    gap, gd = VerifierSpec(input_size=112), VerifierSpec(input_size=112, head="gdconv")
    theta_gap = init_theta(gap, torch.Generator().manual_seed(0)) + 0.01
    parts = unflatten(gap, theta_gap)
    k = gd.final_size
    parts["gdconv.weight"] = torch.full((64, 1, k, k), 1.0 / k ** 2)
    parts["gdconv.bias"] = torch.zeros(64)
    theta_gd = torch.cat([parts[n].flatten() for n, _ in gd.layout()])
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(forward(gd, theta_gd, x), forward(gap, theta_gap, x), atol=1e-5, rtol=1e-5)
    # ... and other weights make it see where things are: a different logit.
    parts["gdconv.weight"] = parts["gdconv.weight"] * torch.linspace(0, 2, k * k).reshape(1, 1, k, k)
    theta_gd = torch.cat([parts[n].flatten() for n, _ in gd.layout()])
    assert (forward(gd, theta_gd, x) - forward(gap, theta_gap, x)).abs().max() > 1e-3


def test_recommended_f_v3_meets_the_budget_counted_by_the_tool():
    assert F_V3.version == "f-v3-f21b834bc8"                # named in base.yaml's comment
    module = VerifierModule(F_V3)
    assert count_params(module) == F_V3.n_params <= 26_500
    assert abs(F_V3.n_params - 23_000) / 23_000 < 0.15
    assert mflops(module, (1, 3, 112, 112)) <= 6.0
    x = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(module(x), forward(F_V3, module.theta(), x))


def test_init_theta_scales_the_depthwise_head_by_its_fan_in():
    spec = VerifierSpec(input_size=112, head="gdconv")
    parts = unflatten(spec, init_theta(spec, torch.Generator().manual_seed(0)))
    std = float(parts["gdconv.weight"].std())
    assert abs(std - (2.0 / 49) ** 0.5) < 0.02 and float(parts["gdconv.bias"].abs().max()) == 0.0
    logits = forward(spec, init_theta(spec, torch.Generator().manual_seed(1)), torch.rand(16, 3, 112, 112) * 2 - 1)
    assert torch.isfinite(logits).all() and 1e-3 < float(logits.std()) < 10


def test_batched_gdconv_agrees_with_the_loop():
    spec = SMALL_V3
    thetas = torch.stack([init_theta(spec, torch.Generator().manual_seed(i)) + 0.05 for i in range(3)])
    x = torch.randn(5, 3, 48, 48)
    loop = torch.stack([forward(spec, t, x) for t in thetas])
    torch.testing.assert_close(stacked_scores(spec, thetas, x), loop, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(vmap_scores(spec, thetas, x), loop, atol=1e-5, rtol=1e-4)
    per_user = torch.randn(3, 2, 3, 48, 48)
    loop2 = torch.stack([forward(spec, t, xi) for t, xi in zip(thetas, per_user)])
    torch.testing.assert_close(score_matrix(spec, thetas, per_user, "stacked", chunk=2), loop2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(score_matrix(spec, thetas, per_user, "vmap"), loop2, atol=1e-5, rtol=1e-4)


def test_generator_embedding_model_and_user_file_carry_the_head(tmp_path):
    spec = SMALL_V3
    gen = WeightGenerator(spec, embed_dim=8, hidden=16)
    thetas = gen(torch.nn.functional.normalize(torch.randn(2, 8), dim=1))
    stacked_scores(spec, thetas, torch.randn(4, 3, 48, 48)).sum().backward()
    a, b, _ = spec.offsets()["gdconv.weight"]
    assert gen.out.weight.grad[a:b].abs().sum() > 0        # the head's weights are generated and trained
    model = EmbeddingF(spec, embed_dim=8)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 8)
    assert set(model.body_theta()) == {n for n, _ in spec.layout() if not n.startswith("fc2")}
    path = UserModel(thetas[0].detach().numpy(), spec, 0.5, torch.ones(8).numpy()).save(tmp_path / "u.safetensors")
    assert UserModel.load(path, expected=spec).spec == spec
