"""Checks of the peer against the reference fixtures, run before anything is timed.

The fixtures (`../shared/fixtures`, see their README) hold the authors' PyTorch
outputs in float64: the TSSA and causal TSSA modules with their gradients, and
the small vision and language checkpoints with their logits and training
gradients. Passing them means the peer computes what tost computes.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import torch

import tost_torch as tt

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
FORWARD_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (8-byte header length, JSON header, raw data)."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    data = memoryview(blob)[8 + length :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]])
        out[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return out


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max(1, max |ref|), as tost's checks measure it."""
    ref = ref.double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    return (got.double() - ref).abs().max().item() / scale


def _check(op: str, pass_: str, n: int, errors: dict[str, float], tolerance: float) -> dict:
    worst = max(errors, key=lambda k: errors[k])
    error = errors[worst]
    record = {"op": op, "pass": pass_, "n": n, "error": error, "ok": error <= tolerance}
    if pass_ != "fwd":
        record["worst"] = worst
    return record


def _load(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    module.load_state_dict(state, strict=True)


def _module_checks(op: str, module, ref: dict, key: str) -> list[dict]:
    x = ref[f"{key}.x"].clone().requires_grad_(True)
    y = module(x)
    fwd = _check(op, "fwd", x.shape[1], {"y": relative_error(y, ref[f"{key}.y"])}, FORWARD_TOLERANCE)
    y.backward(ref[f"{key}.dy"])
    errors = {"dx": relative_error(x.grad, ref[f"{key}.dx"])}
    for name, p in module.named_parameters():
        errors[name] = relative_error(p.grad, ref[f"{key}.grad.{name}"])
    return [fwd, _check(op, "fwd+bwd", x.shape[1], errors, GRADIENT_TOLERANCE)]


def operator_checks(fixtures: str) -> list[dict]:
    """TSSA and causal TSSA modules: forward, and dx plus every parameter gradient."""
    ref = read_safetensors(os.path.join(fixtures, "ops.ref.safetensors"))
    tssa = tt.AttentionTSSA(64, 4, qkv_bias=False)
    _load(tssa, ref, "tssa.param.")
    causal = tt.CausalSelfAttentionTSSA(64, 4, block_size=64, bias=True)
    _load(causal, ref, "causal.param.")
    return _module_checks("tssa", tssa, ref, "tssa") + _module_checks(
        "causal-tssa", causal, ref, "causal"
    )


def softmax_checks(n: int = 70, dim: int = 32, heads: int = 4) -> list[dict]:
    """Softmax attention against a float64 loop (forward), and the flash form's gradient.

    The flash form runs in query blocks of 16 here, so several blocks and a
    ragged last one are exercised; its gradient is checked against autograd
    through the standard form in float64.
    """
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, n, 3 * dim, generator=gen)
    q64 = qkv.double()
    d = dim // heads
    checks = []
    for op in ("softmax", "causal-softmax", "flash-softmax", "causal-flash-softmax"):
        causal = op.startswith("causal")
        ref = torch.zeros(2, n, dim, dtype=torch.float64)
        for h in range(heads):
            q = q64[:, :, h * d : (h + 1) * d]
            k = q64[:, :, dim + h * d : dim + (h + 1) * d]
            v = q64[:, :, 2 * dim + h * d : 2 * dim + (h + 1) * d]
            for i in range(n):
                keys = i + 1 if causal else n
                s = (k[:, :keys] @ q[:, i].unsqueeze(-1)).squeeze(-1) / d**0.5
                p = torch.softmax(s, dim=-1)
                ref[:, i, h * d : (h + 1) * d] = (p.unsqueeze(-1) * v[:, :keys]).sum(1)
        flash = "flash" in op

        def attend(x):
            if flash:
                return tt.flash_attention(x, heads, causal, block=16)
            return tt.softmax_attention(x, heads, causal)

        got = attend(qkv)
        checks.append(_check(op, "fwd", n, {"y": relative_error(got, ref)}, FORWARD_TOLERANCE))
        if flash:
            dy = torch.randn(2, n, dim, generator=gen)
            x = qkv.clone().requires_grad_(True)
            attend(x).backward(dy)
            x64 = q64.clone().requires_grad_(True)
            tt.softmax_attention(x64, heads, causal).backward(dy.double())
            errors = {"dqkv": relative_error(x.grad, x64.grad)}
            checks.append(_check(op, "fwd+bwd", n, errors, GRADIENT_TOLERANCE))
    return checks


def _checkpoint_state(path: str, key: str) -> dict:
    ckpt = torch.load(path, map_location="cpu")
    return {k.removeprefix("_orig_mod."): v for k, v in ckpt[key].items()}


def language_checks(fixtures: str) -> list[dict]:
    """The causal ToST fixture model: logits of both cases, training loss and gradients."""
    state = _checkpoint_state(os.path.join(fixtures, "tost_lang_small.pt"), "model")
    ref = read_safetensors(os.path.join(fixtures, "tost_lang_small.ref.safetensors"))
    cfg = dict(attention="tssa", vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model = tt.GPT({**cfg, "bias": True})
    model.load_state_dict(state, strict=True)
    errors = {}
    with torch.no_grad():
        for case in ("case0", "case1"):
            logits, _ = model(ref[f"{case}.idx"])
            errors[case] = relative_error(logits, ref[f"{case}.logits"])
    _, loss = model(ref["case0.idx"], ref["case0.targets"])
    return [
        _check("language-tost", "fwd", 64, errors, FORWARD_TOLERANCE),
        _training_check("language-tost", 64, model, loss, ref),
    ]


def _training_check(op: str, n: int, model, loss: torch.Tensor, ref: dict) -> dict:
    """The training loss and every parameter gradient against the fixture's `train.*`."""
    loss.backward()
    errors = {"loss": relative_error(loss.detach().view(1), ref["train.loss"])}
    for name, p in model.named_parameters():
        errors[name] = relative_error(p.grad, ref[f"train.grad.{name}"])
    return _check(op, "fwd+bwd", n, errors, GRADIENT_TOLERANCE)


def vision_model(path: str, key: str = "model", heads: int | None = None):
    """A vision checkpoint as an eval-mode `VisionToST` and its config."""
    state = _checkpoint_state(path, key)
    cfg = tt.vision_config(state, heads)
    model = tt.VisionToST(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def vision_checks(fixtures: str) -> list[dict]:
    """The vision ToST fixture model: eval-mode logits of both cases; training gradients."""
    model, _ = vision_model(os.path.join(fixtures, "tost_vision_small.pth"))
    ref = read_safetensors(os.path.join(fixtures, "tost_vision_small.ref.safetensors"))
    errors = {}
    with torch.no_grad():
        for case in ("case0", "case1"):
            errors[case] = relative_error(model(ref[f"{case}.input"]), ref[f"{case}.logits"])
    model.train()  # BatchNorm on batch statistics, as the fixture's training pass
    loss = torch.nn.functional.cross_entropy(model(ref["case0.input"]), ref["train.labels"])
    return [
        _check("vision-tost", "fwd", 16, errors, FORWARD_TOLERANCE),
        _training_check("vision-tost", 16, model, loss, ref),
    ]
