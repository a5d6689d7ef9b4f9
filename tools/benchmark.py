#!/usr/bin/env python
"""Times MaskFormer training and inference; prints one JSON line per case.

Cases:
  train_synthetic   training steps on fixed synthetic batches: CROPxCROP images, 5-15 segments
                    each (Voronoi cells of distinct random classes), as ADE20K crops look
  train_loader      training steps fed by the config's real training data loader
                    (--loader-dataset, default CamVid under --datasets-root)
  infer_b1          inference at batch 1 on INFER_H x INFER_W images
  infer_batched     inference at --infer-batch-size
  loader_only       the real training loader alone, no model (not a default case): how fast it
                    can feed train_loader; reported once, as precision "-"

The two loader cases also say where the loader's time went: train_loader's
"data_wait_ms_per_step" (time in next(loader)), and both cases' "cpu": the main process's CPU
milliseconds a step, the share of a core each loader worker (a forked child process) was
busy, and the share of the machine's cores busy (Linux /proc; null elsewhere). Workers below
one core on a busy machine lack CPU; idle workers on an idle machine wait for the consumer.

Each case runs in every --precision (fp32, bf16 autocast). Example, one GPU:

    python tools/benchmark.py --config-file configs/ade20k/maskformer_R50.yaml \\
        --datasets-root /path/with/camvid --precision fp32 bf16

On a CPU (as CI does) pass small sizes: --crop 64 --infer-size 64 96 --batch-size 2 --iters 2.
Trailing KEY VALUE pairs override the config (MODEL.WEIGHTS "" is always set: weights do not
change speed).
"""
import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from typing import Dict, List

import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from mask_former.config import cpu_fallback, load_config
from mask_former.engine import (accelerate, build_host_lead, fused_optimizer,
                                limit_host_threads, pin_batch, pin_batches)
from mask_former.errors import UserError
from mask_former.solver import build_optimizer

CASES = ("train_synthetic", "train_loader", "infer_b1", "infer_batched")
EXTRA_CASES = ("loader_only",)
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/ade20k/maskformer_R50.yaml")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES + EXTRA_CASES)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8, help="training images per step")
    parser.add_argument("--crop", type=int, default=512, help="synthetic training image size")
    parser.add_argument("--infer-size", type=int, nargs=2, default=[512, 683], metavar=("H", "W"))
    parser.add_argument("--infer-batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per case")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed iterations first (default: 5, or 20 where the network is "
                             "compiled: compiled Mask2Former at batch 16 scattered by 40%% after 8)")
    parser.add_argument("--loader-warmup", type=int, default=20,
                        help="untimed iterations first in train_loader, which include the loader "
                             "workers' start-up")
    parser.add_argument("--datasets-root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--loader-dataset", default="camvid_sem_seg_train")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--label", default="working tree",
                        help="what code this is (a commit, 'before', ...), recorded as \"code\"")
    parser.add_argument("--channels-last", action="store_true",
                        help="convolution weights in channels-last memory format "
                             "(ACCELERATION.CHANNELS_LAST)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its algorithms for each input shape "
                             "(CUDNN_BENCHMARK, which the trainer honours too)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile backbone + head (ACCELERATION.COMPILE)")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="run backbone + head eagerly in training and inference (turns off "
                             "ACCELERATION.TRAIN_CUDA_GRAPH and ACCELERATION.TEST_CUDA_GRAPH)")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 in float32 matrix products (convolutions use it already)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile 3 more iterations and print the N costliest "
                             "operators (by device time) to stderr")
    parser.add_argument("--phases", action="store_true",
                        help="after timing a training case, run 3 eager steps under torch.profiler "
                             "and FLOP counting and print each phase's FLOPs, device time and "
                             "TFLOP/s (under \"phases\" in the case's JSON line, and as a table "
                             "on stderr)")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="after timing, run 5 more iterations under cProfile and print the N "
                             "Python functions of most cumulative time to stderr (host-side cost)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Config overrides start at the first config key (e.g. DATALOADER.NUM_WORKERS), so they may
    # follow a many-valued flag such as --precision, which would otherwise swallow them.
    first_key = next((i for i, arg in enumerate(argv) if CONFIG_KEY.match(arg)), len(argv))
    args = parser.parse_args(argv[:first_key])
    args.opts = args.opts + argv[first_key:]
    return args


def setup_cfg(args):
    """The frozen config; sets args.device to the device it runs on (the CPU where --device
    asks for CUDA and there is none) and args.warmup where it was not given."""
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = args.device
    cfg = cpu_fallback(cfg)
    args.device = cfg.MODEL.DEVICE
    if args.no_cuda_graph:
        cfg.ACCELERATION.TEST_CUDA_GRAPH = False
        cfg.ACCELERATION.TRAIN_CUDA_GRAPH = False
    # The flags turn keys on; a key set in the config or the overrides stays on without them.
    cfg.ACCELERATION.COMPILE = cfg.ACCELERATION.COMPILE or args.compile
    cfg.ACCELERATION.CHANNELS_LAST = cfg.ACCELERATION.CHANNELS_LAST or args.channels_last
    cfg.CUDNN_BENCHMARK = cfg.CUDNN_BENCHMARK or args.cudnn_benchmark
    if args.warmup is None:
        args.warmup = 20 if cfg.ACCELERATION.COMPILE else 5
    cfg.SOLVER.IMS_PER_BATCH = args.batch_size
    cfg.freeze()
    return cfg


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int,
                    with_targets: bool = True) -> List[Dict]:
    """Random images with 5-15 segments each: Voronoi cells of distinct random classes."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    batch = []
    for _ in range(batch_size):
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        item = {"image": image, "height": height, "width": width}
        if with_targets:
            num_segments = min(int(torch.randint(5, 16, (1,), generator=generator)), num_classes)
            centers = torch.rand(num_segments, 2, generator=generator) * torch.tensor([height, width])
            distance = (ys - centers[:, 0, None, None]) ** 2 + (xs - centers[:, 1, None, None]) ** 2
            cell = distance.argmin(0)
            instances = Instances((height, width))
            instances.gt_classes = torch.randperm(num_classes, generator=generator)[:num_segments]
            instances.gt_masks = cell[None] == torch.arange(num_segments)[:, None, None]
            item["instances"] = instances
        batch.append(item)
    return batch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str):
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return None


def autocast(device: str, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def _proc_cpu_seconds(fields: List[str]) -> float:
    """utime + stime of a /proc/PID/stat line split after its ')' (fields 14 and 15)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class CpuUse:
    """Where the CPUs went over a timed window, read from /proc (Linux; elsewhere `result`
    gives None): this process (in all, and its busiest threads), the loader's workers and the
    whole machine. Tells a loader whose workers lack CPU (the machine busy, the workers below
    one core each) from one whose batches wait for the consumer (the machine idle, the workers
    too).

    Workers are the child processes forked from this one, which keep its command line; other
    children, such as inductor's compile workers (a fresh interpreter each), are left out, as
    their idle time would dilute the workers' share. (A loader started through forkserver or
    spawn has no such children: its workers are not counted.)"""

    def __init__(self):
        self.available = os.path.exists("/proc/stat")

    @staticmethod
    def workers() -> Dict[int, float]:
        """CPU seconds so far of each child process forked from this one, by pid."""
        parent, seconds = os.getpid(), {}
        command = _read_bytes("/proc/self/cmdline")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = _read_bytes(f"/proc/{entry}/stat").decode().rsplit(")", 1)[1].split()
                if int(fields[1]) != parent or _read_bytes(f"/proc/{entry}/cmdline") != command:
                    continue
            except (FileNotFoundError, ProcessLookupError):  # exited while listed
                continue
            seconds[int(entry)] = _proc_cpu_seconds(fields)
        return seconds

    @staticmethod
    def threads() -> Dict[int, tuple]:
        """(name, CPU seconds so far) of each thread of this process, by thread id; the main
        thread is named "main", the others by their /proc name."""
        seconds = {}
        for entry in os.listdir("/proc/self/task"):
            try:
                stat = _read_bytes(f"/proc/self/task/{entry}/stat").decode()
            except (FileNotFoundError, ProcessLookupError):  # exited while listed
                continue
            name, fields = stat.split("(", 1)[1].rsplit(")", 1)
            tid = int(entry)
            name = "main" if tid == os.getpid() else name
            seconds[tid] = (name, _proc_cpu_seconds(fields.split()))
        return seconds

    @staticmethod
    def _machine() -> tuple:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks) - idle, sum(ticks)

    def start(self) -> None:
        if self.available:
            self.wall, self.main = time.perf_counter(), time.process_time()
            self.children, self.machine = self.workers(), self._machine()
            self.tasks = self.threads()

    def result(self, steps: int):
        if not self.available:
            return None
        wall, main = time.perf_counter() - self.wall, time.process_time() - self.main
        children = self.workers()
        alive = [pid for pid in children if pid in self.children]
        worker_seconds = sum(children[pid] - self.children[pid] for pid in alive)
        busy, total = (b - a for a, b in zip(self.machine, self._machine()))
        tasks = self.threads()
        shares = sorted(((name, (seconds - self.tasks[tid][1]) / wall)
                         for tid, (name, seconds) in tasks.items() if tid in self.tasks),
                        key=lambda entry: -entry[1])
        return {"main_cpu_ms_per_step": round(1000 * main / steps, 2),
                "workers": len(alive),
                "workers_busy": round(worker_seconds / (wall * len(alive)), 3) if alive else None,
                "machine_busy": round(busy / total, 3) if total else None,
                "cores": os.cpu_count(),
                # This process's threads above 5% of a core, busiest first: share of a core each.
                "threads": [[name, round(share, 3)] for name, share in shares[:8] if share >= 0.05],
                "thread_count": len(tasks)}


def print_cprofile(step, args, title: str) -> None:
    """Runs `step()` 5 times under cProfile; prints the functions of most cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        step()
    synchronize(args.device)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.cprofile)
    print(f"== cProfile: {title} (5 iterations)\n{text.getvalue()}", file=sys.stderr)


def print_profile(step, args, title: str) -> None:
    """Runs `step()` 3 times under torch.profiler; prints the costliest operators to stderr."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    sort_by = "self_cpu_time_total"
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        sort_by = "self_cuda_time_total"
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(3):
            step()
        synchronize(args.device)
    print(f"== profile: {title} (3 iterations)", file=sys.stderr)
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=args.profile,
                                        max_name_column_width=100), file=sys.stderr)


# The phases of a training step, each a callable of the eager model. Device time spent outside
# them (normalising the images, padding the targets, zero_grad) is reported as "other".
PHASES = ("backbone", "pixel decoder", "transformer decoder", "matcher", "losses", "backward",
          "optimizer")
MATRIX_KERNEL = re.compile(r"gemm|xmma|cutlass|conv|fprop|dgrad|wgrad|wgmma|hmma", re.IGNORECASE)


class PhaseMarks:
    """Marks phases as profiler ranges ("phase:NAME") and counts each one's FLOPs.

    FLOPs are those torch.utils.flop_counter counts (matrix products, convolutions, attention);
    a phase inside another (the matcher inside the losses) is counted in the inner one only.
    """

    def __init__(self, flop_counter=None):
        self.flop_counter = flop_counter
        self.flops = {name: 0 for name in PHASES + ("other",)}
        self._stack = []

    def _total(self) -> int:
        return self.flop_counter.get_total_flops() if self.flop_counter is not None else 0

    @contextlib.contextmanager
    def phase(self, name: str):
        with torch.profiler.record_function(f"phase:{name}"):
            self._stack.append([self._total(), 0])
            try:
                yield
            finally:
                start, nested = self._stack.pop()
                total = self._total() - start
                self.flops[name] += total - nested
                if self._stack:
                    self._stack[-1][1] += total

    def wrap(self, obj, attribute: str, name: str) -> None:
        """Marks every call of obj.<attribute> as phase `name` (an instance attribute that
        `unwrap` deletes)."""
        method = getattr(obj, attribute)

        def marked(*args, **kwargs):
            with self.phase(name):
                return method(*args, **kwargs)
        setattr(obj, attribute, marked)

    @staticmethod
    def unwrap(obj, attribute: str) -> None:
        delattr(obj, attribute)


def _phase_methods(model) -> List[tuple]:
    """(object, method name, phase) for the eager MaskFormer's parts."""
    head = model.sem_seg_head
    return [(model.backbone, "forward", "backbone"),
            (head.pixel_decoder, "forward_features", "pixel decoder"),
            (head.predictor, "forward", "transformer decoder"),
            (model.criterion.matcher, "layer_matches", "matcher"),
            (model.criterion, "forward", "losses")]


def phase_device_times(trace: dict) -> Dict[str, Dict[str, float]]:
    """Per phase, the device time (ms) of the kernels (and copies) launched inside its
    "phase:NAME" range, in all and in matrix kernels (convolutions, matrix products), from a
    Chrome trace of torch.profiler. A launch inside nested ranges counts for the innermost.
    Without device kernels (a CPU run), each range's own wall time, less its nested ranges'."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    ranges = sorted((e["ts"], e["ts"] + e["dur"], e["name"][len("phase:"):]) for e in events
                    if e.get("cat") == "user_annotation" and e["name"].startswith("phase:"))

    def innermost(ts: float) -> str:
        inside = [(end - start, name) for start, end, name in ranges if start <= ts <= end]
        return min(inside)[1] if inside else "other"

    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    device = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    times: Dict[str, Dict[str, float]] = {}
    if device:
        for e in device:
            ts = launches.get(e.get("args", {}).get("correlation"))
            name = "other" if ts is None else innermost(ts)
            entry = times.setdefault(name, {"ms": 0.0, "matrix_ms": 0.0})
            entry["ms"] += e["dur"] / 1000
            if e.get("cat") == "kernel" and MATRIX_KERNEL.search(e["name"]):
                entry["matrix_ms"] += e["dur"] / 1000
        return times
    for start, end, name in ranges:
        nested = sum(e2 - s2 for s2, e2, _ in ranges if start <= s2 and e2 <= end
                     and (s2, e2) != (start, end))
        entry = times.setdefault(name, {"ms": 0.0, "matrix_ms": 0.0})
        entry["ms"] += (end - start - nested) / 1000
    return times


def _training_steps(model, optimizer, batches, args, precision: str, marks: "PhaseMarks",
                    steps: int) -> None:
    """`steps` eager training steps with their phases marked."""
    methods = _phase_methods(model)
    for obj, attribute, name in methods:
        marks.wrap(obj, attribute, name)
    try:
        for i in range(steps):
            with autocast(args.device, precision):
                losses = model(batches[i % len(batches)])
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            with marks.phase("backward"):
                loss.backward()
            with marks.phase("optimizer"):
                optimizer.step()
        synchronize(args.device)
    finally:
        for obj, attribute, _ in methods:
            marks.unwrap(obj, attribute)


def count_phase_flops(model, optimizer, batches, args, precision: str) -> Dict[str, int]:
    """FLOPs of one training step per phase, counted on the plain eager functions (the compiled
    losses, matching costs and attention are swapped out meanwhile: compiled code hides its
    operations from the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mask_former.modeling.losses import layerwise_mask_losses
    from mask_former.modeling.pixel_decoder.ops.ms_deform_attn import MSDeformAttn

    criterion = model.criterion
    mask_losses = criterion.mask_losses
    matcher = criterion.matcher
    mask_costs = matcher.mask_costs
    attention = [(m, m.fast) for m in model.modules() if isinstance(m, MSDeformAttn)]
    criterion.mask_losses = layerwise_mask_losses
    matcher.mask_costs = getattr(mask_costs, "eager", mask_costs)
    for module, _ in attention:
        module.fast = False
    try:
        with FlopCounterMode(display=False) as counter:
            marks = PhaseMarks(counter)
            _training_steps(model, optimizer, batches, args, precision, marks, steps=1)
    finally:
        criterion.mask_losses = mask_losses
        matcher.mask_costs = mask_costs
        for module, fast in attention:
            module.fast = fast
    return marks.flops


def profile_phases(model, optimizer, batches, args, precision: str) -> List[Dict]:
    """Per phase of a training step of `model` (the eager MaskFormer, with the accelerated losses
    and attention it was given): its GFLOP, and its device ms and TFLOP/s over 3 eager steps under
    torch.profiler."""
    import tempfile

    model.train()
    flops = count_phase_flops(model, optimizer, batches, args, precision)
    steps = 3
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        _training_steps(model, optimizer, batches, args, precision, PhaseMarks(), steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        profiler.export_chrome_trace(path)
        with open(path) as f:
            times = phase_device_times(json.load(f))
    rows = []
    for name in PHASES + ("other",):
        ms = times.get(name, {}).get("ms", 0.0) / steps
        matrix_ms = times.get(name, {}).get("matrix_ms", 0.0) / steps
        gflop = flops.get(name, 0) / 1e9
        rows.append({"phase": name, "gflop": round(gflop, 3), "device_ms": round(ms, 2),
                     "matrix_ms": round(matrix_ms, 2),
                     "tflop_per_s": round(gflop / ms, 1) if ms > 0 else None})
    return rows


def print_phase_table(rows: List[Dict], title: str) -> None:
    total_ms = sum(r["device_ms"] for r in rows)
    total_gflop = sum(r["gflop"] for r in rows)
    lines = [f"== phases: {title} (per step, eager kernels)",
             "| phase | GFLOP | device ms | of which matrix ms | TFLOP/s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['phase']} | {r['gflop']} | {r['device_ms']} | {r['matrix_ms']} | "
              f"{r['tflop_per_s'] if r['tflop_per_s'] is not None else '-'} |" for r in rows]
    lines.append(f"| all | {round(total_gflop, 1)} | {round(total_ms, 2)} | "
                 f"{round(sum(r['matrix_ms'] for r in rows), 2)} | "
                 f"{round(total_gflop / total_ms, 1) if total_ms else '-'} |")
    print("\n".join(lines), file=sys.stderr)


def time_training(model, optimizer, batches, args, precision: str, warmup: int,
                  lead=None) -> Dict:
    """Full steps (forward, backward, optimizer) over `batches`, cycled; `warmup` untimed first.
    `lead` (a HostLead, as the trainer's) bounds how far the host runs ahead of the GPU."""
    model.train()
    batches = iter(batches) if not isinstance(batches, list) else batches
    counter = iter(range(10**9))
    waited = 0.0  # seconds the timed steps spent in next(batches)

    def step():
        nonlocal waited
        i = next(counter)
        if isinstance(batches, list):
            batch = batches[i % len(batches)]
        else:
            before = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - before
        with autocast(args.device, precision):
            losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if lead is not None:
            lead.step_done()
        return loss

    cpu = CpuUse()
    for i in range(warmup + args.iters):
        if i == warmup:
            synchronize(args.device)
            reset_peak_memory(args.device)
            start = time.perf_counter()
            cpu.start()
            waited = 0.0
        loss = step()
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    result = {"img_per_s": round(args.iters * args.batch_size / elapsed, 2),
              "peak_mem_gib": peak_memory_gib(args.device), "final_loss": round(loss.item(), 4)}
    if not isinstance(batches, list):  # the real loader: how long steps waited for it, and why
        result["data_wait_ms_per_step"] = round(1000 * waited / args.iters, 2)
        result["cpu"] = cpu.result(args.iters)
    if args.profile:
        print_profile(step, args, f"training, {precision}")
    if args.cprofile:
        print_cprofile(step, args, f"training, {precision}")
    if args.phases and isinstance(batches, list):
        eager = getattr(model, "model", model)  # the AcceleratedMaskFormer's own MaskFormer
        result["phases"] = profile_phases(eager, optimizer, batches, args, precision)
        print_phase_table(result["phases"], f"training, {precision}, batch {args.batch_size}")
    return result


@torch.inference_mode()
def time_inference(model, batch, args, precision: str) -> Dict:
    model.eval()
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            synchronize(args.device)
            reset_peak_memory(args.device)
            start = time.perf_counter()
        with autocast(args.device, precision):
            outputs = model(batch)
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    assert outputs[0]["sem_seg"].shape[-2:] == tuple(args.infer_size)
    result = {"img_per_s": round(args.iters * len(batch) / elapsed, 2),
              "peak_mem_gib": peak_memory_gib(args.device)}
    if args.profile or args.cprofile:
        def step():
            with autocast(args.device, precision):
                model(batch)
        if args.profile:
            print_profile(step, args, f"inference at batch {len(batch)}, {precision}")
        if args.cprofile:
            print_cprofile(step, args, f"inference at batch {len(batch)}, {precision}")
    return result


def build_loader_cfg(cfg, args):
    loader_cfg = cfg.clone()
    loader_cfg.defrost()
    loader_cfg.DATASETS.TRAIN = (args.loader_dataset,)
    loader_cfg.freeze()
    return loader_cfg


def real_training_loader(cfg, args):
    """The config's training loader over --loader-dataset, its batches pinned as the trainer's."""
    os.environ["DETECTRON2_DATASETS"] = args.datasets_root
    from mask_former.data import build_train_loader

    return pin_batches(build_train_loader(build_loader_cfg(cfg, args)), cfg)


def time_loader(cfg, args) -> Dict:
    """Batches per second of the real training loader with nothing else running."""
    batches = iter(real_training_loader(cfg, args))
    cpu = CpuUse()
    for i in range(args.loader_warmup + args.iters):
        if i == args.loader_warmup:
            start = time.perf_counter()
            cpu.start()
        next(batches)
    elapsed = time.perf_counter() - start
    return {"img_per_s": round(args.iters * args.batch_size / elapsed, 2), "peak_mem_gib": None,
            "batch_size": args.batch_size, "cpu": cpu.result(args.iters)}


def run_case(case: str, precision: str, cfg, args) -> Dict:
    if case == "loader_only":
        return time_loader(cfg, args)
    if not case.startswith("train"):
        return _run_case(case, precision, cfg, args)
    threads = limit_host_threads(cfg)  # as the trainer does, for the training cases only
    try:
        return _run_case(case, precision, cfg, args)
    finally:
        torch.set_num_threads(threads)


def _run_case(case: str, precision: str, cfg, args) -> Dict:
    torch.manual_seed(0)
    eager = build_model(cfg)
    model = accelerate(eager, cfg)  # as the trainer and the predictor run it
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if case.startswith("train"):
        optimizer = build_optimizer(cfg, eager, fused=fused_optimizer(cfg))
        warmup = args.warmup
        if case == "train_synthetic":
            batches = [synthetic_batch(args.batch_size, args.crop, args.crop, num_classes, seed)
                       for seed in range(4)]
            if args.device.startswith("cuda"):  # as the training loader delivers them
                batches = [pin_batch(batch) for batch in batches]
        else:
            batches = real_training_loader(cfg, args)
            warmup = args.loader_warmup
        result = time_training(model, optimizer, batches, args, precision, warmup,
                               lead=build_host_lead(cfg))
        result["batch_size"] = args.batch_size
    else:
        batch_size = 1 if case == "infer_b1" else args.infer_batch_size
        height, width = args.infer_size
        batch = synthetic_batch(batch_size, height, width, num_classes, seed=0, with_targets=False)
        result = time_inference(model, batch, args, precision)
        result["batch_size"] = batch_size
    return result


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = setup_cfg(args)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK  # as detectron2's default_setup
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    device_name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                   else f"cpu x{torch.get_num_threads()}")
    results = []
    for case in args.cases:
        for precision in (["-"] if case in EXTRA_CASES else args.precision):
            result = {"case": case, "precision": precision, "config": args.config_file,
                      "device": device_name, "torch": torch.__version__,
                      "code": args.label, "overrides": args.opts,
                      "options": [o for o in ("channels_last", "cudnn_benchmark", "tf32", "no_cuda_graph", "compile")
                                  if getattr(args, o)]}
            result.update(run_case(case, precision, cfg, args))
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def cli(argv=None) -> int:
    """benchmark.py with command-line arguments `argv`; returns the exit status (1 and one line
    on stderr for a UserError, such as a bad config)."""
    try:
        main(argv)
    except UserError as error:
        print(f"benchmark.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
