"""The generator's output parametrisations (full / lowrank / modulation): shapes, init, gradients,
save/load, parameter counts, the shipped generator's unchanged theta, and a few training steps each."""
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperver.errors import ConfigError
from hyperver.hypernet.generator import OUTPUTS, WeightGenerator, modulation_slots
from hyperver.hypernet.model_io import load_generator, save_generator
from hyperver.hypernet.verifier import VerifierSpec

REPO = Path(__file__).resolve().parents[2]
# The checksums below belong to this file: a new shipped generator updates them (and this path) deliberately.
SHIPPED = REPO / "assets" / "hypernet" / "generator_v3.safetensors"
SMALL_F = VerifierSpec(input_size=32, channels=(8, 16, 16, 16), groups=(1, 2, 2, 2), hidden=8)
EMBED_DIM, HIDDEN, RANK = 16, 32, 4


def _generator(output: str, spec: VerifierSpec = SMALL_F, delta_scale: float = 0.1) -> WeightGenerator:
    torch.manual_seed(0)
    return WeightGenerator(spec, embed_dim=EMBED_DIM, hidden=HIDDEN, n_linear=3, delta_scale=delta_scale,
                           output=output, rank=RANK)


def _embeddings(users: int = 5) -> torch.Tensor:
    return torch.randn(users, EMBED_DIM, generator=torch.Generator().manual_seed(1))


def test_registry_lists_the_three_outputs():
    assert set(OUTPUTS) == {"full", "lowrank", "modulation"}


@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("head", ["gap", "gdconv"])
def test_maps_users_to_thetas_near_the_base_but_distinct(output, head):
    spec = VerifierSpec(input_size=32, channels=(8, 16, 16, 16), groups=(1, 2, 2, 2), hidden=8, head=head)
    gen = _generator(output, spec)
    with torch.no_grad():
        thetas = gen(_embeddings())
    assert thetas.shape == (5, spec.n_params) and torch.isfinite(thetas).all()
    change = (thetas - gen.theta_base).norm(dim=1) / gen.theta_base.norm()
    assert (change < 0.05).all(), change                      # small per-user change at init
    assert (change > 0).all()
    between_users = (thetas[0] - thetas[1:]).abs().amax(dim=1)
    assert (between_users > 1e-6).all()                       # ...but users differ


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_gradients_reach_every_parameter(output):
    gen = _generator(output)
    thetas = gen(_embeddings())
    target = torch.randn(thetas.shape, generator=torch.Generator().manual_seed(2))
    ((thetas - target) ** 2).sum().backward()
    missing = [name for name, p in gen.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_save_load_round_trip(output, tmp_path):
    gen = _generator(output).eval()
    with torch.no_grad():
        gen.theta_base.add_(0.01)  # not the init: the trained values must come back
    e = _embeddings()
    exact = tmp_path / "fp32.safetensors"
    save_generator(gen, exact, backbone="dlib", dtype=torch.float32)
    loaded, meta = load_generator(exact)
    assert loaded.config == gen.config and loaded.config["output"] == output and meta["backbone"] == "dlib"
    assert ("rank" in loaded.config) == (output == "lowrank")
    with torch.no_grad():
        assert torch.equal(loaded(e), gen(e))
        # the default fp16 file: the same up to fp16 rounding, and stable when saved again
        half = save_generator(gen, tmp_path / "fp16.safetensors", backbone="dlib")
        once = load_generator(half)[0]
        again = load_generator(save_generator(once, tmp_path / "again.safetensors", backbone="dlib"))[0]
        torch.testing.assert_close(once(e), gen(e), rtol=0, atol=1e-3)
        assert torch.equal(again(e), once(e))


def test_full_output_keeps_the_old_state_dict_keys():
    keys = set(_generator("full").state_dict())
    assert {"out.weight", "out.bias", "theta_base", "delta_scale", "input_mean"} <= keys
    assert not any(k.startswith("out.") and k not in ("out.weight", "out.bias") for k in keys)


def test_unknown_output_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="full.*lowrank.*modulation"):
        _generator("sparse")


def test_parameter_counts():
    spec = VerifierSpec()  # the default f: 23,009 params
    P, hidden, rank = spec.n_params, 512, 64
    counts = {o: WeightGenerator(spec, hidden=hidden, output=o, rank=rank).n_output_params for o in OUTPUTS}
    assert P == 23009
    assert counts["full"] == hidden * P + P
    assert counts["lowrank"] == P * rank + hidden * rank + rank
    # normalised convs: one scale per input channel, no bias shift; mix and head: per output channel + biases
    convs = [f"conv{i}" for i in range(len(spec.channels))]
    shapes = dict(spec.layout())
    n_values = sum(shapes[f"{c}.weight"][1] * g for c, g in zip(convs, spec.groups)) + \
        sum(s[0] for n, s in spec.layout() if n.split(".")[0] not in convs)
    assert counts["modulation"] == hidden * n_values + n_values and 200 < n_values < 1000


def test_modulation_slots_scale_channels_where_the_norm_keeps_them():
    spec = SMALL_F
    slot, scaled, moved, n_values = modulation_slots(spec)
    # conv1 (2 groups, followed by instance norm): one scale per input channel, shared by its group's outputs
    a, b, shape = spec.offsets()["conv1.weight"]
    per_weight = slot[a:b].reshape(shape)
    assert scaled[a:b].all() and (per_weight == per_weight[:, :, :1, :1]).all()
    out, per_group = shape[:2]
    half = out // 2
    assert (per_weight[:half, :, 0, 0] == per_weight[:1, :, 0, 0]).all()        # same group, same scales
    assert per_weight[:, :, 0, 0].unique().numel() == 2 * per_group              # = conv1's input channels
    a, b, _ = spec.offsets()["conv1.bias"]
    assert not moved[a:b].any()                                                   # undone by the norm
    # fc1 (after the norm): per output channel, and its bias shifted
    a, b, shape = spec.offsets()["fc1.weight"]
    assert (slot[a:b].reshape(shape) == slot[a:b].reshape(shape)[:, :1]).all()
    a, b, _ = spec.offsets()["fc1.bias"]
    assert moved[a:b].all() and not scaled[a:b].any() and slot[a:b].unique().numel() == b - a
    assert slot[moved].unique().numel() == n_values and slot.max() == n_values - 1
    # generated weights are the base's, scaled per slot: their ratio is constant within a slot
    gen = _generator("modulation")
    with torch.no_grad():
        gen.out.values.weight.normal_(std=0.1)
        theta = gen(_embeddings(1))[0]
    a, b, shape = spec.offsets()["fc1.weight"]
    ratio = (theta[a:b] / gen.theta_base[a:b]).reshape(shape[0], -1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


def test_every_modulation_value_changes_f():
    """The first version scaled the normalised convs per output channel: half its values did nothing."""
    from hyperver.hypernet.verifier import forward, init_theta

    spec = SMALL_F
    gen = _generator("modulation")
    n_values = gen.out.values.out_features
    dead = set(range(n_values))
    # a unit that no input activates (ReLU) hides its value for one random f: dead means dead for all three
    for seed in range(3):
        torch.manual_seed(seed)
        base = init_theta(spec)
        x = torch.rand(8, 3, spec.input_size, spec.input_size) * 2 - 1
        with torch.no_grad():
            reference = forward(spec, base, x)
            gen.out.values.weight.zero_()
            for k in sorted(dead):   # through the output's own generate: only value k is non-zero
                gen.out.values.bias.zero_()
                gen.out.values.bias[k] = 5.0
                theta = gen.out.generate(torch.zeros(1, HIDDEN), base, torch.tensor(1.0))[0]
                if (forward(spec, theta, x) - reference).abs().max() > 1e-5:
                    dead.discard(k)
    assert not dead, f"{len(dead)} of {n_values} modulation values leave f unchanged"


def _reference_full_theta(state: dict[str, torch.Tensor], e: torch.Tensor) -> torch.Tensor:
    """Today's formula, written out independently of WeightGenerator (4 linear layers)."""
    F = torch.nn.functional
    x = F.normalize(e - state["input_mean"], dim=1)
    x = F.layer_norm(x, x.shape[1:], state["mlp.0.weight"], state["mlp.0.bias"])
    for lin, norm in ((1, 2), (4, 5), (7, 8)):
        x = F.linear(x, state[f"mlp.{lin}.weight"], state[f"mlp.{lin}.bias"])
        x = F.gelu(F.layer_norm(x, x.shape[1:], state[f"mlp.{norm}.weight"], state[f"mlp.{norm}.bias"]))
    return state["theta_base"] + state["delta_scale"] * F.linear(x, state["out.weight"], state["out.bias"])


def test_shipped_generator_loads_as_full_and_its_theta_is_unchanged():
    from safetensors import safe_open

    gen, _ = load_generator(SHIPPED)
    assert gen.config["output"] == "full" and "rank" not in gen.config
    e = torch.linspace(-1, 1, 2 * gen.embed_dim, dtype=torch.float64).reshape(2, gen.embed_dim).float()
    with torch.no_grad():
        theta = gen(e)
    # Checksums of this file's theta, computed when it shipped (the dlib-space generator's matched the code
    # from before generator outputs existed): a change in loading or the forward pass shows here.
    assert theta.double().sum().item() == pytest.approx(72.84506564980575, rel=1e-9)
    assert theta.double().abs().sum().item() == pytest.approx(3025.209538480092, rel=1e-9)
    assert theta[0, 0].item() == pytest.approx(-0.1788369119167328, abs=1e-7)
    assert theta[1, 23008].item() == pytest.approx(-0.008197218179702759, abs=1e-7)
    with safe_open(str(SHIPPED), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    assert torch.equal(theta, _reference_full_theta(state, e))


TINY = """_base_: base.yaml
hypernet:
  f: {{input_size: 32, channels: [8, 16, 16, 16], groups: [1, 2, 2, 2], strides: [2, 2, 2, 2], kernel: 3, hidden: 8}}
  generator: {{hidden: 32, n_linear: 3, delta_scale: 0.1, output: {output}, rank: 4}}
  impl: {impl}
  batch_identities: 4
  batch_growth: 1
  negatives_per_user: 3
  extra_pseudo_identities: 0
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}
  steps: 2
  warmup_steps: 1
  eval_every: 2
  checkpoint_dir: {ckpt}
  threads: 1
"""


def _synthetic_data(identities: int, per_identity: int, size: int = 32, embed_dim: int = 128):
    """Random faces and unit embeddings: the generator's outputs do not care where the data comes
    from, and aligning + embedding real photos would take ~30 s (test_hypernet_train covers that)."""
    from hyperver.hypernet.data import HypernetData

    g = torch.Generator().manual_seed(3)
    n = identities * per_identity
    identity = np.repeat(np.arange(identities), per_identity)
    unit = lambda x: torch.nn.functional.normalize(x, dim=1)  # noqa: E731
    return HypernetData(torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8),
                        unit(torch.randn(n, embed_dim, generator=g)), unit(torch.randn(n, 64, generator=g)),
                        identity, [np.nonzero(identity == i)[0] for i in range(identities)])


@pytest.mark.parametrize("impl", ["stacked", "vmap"])
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_a_few_training_steps_with_each_output(output, impl, tmp_path, monkeypatch):
    from hyperver.config import load_config
    from hyperver.hypernet import train
    from hyperver.hypernet.evaluate import load_trained

    def fake_validation_pairs(cfg, backbone, size, limit_pairs=None):
        data = _synthetic_data(4, 2, size)
        return train.ValidationPairs(data, np.array([0, 2, 0, 4]), np.array([1, 3, 2, 6]),
                                     np.array([True, True, False, False]))

    monkeypatch.setattr(train, "load_hypernet_data", lambda cfg, sources, backbone, size, **kw: _synthetic_data(8, 3, size))
    monkeypatch.setattr(train, "validation_pairs", fake_validation_pairs)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(output=output, impl=impl, ckpt=tmp_path / "ckpt"))
    trainer = train.HypernetTrainer(load_config(config, env={}), log=lambda *_: None)
    start = {k: v.clone() for k, v in trainer.gen.state_dict().items()}
    state = trainer.train()
    assert state.step == 2 and 0.0 <= state.best_val_auc <= 1.0
    assert trainer.gen.config["output"] == output
    moved = [k for k, v in trainer.gen.named_parameters() if not torch.equal(start[k], v.detach())]
    assert set(moved) == {k for k, _ in trainer.gen.named_parameters()}   # the optimiser updated every parameter
    gen, _ = load_trained(checkpoint=str(tmp_path / "ckpt" / "best.pt"))   # the checkpoint rebuilds this output
    assert gen.config == trainer.gen.config
