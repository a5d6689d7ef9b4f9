"""ACCELERATION.CHANNELS_LAST: the model's convolution weights in channels-last layout, and an
optimizer state written with the other layout resumed into it (CPU; the training step's numbers
on a GPU are checked in test_cuda.py)."""
import pytest
import torch
from detectron2.modeling import build_model

from mask_former.solver import build_optimizer
from tiny_models import tiny_batch, tiny_config


def _step(model, optimizer, seed=0):
    losses = model(tiny_batch(seed=seed))
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


@pytest.mark.parametrize("saved_channels_last", [False, True], ids=["nchw_to_nhwc", "nhwc_to_nchw"])
def test_optimizer_state_takes_its_parameters_layout_when_loaded(saved_channels_last):
    cfg = tiny_config()
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if saved_channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    _step(model, optimizer)
    saved = optimizer.state_dict()
    moments = {id(p): optimizer.state[p]["exp_avg"].clone() for p in model.parameters()
               if p in optimizer.state}

    # Resumed with the other layout.
    model.to(memory_format=torch.contiguous_format if saved_channels_last else torch.channels_last)
    resumed = build_optimizer(cfg, model)
    resumed.load_state_dict(saved)
    weights = [p for p in model.parameters() if p.dim() == 4 and p in resumed.state]
    assert weights
    for param in model.parameters():
        if param not in resumed.state:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            state = resumed.state[param][key]
            assert state.stride() == param.stride(), key
        assert torch.equal(resumed.state[param]["exp_avg"], moments[id(param)])
    _step(model, resumed, seed=1)  # and the next step runs


def test_channels_last_changes_only_the_layout_of_the_outputs():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = tiny_batch(seed=0)
    for item in batch:
        del item["instances"]
    with torch.no_grad():
        expected = [r["sem_seg"] for r in model(batch)]
        model.to(memory_format=torch.channels_last)
        actual = [r["sem_seg"] for r in model(batch)]
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
