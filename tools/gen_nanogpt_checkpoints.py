#!/usr/bin/python3
"""Write small checkpoints in nanoGPT's own format, with real torch.save, and
the logits PyTorch computes for them, for tests/checkpoint/nanogpt_test.ts.

nanoGPT's GPT (its model.py) differs from ToST's language model in two ways
tost must read: there is no layer scale (no gamma1/gamma2), and under
PyTorch < 2.0 every attention block registers its causal mask as the buffer
`attn.bias` [1, 1, T, T], which lands in the state_dict. Its training script
saves {model, optimizer, model_args, iter_num, best_val_loss, config}, with
`_orig_mod.` before every key when the model was compiled.

The model below is written from that description (the GPT-2 layout nanoGPT
follows: learned position embeddings, pre-LayerNorm blocks with optional bias,
causal softmax attention, a GELU MLP of width 4C, tied lm_head), not copied.

Needs Debian's PyTorch (`apt-get install python3-torch`, PyTorch 1.13):

    /usr/bin/python3 tools/gen_nanogpt_checkpoints.py

Deterministic for a given PyTorch build. Writes into tests/fixtures/nanogpt/:

- nanogpt_char.pt: bias True, attn.bias mask buffers, `_orig_mod.` keys, zip
  format, AdamW state after two steps, iter_num, best_val_loss (0-dim tensor);
- nanogpt_nobias.pt: bias False, no mask buffers (as PyTorch >= 2.0 saves),
  plain keys, the legacy (pre-1.6) format;
- <name>.ref.safetensors: case0.idx [2, 16], case1.idx [1, 5] (I64) and
  their .logits [B, T, V] (F32, computed in float64 from the float32 weights);
- nanogpt_char_vocab.txt: the 11 characters of the vocabulary in id order.
"""

import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "nanogpt")
VOCAB = "\n !.abcdehi"  # 11 characters, sorted by code point


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be absent (PyTorch 1.13's cannot)."""

    def __init__(self, n, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Attention(nn.Module):
    def __init__(self, c, mask_buffer):
        super().__init__()
        self.n_head = c["n_head"]
        C = c["n_embd"]
        self.c_attn = nn.Linear(C, 3 * C, bias=c["bias"])
        self.c_proj = nn.Linear(C, C, bias=c["bias"])
        T = c["block_size"]
        mask = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        if mask_buffer:
            self.register_buffer("bias", mask)  # saved in the state_dict
        else:
            self.mask = mask  # a plain attribute: not saved

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        H = self.n_head
        q = q.view(B, T, H, C // H).transpose(1, 2)  # [B, H, T, hs]
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)  # [B, H, T, T]
        mask = self.bias if hasattr(self, "bias") and isinstance(self.bias, torch.Tensor) else self.mask
        att = att.masked_fill(mask[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v  # [B, H, T, hs]
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, c, mask_buffer):
        super().__init__()
        C = c["n_embd"]
        self.ln_1 = LayerNorm(C, c["bias"])
        self.attn = Attention(c, mask_buffer)
        self.ln_2 = LayerNorm(C, c["bias"])
        self.mlp = nn.ModuleDict(
            dict(c_fc=nn.Linear(C, 4 * C, bias=c["bias"]), c_proj=nn.Linear(4 * C, C, bias=c["bias"]))
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        h = F.gelu(self.mlp["c_fc"](self.ln_2(x)))  # exact (erf) GELU
        return x + self.mlp["c_proj"](h)


class GPT(nn.Module):
    def __init__(self, c, mask_buffer):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c["vocab_size"], c["n_embd"]),
                wpe=nn.Embedding(c["block_size"], c["n_embd"]),
                drop=nn.Dropout(c["dropout"]),
                h=nn.ModuleList([Block(c, mask_buffer) for _ in range(c["n_layer"])]),
                ln_f=LayerNorm(c["n_embd"], c["bias"]),
            )
        )
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied

    def forward(self, idx):
        B, T = idx.shape
        pos = torch.arange(T)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # [B, T, V]


def perturb(model, gen):
    """Move every parameter off its initial value so each one affects the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def write_safetensors(path, tensors):
    """A minimal safetensors writer (F32 and I64 only)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        t = t.contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def make(name, c, *, mask_buffer, compiled, legacy, seed):
    gen = torch.Generator().manual_seed(seed)
    model = GPT(c, mask_buffer)
    perturb(model, gen)
    # Two AdamW steps, as a real run would leave its optimizer state.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        idx = torch.randint(0, c["vocab_size"], (2, c["block_size"] + 1), generator=gen)
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c["vocab_size"]), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sd = model.state_dict()
    if compiled:
        sd = type(sd)((f"_orig_mod.{k}", v) for k, v in sd.items())
    checkpoint = {
        "model": sd,
        "optimizer": opt.state_dict(),
        "model_args": dict(c),
        "iter_num": 2,
        "best_val_loss": torch.tensor(2.5),
        "config": {"dataset": "shakespeare_char", "batch_size": 2, "compile": compiled},
    }
    path = os.path.join(OUT, f"{name}.pt")
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)

    # Reference logits, in float64 from the saved float32 weights.
    cases = [
        torch.randint(0, c["vocab_size"], (2, c["block_size"]), generator=gen),
        torch.randint(0, c["vocab_size"], (1, 5), generator=gen),
    ]
    ref = GPT(c, mask_buffer).double()
    ref.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    ref.eval()
    tensors = []
    with torch.no_grad():
        for i, idx in enumerate(cases):
            tensors.append((f"case{i}.idx", idx))
            tensors.append((f"case{i}.logits", ref(idx).float()))
    write_safetensors(os.path.join(OUT, f"{name}.ref.safetensors"), tensors)
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and its reference logits")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    base = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=len(VOCAB), dropout=0.0)
    make("nanogpt_char", {**base, "bias": True}, mask_buffer=True, compiled=True, legacy=False, seed=1)
    make("nanogpt_nobias", {**base, "bias": False}, mask_buffer=False, compiled=False, legacy=True, seed=2)
    with open(os.path.join(OUT, "nanogpt_char_vocab.txt"), "w") as f:
        f.write(VOCAB)
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
