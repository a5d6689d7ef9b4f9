"""HostLead (ACCELERATION.MAX_STEPS_AHEAD): after the host queues training step k, it goes on only
once the GPU has run every step up to k - MAX_STEPS_AHEAD. The waits are checked on the CPU with
stand-in events, and on a GPU against steps that take a known time; the trainer installs it. The
trainer also limits its CPU threads on a GPU (ACCELERATION.TRAINING_HOST_THREADS)."""
import sys

import pytest
import torch

from conftest import REPO_ROOT
from mask_former.config import load_config
from mask_former.engine import HostLead, HostLeadHook, build_host_lead
from mask_former.errors import ConfigError
from tiny_models import QUICKSTART_CONFIG

import mask_former.engine.host_lead as host_lead_module


class _RecordedEvent:
    """Stands in for torch.cuda.Event: numbered in the order recorded; remembers being waited on."""
    recorded: list = []

    def __init__(self, blocking=False):
        self.blocking = blocking
        self.waited = False

    def record(self, stream=None):
        self.step = len(_RecordedEvent.recorded)
        _RecordedEvent.recorded.append(self)

    def synchronize(self):
        self.waited = True


@pytest.mark.parametrize("max_steps_ahead", [0, 1, 3])
def test_after_step_k_the_host_has_waited_for_step_k_minus_max_steps_ahead(monkeypatch,
                                                                          max_steps_ahead):
    monkeypatch.setattr(_RecordedEvent, "recorded", [])
    monkeypatch.setattr(host_lead_module.torch.cuda, "Event", _RecordedEvent)
    monkeypatch.setattr(host_lead_module.torch.cuda, "current_stream", lambda device: None)
    lead = HostLead("cuda", max_steps_ahead)
    for k in range(6):
        lead.step_done()
        waited = [event.step for event in _RecordedEvent.recorded if event.waited]
        assert waited == list(range(k - max_steps_ahead + 1))
    assert all(event.blocking for event in _RecordedEvent.recorded)  # sleeps, does not spin


def test_a_negative_bound_names_the_key():
    cfg = load_config(str(QUICKSTART_CONFIG), ["ACCELERATION.MAX_STEPS_AHEAD", "-1"])
    with pytest.raises(ConfigError, match=r"ACCELERATION.MAX_STEPS_AHEAD=-1: set it to 0 or more"):
        build_host_lead(cfg)


def test_no_bound_off_the_gpu():
    cfg = load_config(str(QUICKSTART_CONFIG), ["MODEL.DEVICE", "cpu"])
    assert build_host_lead(cfg) is None


def test_the_trainer_waits_first_after_each_step_and_writes_metrics_off_the_step(monkeypatch,
                                                                                 tmp_path):
    """The trainer's first hook is the bound (so the iteration timer counts the wait), and the
    bf16 loop writes its losses from a worker thread as the fp32 one does (AMPTrainer does not
    pass async_write_metrics on)."""
    sys.path.insert(0, str(REPO_ROOT))
    import train_net

    lead = object.__new__(HostLead)
    monkeypatch.setattr(train_net, "build_host_lead", lambda cfg: lead)
    cfg = load_config(str(QUICKSTART_CONFIG), ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path),
                                               "DATALOADER.NUM_WORKERS", "0"])
    trainer = train_net.Trainer(cfg)
    assert isinstance(trainer._hooks[0], HostLeadHook) and trainer._hooks[0].lead is lead
    model, optimizer = trainer.model, trainer.optimizer
    for amp in ("False", "True"):
        loop_cfg = load_config(str(QUICKSTART_CONFIG), ["SOLVER.AMP.ENABLED", amp,
                                                        "SOLVER.AMP.PRECISION", "bfloat16"])
        loop = train_net.build_train_loop(loop_cfg, model, [], optimizer)
        assert loop.async_write_metrics, f"SOLVER.AMP.ENABLED {amp}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("max_steps_ahead", [0, 1, 2])
def test_on_a_gpu_the_host_runs_at_most_max_steps_ahead(max_steps_ahead):
    """Steps of about 20 ms of GPU time each (a spinning kernel): once step_done returns after
    step k, exactly the steps up to k - max_steps_ahead have run."""
    lead = HostLead("cuda", max_steps_ahead)
    ends = []
    torch.cuda.synchronize()
    for k in range(5):
        torch.cuda._sleep(40_000_000)  # clock cycles: about 20 ms at 2 GHz
        end = torch.cuda.Event()
        end.record()
        ends.append(end)
        lead.step_done()
        assert [e.query() for e in ends] == [i <= k - max_steps_ahead for i in range(k + 1)]
    torch.cuda.synchronize()


def test_training_on_a_gpu_limits_the_hosts_cpu_threads(monkeypatch):
    """ACCELERATION.TRAINING_HOST_THREADS: set where training runs on CUDA (simulated: the device
    check passes), left alone elsewhere and with 0; a negative value names the key."""
    import importlib

    from mask_former.engine import limit_host_threads

    accelerate_module = importlib.import_module("mask_former.engine.accelerate")  # not the function

    default = torch.get_num_threads()
    cfg = load_config(str(QUICKSTART_CONFIG), ["ACCELERATION.TRAINING_HOST_THREADS", "1"])
    try:
        assert limit_host_threads(cfg) == default and torch.get_num_threads() == default  # CPU
        monkeypatch.setattr(accelerate_module, "_on_cuda", lambda cfg: True)
        cfg.ACCELERATION.TRAINING_HOST_THREADS = 0
        limit_host_threads(cfg)
        assert torch.get_num_threads() == default
        cfg.ACCELERATION.TRAINING_HOST_THREADS = 1
        assert limit_host_threads(cfg) == default and torch.get_num_threads() == 1
        cfg.ACCELERATION.TRAINING_HOST_THREADS = -2
        with pytest.raises(ConfigError, match=r"ACCELERATION.TRAINING_HOST_THREADS=-2"):
            limit_host_threads(cfg)
    finally:
        torch.set_num_threads(default)
