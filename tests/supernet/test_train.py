from types import SimpleNamespace

import numpy as np

from supernet.space import DEFAULT_SPACE as S
from supernet.train import Phase, ProgressiveShrinkingTrainer


def _archs(phase: Phase, seed: int = 0) -> list[dict]:
    # _step_archs only reads net.space: no network needed to check the sampling rule.
    trainer = SimpleNamespace(net=SimpleNamespace(space=S))
    return ProgressiveShrinkingTrainer._step_archs(trainer, phase, np.random.default_rng(seed))


def test_sandwich_with_smallest_trains_both_ends_and_random_subnets():
    phase = Phase(name="sandwich", epochs=1, lr=1e-3, kernels=[3, 5, 7], depths=[2, 3, 4], expands=[3, 4, 6],
                  n_subnets=2, include_smallest=True)
    archs = _archs(phase)
    assert len(archs) == 4
    assert archs[0] == S.largest() and archs[1] == S.smallest()
    for arch in archs[2:]:
        S.validate(arch)  # raises on an arch outside the space


def test_smallest_respects_the_phase_choices():
    # in the elastic-kernel phase depth and expand are still fixed at their maximum
    phase = Phase(name="kernel", epochs=1, lr=1e-3, kernels=[3, 5, 7], include_smallest=True)
    smallest = _archs(phase)[1]
    assert set(smallest["k"]) == {3} and set(smallest["d"]) == {max(S.depths)} and set(smallest["e"]) == {max(S.expands)}


def test_default_phase_trains_only_the_largest():
    assert _archs(Phase(name="full", epochs=1, lr=1e-3)) == [S.largest()]


def test_largest_weight_sets_the_largest_subnets_share_of_the_step_loss():
    import torch

    phase = Phase(name="polish", epochs=1, lr=0.0, kernels=[3, 5, 7], depths=[2, 3, 4], expands=[3, 4, 6],
                  n_subnets=1, include_smallest=True, largest_weight=3.0)
    param = torch.nn.Parameter(torch.ones(1))
    active = {}
    # The loss of each subnet is param * (a number that identifies the subnet): the gradient is then
    # the weighted mean of those numbers.
    slope = {"largest": 10.0, "smallest": 1.0, "other": 4.0}

    def which(arch):
        return "largest" if arch == S.largest() else "smallest" if arch == S.smallest() else "other"

    net = SimpleNamespace(space=S, set_active=lambda arch: active.update(arch=arch))
    trainer = SimpleNamespace(
        net=net, state=SimpleNamespace(global_step=0, step_in_phase=0),
        cfg=SimpleNamespace(seed=0, channels_last=False, grad_clip=0.0),
        lr_at=lambda ph, step: 0.0, optimizer=torch.optim.SGD([param], lr=0.0),
        loss_fn=lambda emb, batch: (emb.sum(), {}))

    def model(image):
        return param * slope[which(active["arch"])]
    model.train = lambda: None
    trainer.model = model
    trainer._step_archs = lambda ph, rng: ProgressiveShrinkingTrainer._step_archs(trainer, ph, rng)
    ProgressiveShrinkingTrainer._train_step(trainer, phase, {"image": torch.zeros(1)})
    assert abs(float(param.grad) - (3 * 10.0 + 1.0 + 4.0) / 5) < 1e-6


def test_a_phase_with_fixed_archs_trains_them_and_can_leave_the_largest_out():
    """Fine-tuning a searched subnet in place: its arch in every step, the largest's weight 0 skips it."""
    import torch

    fixed = S.sample(np.random.default_rng(3))
    phase = Phase(name="finetune", epochs=1, lr=0.0, largest_weight=0.0, archs=[fixed])
    assert _archs(phase) == [S.largest(), S.validate(fixed)]
    seen = []
    param = torch.nn.Parameter(torch.ones(1))
    net = SimpleNamespace(space=S, set_active=seen.append)
    trainer = SimpleNamespace(
        net=net, state=SimpleNamespace(global_step=0, step_in_phase=0),
        cfg=SimpleNamespace(seed=0, channels_last=False, grad_clip=0.0),
        lr_at=lambda ph, step: 0.0, optimizer=torch.optim.SGD([param], lr=0.0),
        loss_fn=lambda emb, batch: (emb.sum(), {}))
    model = lambda image: param * 2.0  # noqa: E731
    model.train = lambda: None
    trainer.model = model
    trainer._step_archs = lambda ph, rng: ProgressiveShrinkingTrainer._step_archs(trainer, ph, rng)
    ProgressiveShrinkingTrainer._train_step(trainer, phase, {"image": torch.zeros(1)})
    assert seen == [S.validate(fixed)]                   # the largest never ran
    assert abs(float(param.grad) - 2.0) < 1e-6           # the fixed subnet carries the whole step

