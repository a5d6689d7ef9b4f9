"""The acceleration step (mask_former.engine) against the eager model it accelerates, on a GPU.

Skipped without CUDA (CI has none); run on a GPU machine with `python -m pytest -m gpu`.

Bounds come from the eager path's own float32 noise, measured in each test: the eager computation
run again from the same parameters (bilinear upsampling's backward adds with atomics, so its
gradients differ run to run) and run once with every parameter moved by one float32 ulp (how far
any other correct float32 evaluation order may land). A fast path that is right lands within a
small multiple of that; a wrong replay (stale inputs, reused buffers) is off by O(1). Fixed bounds
calibrated on one GPU failed on another.
"""
import logging
import warnings
from typing import Callable, List, Sequence

import pytest
import torch
from detectron2.modeling import build_model

from helpers import relative_error
from mask_former.engine import (AcceleratedMaskFormer, FusedMaskCosts, FusedMaskLosses,
                                FusedSemanticMaps, accelerate, pin_batch)
from mask_former.modeling.losses import layerwise_mask_losses, pairwise_focal_and_dice_costs
from mask_former.solver import build_optimizer
from tiny_models import tiny_batch, tiny_config, tiny_mask2former_config

pytestmark = pytest.mark.gpu

ULP = 2.0 ** -23  # float32's relative spacing near 1
NOISE_FACTOR = 10
NOISE_FLOOR = 1e-7  # where the eager path is exactly reproducible: a few float32 roundings


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in tensors])


def assert_within_noise(actual, expected, noisy: Sequence, what: str) -> None:
    """`actual` (a tensor or a list of them) is `expected` up to NOISE_FACTOR times the eager
    path's own differences from `expected` (each of `noisy`), over the whole and per tensor."""
    as_list = (lambda x: [x]) if isinstance(expected, torch.Tensor) else list
    actual, expected = as_list(actual), as_list(expected)
    noisy = [as_list(n) for n in noisy]
    reference = _flat(expected)
    noise = max(relative_error(_flat(n), reference) for n in noisy)
    bound = max(NOISE_FACTOR * noise, NOISE_FLOOR)
    error = relative_error(_flat(actual), reference)
    assert error <= bound, f"{what}: relative error {error:.3g} > {bound:.3g} (eager noise {noise:.3g})"
    # Per tensor, measured against the whole: near-zero tensors are all noise.
    scale = reference.norm().clamp_min(1e-30)
    for i, (a, e) in enumerate(zip(actual, expected)):
        tensor_noise = max((n[i].double() - e.double()).norm() for n in noisy) / scale
        tensor_error = (a.double() - e.double()).norm() / scale
        assert tensor_error <= max(NOISE_FACTOR * tensor_noise, NOISE_FLOOR), f"{what}[{i}]"


@torch.no_grad()
def _perturb_parameters(model: torch.nn.Module, seed: int = 0) -> None:
    """Moves every floating-point parameter by one float32 ulp up or down, at random."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    for p in model.parameters():
        signs = torch.randint(0, 2, p.shape, device=p.device, generator=generator) * 2 - 1
        p.mul_(1 + ULP * signs)


def _cfg(norm="FrozenBN", mask2former=False, **overrides):
    cfg = tiny_mask2former_config() if mask2former else tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.RESNETS.NORM = norm
    # SGD without momentum: stateless, so a step can be re-run from the same parameters.
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = "SGD", 0.01, 0.0
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def _twins(cfg):
    """An eager model and an accelerated twin with the same weights."""
    torch.manual_seed(0)
    eager = build_model(cfg).train()
    twin = build_model(cfg).train()
    twin.load_state_dict(eager.state_dict())
    fast = accelerate(twin, cfg)
    assert isinstance(fast, AcceleratedMaskFormer)
    return eager, fast


def _step(model, batch, autocast_dtype=None, optimizer=None, seed=0):
    """One training step: (loss, gradients of the parameters that have one). Seeded: Mask2Former's
    losses draw random points."""
    torch.manual_seed(seed)
    with torch.autocast("cuda", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        losses = model(batch)
    total = sum(losses.values())
    model.zero_grad(set_to_none=True)
    total.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        optimizer.step()
    return total.detach(), grads


def _eager_noise(eager, batch, **kwargs) -> List[tuple]:
    """The eager step re-run from the same parameters, and run with perturbed parameters."""
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    again = _step(eager, batch, **kwargs)
    _perturb_parameters(eager)
    perturbed = _step(eager, batch, **kwargs)
    eager.load_state_dict(state)
    return [again, perturbed]


@torch.no_grad()
def _eager_inference_noise(eager, batch) -> List[List[dict]]:
    """Eager inference re-run, and run with perturbed parameters (inference is exactly
    reproducible: the perturbation gives the scale of float32 rounding)."""
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    again = eager(batch)
    _perturb_parameters(eager)
    perturbed = eager(batch)
    eager.load_state_dict(state)
    return [again, perturbed]


@pytest.fixture
def deterministic_cudnn():
    """Deterministic float32 convolutions: TF32 (PyTorch's default for cuDNN) rounds at ~1e-3,
    and a graph's recording may pick another algorithm than eager mode."""
    previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = previous


def _noise_of(fn: Callable, inputs: Sequence[torch.Tensor]):
    """fn(*inputs) re-run, and run on inputs moved by one ulp."""
    generator = torch.Generator(device="cuda").manual_seed(1)
    perturbed = [x.detach().mul(1 + ULP * (torch.randint(0, 2, x.shape, device=x.device,
                                                         generator=generator) * 2 - 1))
                 .requires_grad_(x.requires_grad) for x in inputs]
    return [fn(*inputs), fn(*perturbed)]


def _losses_and_grad(loss_fn):
    def run(pred, target, num_masks):
        pred = pred.detach().requires_grad_(True)
        focal, dice = loss_fn(pred, target, num_masks)
        (grad,) = torch.autograd.grad(20 * focal.sum() + dice.sum(), pred)
        return [focal.detach(), dice.detach(), grad]
    return run


@pytest.mark.parametrize("layers", [1, 3])
def test_fused_mask_losses_match_eager(layers):
    torch.manual_seed(0)
    pred = torch.randn(layers, 12, 32, 40, device="cuda")
    target = torch.rand(12, 128, 160, device="cuda") > 0.5
    num_masks = torch.tensor(5.0, device="cuda")
    eager = _losses_and_grad(layerwise_mask_losses)
    expected = eager(pred, target, num_masks)
    noisy = _noise_of(lambda p: eager(p, target, num_masks), [pred])
    fused = _losses_and_grad(FusedMaskLosses())(pred, target, num_masks)
    assert fused[0].shape == (layers,)
    assert_within_noise(fused, expected, noisy, "fused mask losses")


def test_fused_matching_costs_match_eager():
    """MaskFormer's costs on (L * B * Q, h * w) mask logits against the batch's targets."""
    torch.manual_seed(0)
    pred = torch.randn(100, 4096, device="cuda")
    target = (torch.rand(13, 4096, device="cuda") > 0.5).float()
    costs = pairwise_focal_and_dice_costs
    expected = list(costs(pred, target))
    noisy = [list(n) for n in _noise_of(costs, [pred, target])]
    fused = list(FusedMaskCosts(costs)(pred, target))
    assert_within_noise(fused, expected, noisy, "fused matching costs")


def test_graphed_training_steps_match_eager(deterministic_cudnn):
    cfg = _cfg()
    eager, fast = _twins(cfg)
    optimizer = build_optimizer(cfg, fast.model)
    for seed in range(4):
        batch = tiny_batch(sizes=((96, 96), (96, 96)), seed=seed)
        expected = _step(eager, batch)
        noisy = _eager_noise(eager, batch)
        loss, grads = _step(fast, batch, optimizer=optimizer)
        assert_within_noise(loss, expected[0], [n[0] for n in noisy], f"loss, step {seed}")
        assert_within_noise(grads, expected[1], [n[1] for n in noisy], f"gradients, step {seed}")
        # The next step starts from the eager parameters again, copied in place: the recorded
        # graphs must read the new values.
        fast.load_state_dict(eager.state_dict())
    assert fast._train_graphs.disabled is None
    assert len(fast._train_graphs.graphs) == 1  # recorded once, replayed after


def test_graphed_training_updates_batchnorm_statistics_like_eager(deterministic_cudnn):
    eager, fast = _twins(_cfg(norm="BN"))
    batch = tiny_batch(sizes=((96, 96), (96, 96)))
    before = {k: v.clone() for k, v in eager.state_dict().items()}
    expected = _step(eager, batch)
    eager_buffers = {k: v.clone() for k, v in eager.named_buffers()}
    eager.load_state_dict(before)
    again = _step(eager, batch)
    again_buffers = dict(eager.named_buffers())
    loss, _ = _step(fast, batch)
    assert fast._train_graphs.graphs
    assert_within_noise(loss, expected[0], [again[0]], "loss")
    for name, value in fast.model.named_buffers():
        # one update each: the recording's warm-up passes are undone
        assert_within_noise(value, eager_buffers[name], [again_buffers[name]], name)


def test_graphed_training_accumulates_gradients_like_eager(deterministic_cudnn):
    eager, fast = _twins(_cfg())
    state = {k: v.clone() for k, v in eager.state_dict().items()}

    def accumulate(model):
        model.zero_grad(set_to_none=True)
        for seed in range(3):  # no zero_grad in between: gradients add up
            sum(model(tiny_batch(sizes=((64, 64), (64, 64)), seed=seed)).values()).backward()
        return [p.grad.clone() for p in model.parameters()]

    expected = accumulate(eager)
    again = accumulate(eager)
    _perturb_parameters(eager)
    perturbed = accumulate(eager)
    eager.load_state_dict(state)
    grads = accumulate(fast)
    assert fast._train_graphs.graphs
    assert_within_noise(grads, expected, [again, perturbed], "accumulated gradients")


def test_graphed_training_in_bf16_matches_eager_bf16(deterministic_cudnn):
    eager, fast = _twins(_cfg())
    batch = tiny_batch(sizes=((64, 64), (64, 64)))
    expected = _step(eager, batch, torch.bfloat16)
    noisy = _eager_noise(eager, batch, autocast_dtype=torch.bfloat16)
    for _ in range(2):
        loss, grads = _step(fast, batch, torch.bfloat16)
        assert_within_noise(loss, expected[0], [n[0] for n in noisy], "bf16 loss")
        assert_within_noise(grads, expected[1], [n[1] for n in noisy], "bf16 gradients")
    assert len(fast._train_graphs.graphs) == 1


def test_training_graphs_beyond_max_shapes_run_eagerly(caplog, deterministic_cudnn):
    eager, fast = _twins(_cfg(**{"ACCELERATION.CUDA_GRAPH_MAX_SHAPES": "1"}))
    with caplog.at_level(logging.WARNING):
        for sizes in (((64, 64), (64, 64)), ((96, 64), (96, 64)), ((64, 64), (64, 64))):
            batch = tiny_batch(sizes=sizes)
            expected = _step(eager, batch)
            noisy = _eager_noise(eager, batch)
            loss, _ = _step(fast, batch)
            assert_within_noise(loss, expected[0], [n[0] for n in noisy], f"loss at {sizes}")
    assert len(fast._train_graphs.graphs) == 1
    assert "run eagerly" in caplog.text


def test_pin_batch_pins_what_the_model_copies():
    batch = pin_batch(tiny_batch())
    for item in batch:
        assert item["image"].is_pinned()
        assert item["instances"].gt_masks.is_pinned() and item["instances"].gt_classes.is_pinned()


def test_accelerated_inference_matches_eager_and_leaves_inputs_alone():
    torch.manual_seed(0)
    cfg = _cfg()
    eager, fast = _twins(cfg)
    eager.eval(), fast.eval()
    batch = tiny_batch(sizes=((64, 96), (64, 96)))
    for item in batch:
        del item["instances"]
    images = [item["image"] for item in batch]
    with torch.no_grad():
        expected = eager(batch)
        noisy = _eager_inference_noise(eager, batch)
        for _ in range(3):  # records once, then replays
            results = fast(batch)
    assert len(fast._test_graphs.graphs) == 1
    assert all(item["image"] is image and not image.is_pinned() for item, image in zip(batch, images))
    for i, (result, reference) in enumerate(zip(results, expected)):
        assert_within_noise(result["sem_seg"], reference["sem_seg"],
                            [n[i]["sem_seg"] for n in noisy], "sem_seg")


@pytest.mark.parametrize("triton_maps", ["True", "False"], ids=["triton_maps", "compiled_maps"])
def test_compiled_inference_matches_eager_in_float32_and_bf16(triton_maps):
    """ACCELERATION.COMPILE: the compiled network (its inference variant, which drops the
    auxiliary outputs) and the semantic maps (Triton's, or compiled: FusedSemanticMaps) give
    eager float32 inference's maps within its noise; in bf16 autocast they land no farther
    from float32 than eager bf16 does."""
    torch.manual_seed(0)
    cfg = _cfg(**{"ACCELERATION.COMPILE": "True", "ACCELERATION.TRITON_SEMANTIC_MAPS": triton_maps})
    eager, fast = _twins(cfg)
    eager.eval(), fast.eval()
    if triton_maps == "True":
        from mask_former.modeling.semantic_maps_triton import semantic_maps_triton

        assert fast.model.semantic_maps is semantic_maps_triton
    else:
        assert isinstance(fast.model.semantic_maps, FusedSemanticMaps)
    assert not fast.model.sem_seg_postprocess_before_inference
    batch = tiny_batch(sizes=((64, 96), (64, 96)))
    for item in batch:
        del item["instances"]

    def maps(model, bf16=False):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return torch.stack([r["sem_seg"].float() for r in model(batch)])

    expected = maps(eager)
    noisy = [torch.stack([r["sem_seg"] for r in n]) for n in _eager_inference_noise(eager, batch)]
    for _ in range(2):  # compiles, then runs the compiled code
        compiled = maps(fast)
    assert_within_noise(compiled, expected, noisy, "compiled sem_seg")
    eager_bf16_error = relative_error(maps(eager, bf16=True).double(), expected.double())
    compiled_bf16_error = relative_error(maps(fast, bf16=True).double(), expected.double())
    assert compiled_bf16_error <= 2 * eager_bf16_error + 1e-3, (compiled_bf16_error,
                                                              eager_bf16_error)


@pytest.mark.parametrize("triton_matching,expected_syncs", [("True", 0), ("False", 1)],
                         ids=["gpu_assignment", "host_assignment"])
def test_a_training_step_waits_for_the_gpu_only_for_a_host_assignment(triton_matching,
                                                                        expected_syncs):
    """With the assignment on the GPU (ACCELERATION.TRITON_MATCHING) a step never waits for the
    GPU; on the host, the matcher brings the costs of all layers there in one transfer, and
    nothing else in a step waits."""
    cfg = _cfg(**{"ACCELERATION.TRITON_MATCHING": triton_matching})
    _, fast = _twins(cfg)
    optimizer = build_optimizer(cfg, fast.model)
    batch = pin_batch(tiny_batch(sizes=((64, 64), (64, 64))))
    _step(fast, batch, optimizer=optimizer)  # records the graphs (recording syncs)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _step(fast, batch, optimizer=optimizer)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == expected_syncs, syncs


def test_compiled_network_trains_like_eager():
    cfg = _cfg(**{"ACCELERATION.TRAIN_CUDA_GRAPH": "False", "ACCELERATION.COMPILE": "True"})
    eager, fast = _twins(cfg)
    batch = tiny_batch()
    expected = _step(eager, batch)
    noisy = _eager_noise(eager, batch)
    loss, grads = _step(fast, batch)
    assert_within_noise(loss, expected[0], [n[0] for n in noisy], "compiled loss")
    assert_within_noise(grads, expected[1], [n[1] for n in noisy], "compiled gradients")


@pytest.mark.parametrize("compile_network", ["False", "True"], ids=["graphed", "compiled"])
def test_channels_last_training_matches_eager(deterministic_cudnn, compile_network):
    cfg = _cfg(**{"ACCELERATION.CHANNELS_LAST": "True", "ACCELERATION.COMPILE": compile_network})
    eager, fast = _twins(cfg)
    weights = [m.weight for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    batch = tiny_batch(sizes=((96, 96), (96, 96)))
    for _ in range(2):  # records (and compiles), then replays
        expected = _step(eager, batch)
        noisy = _eager_noise(eager, batch)
        loss, grads = _step(fast, batch)
        assert_within_noise(loss, expected[0], [n[0] for n in noisy], "channels-last loss")
        assert_within_noise(grads, expected[1], [n[1] for n in noisy], "channels-last gradients")


@pytest.mark.parametrize("attention", [{"TRITON_DEFORMABLE_ATTENTION": "False"},
                                       {"FAST_DEFORMABLE_ATTENTION": "True",
                                        "TRITON_DEFORMABLE_ATTENTION": "False"},
                                       {"TRITON_DEFORMABLE_ATTENTION": "True"}],
                         ids=["eager_attention", "compiled_attention", "triton_attention"])
def test_accelerated_mask2former_trains_and_infers_like_eager(deterministic_cudnn, attention):
    """Mask2Former's network (deformable attention, masked attention) replayed from CUDA graphs,
    its deformable attention eager, compiled or through the Triton kernels."""
    cfg = _cfg(mask2former=True, **{f"ACCELERATION.{key}": value for key, value in attention.items()})
    eager, fast = _twins(cfg)
    batch = tiny_batch(sizes=((96, 96), (96, 96)))
    for _ in range(2):  # records, then replays
        expected = _step(eager, batch)
        noisy = _eager_noise(eager, batch)
        loss, grads = _step(fast, batch)
        assert_within_noise(loss, expected[0], [n[0] for n in noisy], "Mask2Former loss")
        assert_within_noise(grads, expected[1], [n[1] for n in noisy], "Mask2Former gradients")
    assert len(fast._train_graphs.graphs) == 1
    eager.eval(), fast.eval()
    for item in batch:
        del item["instances"]
    with torch.no_grad():
        reference = eager(batch)
        noisy = _eager_inference_noise(eager, batch)
        for _ in range(2):
            results = fast(batch)
    for i, (result, ref) in enumerate(zip(results, reference)):
        assert_within_noise(result["sem_seg"], ref["sem_seg"], [n[i]["sem_seg"] for n in noisy],
                            "sem_seg")


def test_accelerate_is_the_identity_off_the_gpu_or_when_disabled():
    cfg = _cfg(**{"ACCELERATION.ENABLED": "False"})
    model = build_model(cfg)
    assert accelerate(model, cfg) is model
    assert model.criterion.mask_losses is layerwise_mask_losses
    cpu = tiny_config()
    model = build_model(cpu)
    assert accelerate(model, cpu) is model
