#!/usr/bin/env python3
"""Out-of-process peers for `cargo xtask bench cpu`: OpenBLAS (through numpy) for GEMM,
PyTorch for conv2d and the memory-bound kernels.

  OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=N python3 peer_kernels.py --threads N --reps R < cases.json

Reads a JSON list of cases from stdin (written by the Rust benchmark, so both sides run
the same shapes) and prints one JSON object: the peers' names and, per case, the median
rate in the case's unit (GFLOP/s, or GB/s of the bytes the case names).
"""
import argparse, json, statistics, sys, time

import numpy as np


def median_s(fn, reps):
    fn()  # warm-up
    calls, t = 1, 0.0
    while True:  # calls per sample: at least 20 ms, as the Rust side
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t = time.perf_counter() - t0
        if t >= 0.02:
            break
        calls *= 2
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def rand(*shape):
    return np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)


def gemm(c, reps):
    a = rand(c["k"], c["m"]).T if c.get("at") else rand(c["m"], c["k"])
    b = rand(c["n"], c["k"]).T if c["bt"] else rand(c["k"], c["n"])
    out = np.empty((c["m"], c["n"]), np.float32)
    t = median_s(lambda: np.matmul(a, b, out=out), reps)
    return 2.0 * c["m"] * c["n"] * c["k"] / t / 1e9


def torch_case(c, reps):
    import torch
    import torch.nn.functional as F

    op = c["op"]
    if op.startswith("conv"):
        x = torch.from_numpy(rand(c["n"], c["cin"], c["hw"], c["hw"]))
        w = torch.from_numpy(rand(c["cout"], c["cin"], 3, 3))
        dy = torch.from_numpy(rand(c["n"], c["cout"], c["hw"], c["hw"]))
        flop = 2.0 * c["n"] * c["cout"] * c["cin"] * 9 * c["hw"] * c["hw"]
        if op == "conv_fwd":
            fn = lambda: F.conv2d(x, w, padding=1)
        else:
            # The two backward passes on their own, as ours: aten's convolution_backward
            # with only the one gradient asked for.
            mask = [op == "conv_bwd_in", op == "conv_bwd_w", False]
            fn = lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
        with torch.no_grad():
            return flop / median_s(fn, reps) / 1e9
    x = torch.from_numpy(rand(*c["shape"]))
    if op == "adamw":
        p, g, m = [torch.from_numpy(rand(*c["shape"])) for _ in range(3)]
        v = torch.from_numpy(np.abs(rand(*c["shape"])))
        step = torch.tensor(10.0)
        # torch's fused AdamW kernel for CPU tensors (one pass), as ours.
        fn = lambda: torch._fused_adamw_([p], [g], [m], [v], [], [step], lr=1e-6, beta1=0.9,
                                         beta2=0.999, weight_decay=0.0, eps=1e-8,
                                         amsgrad=False, maximize=False)
    else:
        y = torch.from_numpy(rand(*c["shape"]))
        ch = c["shape"][1]
        w, b = torch.from_numpy(rand(ch)), torch.from_numpy(rand(ch))
        fn = {
            "gn_silu": lambda: F.silu(F.group_norm(x, 8, w, b, 1e-5)),
            "gn": lambda: F.group_norm(x, 8, w, b, 1e-5),
            "silu": lambda: F.silu(x),
            "add": lambda: x + y,
        }[op]
    with torch.no_grad():
        return c["bytes"] / median_s(fn, reps) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    cases = json.load(sys.stdin)
    names = {"blas": None, "torch": None}
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        names["blas"] = f"{cfg['name']} {cfg['version']} (numpy {np.__version__})"
    except Exception:
        names["blas"] = f"numpy {np.__version__} BLAS"
    try:
        import torch
        torch.set_num_threads(a.threads)
        names["torch"] = f"torch {torch.__version__}"
    except ImportError:
        pass
    out = []
    for c in cases:
        if c["op"] == "gemm":
            v = gemm(c, a.reps)
        elif names["torch"]:
            v = torch_case(c, a.reps)
        else:
            continue
        print(f"  peer {c['case']} on {a.threads} thread(s): {v:.1f}", file=sys.stderr)
        out.append(dict(section=c["section"], case=c["case"], value=v))
    print(json.dumps(dict(peers=names, threads=a.threads, rows=out)))


if __name__ == "__main__":
    main()
