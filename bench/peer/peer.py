#!/usr/bin/env python3
"""The PyTorch peer of `tost bench`: the same workloads, the same JSON records.

    python3 bench/peer/peer.py [--seq 256,1024] [--ops tssa,...,linear] [--backward]
        [--no-projections] [--dim 384 --heads 8 --batch 1] [--repeats 5 --warmup 1] --json
    python3 bench/peer/peer.py --model [--images 64,128,224] --json
    python3 bench/peer/peer.py --train [--preset small | --config f.json] [--steps 10] --json
    python3 bench/peer/peer.py --eval model.pth [--batch 128] --json

Feed its output to `tost bench --compare peer.json` (see README.md). Every
workload is checked against the reference fixtures before anything is timed.
CPU times are wall-clock medians (`gpu_ms` is null); peak memory is not
measured (`peak_bytes` is null).
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the script in the repository

# Before torch loads OpenMP/OpenBLAS: idle threads sleep instead of spinning (PERF.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fixtures as fx  # noqa: E402
import tost_torch as tt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures"))
ATTENTION_OPS = [
    "tssa",
    "causal-tssa",
    "softmax",
    "causal-softmax",
    "flash-softmax",
    "causal-flash-softmax",
]
DEFAULT_OPS = ["tssa", "causal-tssa", "softmax", "flash-softmax"]
LINEAR_SHAPES = "4096x384x1152,4096x1536x384,4096x384x384,1024x1024x1024,768x128x384,512x64x192"
# Vocabulary sizes of tost's data sets (sotu at character level: sorted(set(text))).
VOCAB = {("sotu", "char"): 98, ("sotu", "gpt2"): 50257}


# ---------------------------------------------------------------- tost's deterministic data

LCG_CHUNK = 1 << 20
_A = np.cumprod(np.full(LCG_CHUNK, 1664525, dtype=np.uint64))  # a^i mod 2^64, i = 1..
_S = np.cumsum(np.concatenate([np.ones(1, np.uint64), _A[:-1]]))  # sum_{j<i} a^j


def random_fill(n: int, seed: int, scale: float) -> np.ndarray:
    """tost's `randomFill`: s <- 1664525 s + 1013904223 (mod 2^32), value (s/2^32 * 2 - 1) * scale."""
    s = (_A[:n] * np.uint64(seed) + np.uint64(1013904223) * _S[:n]) & np.uint64(0xFFFFFFFF)
    return ((s.astype(np.float64) / 4294967296.0 * 2 - 1) * scale).astype(np.float32)


def chunked_values(total: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """tost's `chunkedValues`: chunks of 2^20 values, chunk k seeded `seed + k`."""
    parts = [
        random_fill(min(LCG_CHUNK, total - start), seed + k, scale)
        for k, start in enumerate(range(0, total, LCG_CHUNK))
    ]
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.float32))


def _param(p: torch.nn.Parameter, values: np.ndarray) -> None:
    with torch.no_grad():
        p.copy_(torch.from_numpy(values).view_as(p))


# ---------------------------------------------------------------- environment


def blas_libraries() -> list[str]:
    """BLAS/LAPACK libraries mapped into this process (after a first matmul)."""
    torch.ones(8, 8) @ torch.ones(8, 8)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line or "mkl" in line}
    except OSError:
        return []
    return sorted(paths)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def environment(threads: int) -> tuple[dict, dict]:
    """The `device` object (tost's field names) and the peer's own settings."""
    blas = blas_libraries()
    openblas = any("openblas" in p for p in blas)
    if not openblas:
        print(
            "warning: PyTorch is not using OpenBLAS (apt-get install libopenblas0-pthread): "
            f"{', '.join(blas) or 'no BLAS found'}; the baseline is not the fair one",
            file=sys.stderr,
        )
    device = {
        "name": f"{cpu_name()} ({threads} threads)",
        "backend": f"pytorch {torch.__version__} cpu" + (", openblas" if openblas else ""),
        "software": False,
    }
    peer = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "blas": [os.path.basename(p) for p in blas],
        "flash_softmax": tt.flash_implementation(),
        "python": sys.version.split()[0],
        "probes": probes(),
    }
    return device, peer


# ---------------------------------------------------------------- timing


def median_ms(fn, warmup: int, repeats: int) -> float:
    """Median wall time of `fn()` in milliseconds over `repeats` runs after `warmup`."""
    for _ in range(warmup):
        fn()
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t0) * 1000)
    return statistics.median(walls)


def base_record(device: dict, repeats: int) -> dict:
    return {
        "gpu_ms": None,
        "wall_ms": None,
        "repeats": repeats,
        "status": "ok",
        "device": device["name"],
        "backend": device["backend"],
        "software": device["software"],
    }


def measure(record: dict, fn, args) -> dict:
    """Fill `wall_ms` (or `status: failed` with the error) and print a progress line."""
    try:
        record["wall_ms"] = median_ms(fn, args.warmup, args.repeats)
    except (RuntimeError, MemoryError) as err:
        record["status"] = "failed"
        record["error"] = str(err).splitlines()[0]
    return record


# ---------------------------------------------------------------- attention


def projected(op: str, dim: int) -> int:
    return 3 * dim if "softmax" in op else dim


def minimum_bytes(op: str, args, n: int, step: bool) -> int:
    """tost's `minimumBytes` (forward) and `minimumStepBytes` (forward+backward)."""
    t = args.batch * n * args.dim * 4
    p = args.batch * n * projected(op, args.dim) * 4
    probs = args.batch * args.heads * n * n * 4 if op in ("softmax", "causal-softmax") else 0
    if not step:
        return (t if args.projections else 0) + p + t + probs
    forward_end = 4 * t + p + probs
    operator_backward = 3 * t + 2 * p + (t if "softmax" in op else 0) + probs
    return max(forward_end, operator_backward, 3 * t + p)


def attention_module(op: str, dim: int, heads: int, n: int) -> torch.nn.Module:
    """The module `tost bench` times, with tost's weights (`makeWeights`)."""
    causal = op.startswith("causal")
    if op == "tssa":
        m = tt.AttentionTSSA(dim, heads, qkv_bias=False)
        w_in, w_out = m.qkv, m.to_out[0]
    elif op == "causal-tssa":
        m = tt.CausalSelfAttentionTSSA(dim, heads, block_size=n, bias=True)
        w_in, w_out = m.c_attn, m.c_proj
        _param(w_in.bias, random_fill(dim, 2, 0.1))
        _param(m.denom_bias, random_fill(heads * n, 6, 0.05))
    else:
        m = tt.SoftmaxAttention(dim, heads, causal, flash="flash" in op, bias=False)
        w_in, w_out = m.c_attn, m.c_proj
    s = 1 / math.sqrt(dim)
    _param(w_in.weight, random_fill(projected(op, dim) * dim, 1, s))
    _param(w_out.weight, random_fill(dim * dim, 3, s))
    _param(w_out.bias, random_fill(dim, 4, 0.1))
    if hasattr(m, "temp"):
        _param(m.temp, (np.float32(1) + random_fill(heads, 5, 0.2)).astype(np.float32))
    return m


def operator_alone(op: str, m: torch.nn.Module, heads: int):
    causal = op.startswith("causal")
    if op == "tssa":
        return lambda w: tt.tssa(w, m.temp, heads)
    if op == "causal-tssa":
        return lambda w: tt.causal_tssa(w, m.temp, m.denom_bias, heads)
    if "flash" in op:
        return lambda w: tt.flash_attention(w, heads, causal)
    return lambda w: tt.softmax_attention(w, heads, causal)


def attention_record(op: str, pass_: str, n: int, args, device: dict) -> dict:
    record = {
        "op": op,
        "n": n,
        "pass": pass_,
        "batch": args.batch,
        "dim": args.dim,
        "heads": args.heads,
        "projections": args.projections,
        **base_record(device, args.repeats),
        "peak_bytes": None,
        "min_bytes": minimum_bytes(op, args, n, pass_ == "fwd+bwd"),
    }
    try:
        m = attention_module(op, args.dim, args.heads, n)
        width = args.dim if args.projections else projected(op, args.dim)
        x = chunked_values(args.batch * n * width, 7).view(args.batch, n, width)
    except (RuntimeError, MemoryError) as err:
        record.update(status="failed", error=str(err).splitlines()[0])
        return record
    if pass_ == "fwd":
        run = m if args.projections else operator_alone(op, m, args.heads)

        def once():
            with torch.no_grad():
                run(x)

    else:
        dy = chunked_values(args.batch * n * args.dim, 1_000_003).view(args.batch, n, args.dim)
        x.requires_grad_(True)

        def once():
            x.grad = None  # dx is fresh every step; parameter gradients accumulate, as in tost
            m(x).backward(dy)

    return measure(record, once, args)


def probes() -> dict:
    """Values a test recomputes with tost's own code: the data and the modules agree.

    `random_fill`: tost's `randomFill(4, 7, 1)`; `chunk_edge`: `chunkedValues(2^20 + 2, 7)`
    around the chunk boundary; `modules`: the first 16 outputs of each module at 8
    tokens, width 16, 2 heads, batch 1, with tost's weights and input.
    """
    ns = argparse.Namespace(batch=1, dim=16, heads=2, projections=True)
    modules = {}
    for op in ("tssa", "causal-tssa", "softmax", "causal-softmax"):
        m = attention_module(op, ns.dim, ns.heads, 8)
        x = chunked_values(8 * ns.dim, 7).view(1, 8, ns.dim)
        with torch.no_grad():
            modules[op] = m(x).flatten()[:16].tolist()
    edge = chunked_values(LCG_CHUNK + 2, 7)[LCG_CHUNK - 2 :]
    return {
        "shape": {"n": 8, "dim": ns.dim, "heads": ns.heads, "batch": 1},
        "random_fill": random_fill(4, 7, 1).tolist(),
        "chunk_edge": edge.tolist(),
        "modules": modules,
    }


# ---------------------------------------------------------------- linear


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for part in text.split(","):
        dims = part.strip().lower().split("x")
        if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise argparse.ArgumentTypeError(f"a GEMM shape is MxKxN, got {part!r}")
        shapes.append(tuple(int(d) for d in dims))
    return shapes


def linear_record(shape: tuple[int, int, int], args, device: dict) -> dict:
    m, k, n = shape
    record = {
        "op": "linear",
        "m": m,
        "k": k,
        "n": n,
        "variant": "torch.nn.functional.linear",
        "gflops": None,
        **base_record(device, args.repeats),
    }
    x = chunked_values(m * k, 7).view(m, k)
    w = chunked_values(n * k, 1, 1 / math.sqrt(k)).view(n, k)
    b = chunked_values(n, 4, 0.1)
    with torch.no_grad():
        measure(record, lambda: F.linear(x, w, b), args)
    if record["wall_ms"]:
        record["gflops"] = 2 * m * k * n / (record["wall_ms"] * 1e6)
    return record


# ---------------------------------------------------------------- whole vision models


def vision_cfg(attention: str, dim: int, depth: int, heads: int, patch: int, classes: int):
    """A vision config with the reference's fixed choices (MLP 4, qkv bias, 2 class blocks)."""
    return dict(
        attention=attention,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        patch_size=patch,
        num_classes=classes,
        in_chans=3,
        mlp_ratio=4,
        qkv_bias=True,
        tokens_norm=True,
        cls_attn_layers=2,
        pos_hidden_dim=32,
    )


def bench_model_config(name: str) -> dict:
    """tost's `benchModelConfig`: ToST-S or ViT-S, width 384, 12 blocks, patch 16."""
    return vision_cfg("tssa" if name == "tost-s" else "softmax", 384, 12, 8, 16, 1000)


def model_records(args, device: dict) -> list[dict]:
    records = []
    for name in ("tost-s", "vit-s"):
        torch.manual_seed(0)
        model = tt.VisionToST(bench_model_config(name)).eval()
        for side in args.images:
            record = {
                "op": name,
                "image": side,
                "n": math.ceil(side / 16) ** 2,
                "pass": "fwd",
                "batch": args.batch,
                **base_record(device, args.repeats),
                "peak_bytes": None,
            }
            count = args.batch * 3 * side * side
            images = torch.sin(torch.arange(count, dtype=torch.float64) * 0.7).float()
            images = images.view(args.batch, 3, side, side)

            def once():
                with torch.no_grad():
                    model(images)

            records.append(progress(measure(record, once, args)))
    return records


# ---------------------------------------------------------------- training


def load_presets() -> dict:
    with open(os.path.join(HERE, "presets.json")) as f:
        return json.load(f)


def train_settings(args) -> dict:
    presets = load_presets()
    name = args.preset
    base = name[:-4] if name.endswith(("-gpt", "-vit")) else name
    if base not in presets:
        raise SystemExit(f"error: unknown preset {name!r} (known: {', '.join(sorted(presets))})")
    s = dict(presets[base], preset=name, attention="softmax" if base != name else "tssa")
    if args.config:
        with open(args.config) as f:
            extra = json.load(f)
        if not isinstance(extra, dict):
            raise SystemExit(f"error: config {args.config!r} must hold a JSON object")
        s.update(extra)
    if args.batch is not None:
        s["batch_size"] = args.batch
    return s


def train_model(s: dict):
    """The model, a batch maker and the unit of a training run's settings."""
    if s["data"] == "mnist":  # tost's visionModelConfig: 28 x 28 digits, patch 8
        cfg = vision_cfg(s["attention"], s["n_embd"], s["n_layer"], s["n_head"], 8, 10)
        model = tt.VisionToST(cfg)
        b = s["batch_size"]

        def batch():
            return torch.randn(b, 3, 28, 28), torch.randint(0, 10, (b,))

        def loss_of(images, labels):
            return F.cross_entropy(model(images), labels)

        return model, batch, loss_of, "images", None
    vocab = s.get("vocab_size") or VOCAB.get((s["data"], s.get("tokenizer", "char")))
    if vocab is None:
        raise SystemExit(
            f"error: the peer does not know the vocabulary of data {s['data']!r}: "
            'set "vocab_size" in the config'
        )
    cfg = {k: s[k] for k in ("attention", "block_size", "n_layer", "n_head", "n_embd", "bias")}
    model = tt.GPT({**cfg, "vocab_size": vocab})
    b, t = s["batch_size"], s["block_size"]

    def batch():  # random windows of a random token stream: the cost of real text
        data = torch.randint(0, vocab, (b * t + 1,))
        starts = torch.randint(0, b * t - t + 1, (b,))
        x = torch.stack([data[i : i + t] for i in starts])
        y = torch.stack([data[i + 1 : i + 1 + t] for i in starts])
        return x, y

    def loss_of(x, y):
        return model(x, y)[1]

    return model, batch, loss_of, "tokens", vocab


def optimizer(model: torch.nn.Module, s: dict) -> torch.optim.Optimizer:
    """AdamW with tost's groups: decay on >= 2-D tensors except temp and denom_bias."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        last = name.split(".")[-1]
        (decay if p.dim() >= 2 and last not in ("temp", "denom_bias") else rest).append(p)
    groups = [
        {"params": decay, "weight_decay": s["weight_decay"]},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=s["learning_rate"], betas=(s["beta1"], s["beta2"]), eps=s["eps"]
    )


def train_record(args, device: dict) -> dict:
    s = train_settings(args)
    torch.manual_seed(s.get("seed", 1337))
    model, batch, loss_of, unit, vocab = train_model(s)
    model.train()
    opt = optimizer(model, s)
    k = s["gradient_accumulation_steps"]
    last_loss = [math.nan]

    def step():
        for _ in range(k):
            loss = loss_of(*batch())
            (loss / k).backward()
        if s["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_loss[0] = loss.item()

    family = "vision" if unit == "images" else "language"
    names = {
        ("language", "tssa"): "causal-tost",
        ("language", "softmax"): "gpt",
        ("vision", "tssa"): "vision-tost",
        ("vision", "softmax"): "vit",
    }
    record = {
        "op": "train",
        "preset": s["preset"],
        "model": names[(family, s["attention"])],
        "attention": s["attention"],
        "n_layer": s["n_layer"],
        "n_head": s["n_head"],
        "n_embd": s["n_embd"],
        "block_size": s["block_size"],
        "batch_size": s["batch_size"],
        "gradient_accumulation_steps": k,
        "vocab_size": vocab,
        "unit": unit,
        "steps": args.steps,
        "warmup": args.warmup,
        "step_ms": None,
        f"{unit}_per_s": None,
        "loss": None,
        "optimizer": {
            key: s[key]
            for key in ("learning_rate", "weight_decay", "beta1", "beta2", "eps", "grad_clip")
        },
        **{key: v for key, v in base_record(device, args.steps).items() if key != "repeats"},
    }
    try:
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = time.perf_counter() - t0
    except (RuntimeError, MemoryError) as err:
        record.update(status="failed", error=str(err).splitlines()[0])
        return record
    items = s["batch_size"] * k * (s["block_size"] if unit == "tokens" else 1)
    record.update(
        {
            "step_ms": seconds * 1000 / args.steps,
            "wall_ms": seconds * 1000 / args.steps,
            f"{unit}_per_s": items * args.steps / seconds,
            "loss": last_loss[0],
        }
    )
    return record


# ---------------------------------------------------------------- evaluation


def eval_record(args, device: dict) -> dict:
    model, cfg = fx.vision_model(args.eval, args.key, args.eval_heads)
    b = args.batch or 128
    record = {
        "op": "eval",
        "model": "vision-tost" if cfg["attention"] == "tssa" else "vit",
        "file": os.path.basename(args.eval),
        "embed_dim": cfg["embed_dim"],
        "depth": cfg["depth"],
        "num_heads": cfg["num_heads"],
        "patch_size": cfg["patch_size"],
        "image": 28,
        "batch_size": b,
        "batch_ms": None,
        "images_per_s": None,
        "data": "random 28x28 images (MNIST's shape; the cost does not depend on the pixels)",
        **base_record(device, args.repeats),
    }
    images = torch.rand(b, cfg["in_chans"], 28, 28)

    def once():
        with torch.no_grad():
            model(images).argmax(-1)

    measure(record, once, args)
    if record["wall_ms"]:
        record["batch_ms"] = record["wall_ms"]
        record["images_per_s"] = b * 1000 / record["wall_ms"]
    return record


# ---------------------------------------------------------------- output


def log_slope(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def slopes(records: list[dict]) -> list[dict]:
    """Log-log slope of time against tokens per (op, pass), as `tost bench` fits them."""
    out = []
    series = list(dict.fromkeys((r["op"], r["pass"]) for r in records if "pass" in r))
    for op, pass_ in series:
        ok = [r for r in records if r["op"] == op and r.get("pass") == pass_ and r["status"] == "ok"]
        time_slope = log_slope([r["n"] * r["batch"] for r in ok], [r["wall_ms"] for r in ok])
        out.append({"op": op, "pass": pass_, "time": time_slope, "memory": None})
    return out


def describe(r: dict) -> str:
    what = {
        "linear": lambda: f"linear {r['m']}x{r['k']}x{r['n']}",
        "train": lambda: f"train {r['preset']} ({r['model']}, batch {r['batch_size']})",
        "eval": lambda: f"eval {r['file']} (batch {r['batch_size']})",
    }.get(r["op"])
    if what:
        return what()
    if r["op"] in ("tost-s", "vit-s"):
        return f"{r['op']} {r['image']}px"
    return f"{r['op']}{'' if r['pass'] == 'fwd' else ' ' + r['pass']} n={r['n']}"


def progress(r: dict) -> dict:
    if r["status"] != "ok":
        print(f"{describe(r)}: failed: {r['error']}", file=sys.stderr)
        return r
    extra = ""
    if r.get("gflops"):
        extra = f", {r['gflops']:.1f} GFLOP/s"
    for key in ("tokens_per_s", "images_per_s"):
        if r.get(key):
            extra += f", {r[key]:.0f} {key[:-6]}/s"
    print(f"{describe(r)}: {r['wall_ms']:.3f} ms{extra}", file=sys.stderr)
    return r


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a list like 256,1024, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="PyTorch peer of `tost bench`: the same workloads and JSON records.",
        epilog="Example: python3 bench/peer/peer.py --seq 256,1024 --json > peer.json",
    )
    p.add_argument("--seq", type=positive_ints, default=[256, 512, 1024, 2048])
    p.add_argument("--ops", default=",".join(DEFAULT_OPS), help="attention ops and/or linear")
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes(LINEAR_SHAPES))
    p.add_argument("--dim", type=positive_int, default=384)
    p.add_argument("--heads", type=positive_int, default=8)
    p.add_argument("--batch", type=positive_int, default=None, help="default 1 (128 with --eval)")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backward", action="store_true", help="also time forward+backward steps")
    p.add_argument("--no-projections", dest="projections", action="store_false")
    p.add_argument("--model", action="store_true", help="whole ToST-S and ViT-S instead")
    p.add_argument("--images", type=positive_ints, default=[64, 128, 224])
    p.add_argument("--train", action="store_true", help="training steps of a preset's model")
    p.add_argument("--preset", default="small")
    p.add_argument("--config", help="JSON settings over the preset (nanoGPT names)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed training steps")
    p.add_argument("--eval", metavar="MODEL.pth", help="vision evaluation of a checkpoint")
    p.add_argument("--key", default="model", help="checkpoint key of the state_dict")
    p.add_argument("--eval-heads", type=positive_int, help="heads of a ViT checkpoint")
    p.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads")
    p.add_argument("--fixtures", default=DEFAULT_FIXTURES, help="reference fixtures directory")
    p.add_argument("--json", action="store_true", help="print the records as JSON on stdout")
    args = p.parse_args(argv)
    modes = [m for m in ("model", "train", "eval") if getattr(args, m)]
    if len(modes) > 1:
        p.error(f"choose one of --model, --train, --eval (got {', '.join(modes)})")
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in args.ops if o not in ATTENTION_OPS + ["linear"]]
    if unknown:
        p.error(f"unknown operator {unknown[0]!r} (known: {', '.join(ATTENTION_OPS)}, linear)")
    if args.dim % args.heads:
        p.error(f"--dim {args.dim} is not divisible by --heads {args.heads}")
    if not args.projections and args.backward:
        p.error("--no-projections applies to the forward operator benchmark, not to --backward")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.batch is None and not (args.train or args.eval):
        args.batch = 1  # --train: the preset's batch_size; --eval: 128
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device, peer = environment(args.threads)
    checks = fx.operator_checks(args.fixtures) + fx.softmax_checks()
    if args.train or args.eval:
        checks += fx.language_checks(args.fixtures) + fx.vision_checks(args.fixtures)
    if args.model:
        checks += fx.vision_checks(args.fixtures)
    for c in checks:
        print(
            f"check {c['op']}{'' if c['pass'] == 'fwd' else ' ' + c['pass']} ({c['n']} tokens): "
            f"{'ok' if c['ok'] else 'FAILED'}, error {c['error']:.2e}",
            file=sys.stderr,
        )
    if not all(c["ok"] for c in checks):
        print("error: a correctness check failed: nothing timed", file=sys.stderr)
        return 1
    records: list[dict] = []
    if args.model:
        records = model_records(args, device)
    elif args.train:
        records = [progress(train_record(args, device))]
    elif args.eval:
        records = [progress(eval_record(args, device))]
    else:
        passes = ["fwd", "fwd+bwd"] if args.backward else ["fwd"]
        for pass_ in passes:
            for op in [o for o in args.ops if o != "linear"]:
                for n in args.seq:
                    records.append(progress(attention_record(op, pass_, n, args, device)))
        if "linear" in args.ops:
            records += [progress(linear_record(s, args, device)) for s in args.shapes]
    out = {"device": device, "peer": peer, "checks": checks, "slopes": slopes(records)}
    out["results"] = records
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for r in records:
            print(describe(r), r["status"], r.get("wall_ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
