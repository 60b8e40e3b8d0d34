"""Would `torch.compile` fuse the routing runtime's elementwise work into something faster? A microbenchmark.

    python scripts/compile_microbench.py [--tokens 24,128,768] [--calls 200]

Times, in µs per call on all cores, three pieces of `runtime.py` that run between the int8 weight matmuls,
eager (as the runtime runs them) against `torch.compile(dynamic=True)` (inductor's fused C++ kernels):
the MLP activation gelu_tanh(gate) · up, the input scaling of `Int8Linear` (per-token peak, divide, the two
range columns), and a residual add of an RMS-normed output. Rows are tokens: ~24 for one message, at most
128 per forward in a batch (the default `batch_tokens`), 768 for 32 messages in one uncapped forward. The
shapes are Gemma 3 270M's (hidden 640, intermediate 2,048). Prints one line per token count, and the
seconds spent compiling.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

HIDDEN, INTERMEDIATE = 640, 2048


def activation(gu: torch.Tensor) -> torch.Tensor:
    return F.gelu(gu[..., :INTERMEDIATE], approximate="tanh") * gu[..., INTERMEDIATE:]


def activation_eager(gu: torch.Tensor) -> torch.Tensor:  # the runtime's in-place form
    return F.gelu(gu[..., :INTERMEDIATE], approximate="tanh").mul_(gu[..., INTERMEDIATE:])


def input_scaling(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    peak = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    return torch.cat([rows / peak, torch.ones_like(peak), -torch.ones_like(peak)], dim=1), peak


def input_scaling_eager(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # as in Int8Linear
    peak = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
    u = rows.new_empty(rows.shape[0], rows.shape[1] + 2)
    torch.div(rows, peak, out=u[:, : rows.shape[1]])
    u[:, rows.shape[1]:] = torch.tensor([1.0, -1.0])
    return u, peak


def residual_norm(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x + F.rms_norm(y, (y.shape[-1],), w, 1e-6)


def per_call_us(fn, *args, calls: int) -> float:
    for _ in range(5):
        fn(*args)
    t = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="24,128,768")
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    compiled = {name: torch.compile(fn, dynamic=True) for name, fn in
                [("activation", activation), ("input_scaling", input_scaling), ("residual_norm", residual_norm)]}
    compile_s = 0.0
    print(f"threads {torch.get_num_threads()}; µs per call, eager / compiled")
    for n in (int(t) for t in args.tokens.split(",")):
        gu, x, w = torch.randn(n, 2 * INTERMEDIATE), torch.randn(n, HIDDEN), torch.randn(HIDDEN)
        with torch.inference_mode():
            t = time.perf_counter()  # first calls of each shape compile (dynamic: once per function in all)
            compiled["activation"](gu), compiled["input_scaling"](x), compiled["residual_norm"](x, x, w)
            compile_s += time.perf_counter() - t
            cells = [
                ("gelu(gate)*up", per_call_us(activation_eager, gu.clone(), calls=args.calls),
                 per_call_us(compiled["activation"], gu, calls=args.calls)),
                ("Int8Linear input scaling", per_call_us(input_scaling_eager, x, calls=args.calls),
                 per_call_us(compiled["input_scaling"], x, calls=args.calls)),
                ("residual + RMSNorm", per_call_us(residual_norm, x, x, w, calls=args.calls),
                 per_call_us(compiled["residual_norm"], x, x, w, calls=args.calls)),
            ]
        print(f"{n:4d} tokens: " + "; ".join(f"{name} {e:.0f} / {c:.0f}" for name, e, c in cells))
    print(f"compiling: {compile_s:.1f} s")


if __name__ == "__main__":
    main()
