"""BRIMs core step time as a ratio to a stepwise ``nn.LSTM`` doing the same work.

Both run in this process on the same inputs: T steps, one call per step (the way a
policy steps during rollouts), forward only and forward+backward. Prints a markdown table.

    python benchmarks/core_speed.py [--device auto] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable

import torch
from torch import nn

from brims_rl import BRIMs
from brims_rl.utils import resolve_device

INPUT_SIZE, HIDDEN, LAYERS, STEPS = 512, 510, 2, 32
# Toggling oneDNN on a CPU-only build warns about Intel-GPU TF32, which does not apply here.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


def stepwise(core: nn.Module, x: torch.Tensor, state) -> torch.Tensor:
    """Feed x one step at a time, carrying the state; return the stacked outputs."""
    outputs = []
    for t in range(x.shape[0]):
        out, state = core(x[t : t + 1], state)
        outputs.append(out)
    return torch.cat(outputs)


def time_it(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after two warm-up runs."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def measure(
    core: nn.Module, batch: int, backward: bool, device: torch.device, repeats: int, fused: bool = False
) -> float:
    """Seconds per time step; ``fused`` feeds the whole sequence in one call instead of stepping."""
    x = torch.randn(STEPS, batch, INPUT_SIZE, device=device)
    state = (torch.zeros(LAYERS, batch, HIDDEN, device=device),) * 2

    def forward() -> torch.Tensor:
        return core(x, state)[0] if fused else stepwise(core, x, state)

    def run() -> None:
        if backward:
            core.zero_grad(set_to_none=True)
            forward().sum().backward()
        else:
            with torch.no_grad():
                forward()

    return time_it(run, device, repeats) / STEPS


def best_lstm_step(lstm: nn.LSTM, batch: int, backward: bool, device: torch.device, repeats: int) -> float:
    """The faster of PyTorch's two CPU LSTM kernels for stepwise calls.

    oneDNN's LSTM repacks its weights on every call, which makes one-step calls several
    times slower than the native kernel; the baseline is the better of the two, so the
    ratio is not flattered by that overhead.
    """
    if device.type != "cpu":
        return measure(lstm, batch, backward, device, repeats)
    times = []
    for use_onednn in (True, False):
        with torch.backends.mkldnn.flags(enabled=use_onednn):
            times.append(measure(lstm, batch, backward, device, repeats))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    lstm = nn.LSTM(INPUT_SIZE, HIDDEN, num_layers=LAYERS).to(device)
    brims = BRIMs(INPUT_SIZE, HIDDEN, num_layers=LAYERS, num_modules=6, top_k=4).to(device)
    print(f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"BRIMs: {LAYERS} layers, 6 modules top-4, hidden {HIDDEN}, input {INPUT_SIZE}, T={STEPS}, stepped one call per step")
    print()
    print("| batch | pass | nn.LSTM stepwise ms/step | BRIMs ms/step | BRIMs / LSTM | (nn.LSTM fused, one call) |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch in (8, 64):
        for backward in (False, True):
            lstm_s = best_lstm_step(lstm, batch, backward, device, args.repeats)
            brims_s = measure(brims, batch, backward, device, args.repeats)
            fused_s = measure(lstm, batch, backward, device, args.repeats, fused=True)
            name = "fwd+bwd" if backward else "forward"
            print(
                f"| {batch} | {name} | {lstm_s * 1e3:.3f} | {brims_s * 1e3:.3f} | "
                f"**{brims_s / lstm_s:.2f}x** | {fused_s * 1e3:.3f} |"
            )


if __name__ == "__main__":
    main()
