"""The ToST workloads in plain PyTorch, written from the formulas.

The operators follow `fixtures/README.md` (the reference's order of operations,
its epsilons and clamps); the modules carry the reference's `state_dict` names,
so the fixture checkpoints load into them with `load_state_dict(strict=True)`:

- `AttentionTSSA` (vision ToST), `CausalSelfAttentionTSSA` (language ToST),
  `SoftmaxAttention` (packed qkv; standard or "flash", causal or not);
- `GPT`: nanoGPT's layout with layer scale (`gamma1`/`gamma2`), causal TSSA or
  causal softmax attention, `lm_head` tied to `wte`;
- `VisionToST`: convolutional stem, Fourier positional encoding, TSSA (or
  softmax, the ViT twin) blocks, two class-attention blocks, norm, head.

Nothing here is tuned: it is what a PyTorch user would write, so the peer
measures what PyTorch gives such a user on the same machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Query rows per block of the chunked "flash" attention (PyTorch < 2.0 has no fused kernel).
FLASH_BLOCK = 256


def has_sdpa() -> bool:
    """Whether this PyTorch has `F.scaled_dot_product_attention` (PyTorch >= 2.0)."""
    return hasattr(F, "scaled_dot_product_attention")


def flash_implementation() -> str:
    """How `flash-softmax` runs here (recorded in the peer's JSON)."""
    if has_sdpa():
        return "torch.nn.functional.scaled_dot_product_attention"
    return (
        f"query blocks of {FLASH_BLOCK} rows, exact softmax per block, recomputed in the "
        "backward (torch.utils.checkpoint): never materialises N x N"
    )


# ---------------------------------------------------------------- operators


def tssa(w: torch.Tensor, temp: torch.Tensor, heads: int) -> torch.Tensor:
    """Token Statistics Self-Attention on projected tokens.

    w: [B, N, C] (heads side by side), temp: [H] or [H, 1] -> [B, N, C].
    """
    b, n, c = w.shape
    w = w.view(b, n, heads, c // heads).transpose(1, 2)  # [B, H, N, d]
    w_sq = F.normalize(w, dim=-2) ** 2  # normalised over tokens
    pi = torch.softmax(temp.view(1, heads, 1) * w_sq.sum(-1), dim=1)  # [B, H, N], over heads
    pi_norm = pi / (pi.sum(-1, keepdim=True) + 1e-8)
    dots = (pi_norm.unsqueeze(-2) @ (w**2)).squeeze(-2)  # [B, H, d]
    y = -(w * pi.unsqueeze(-1)) * (1 / (1 + dots.unsqueeze(-2)))
    return y.transpose(1, 2).reshape(b, n, c)


def causal_tssa(
    w: torch.Tensor, temp: torch.Tensor, denom_bias: torch.Tensor, heads: int
) -> torch.Tensor:
    """Causal TSSA: the sums over tokens become prefix sums.

    w: [B, N, C], temp: [H] or [H, 1], denom_bias: [H, >=N] or [H, >=N, 1] -> [B, N, C].
    """
    b, n, c = w.shape
    w = w.view(b, n, heads, c // heads).transpose(1, 2)  # [B, H, N, d]
    w_sq = w**2
    denom = torch.cumsum(w_sq, dim=2).clamp_min(1e-12)
    bias = denom_bias.reshape(heads, -1, 1)[:, :n, :]  # [H, N, 1]
    scores = (w_sq / denom + bias).sum(-1)  # [B, H, N]
    pi = torch.softmax(temp.view(1, heads, 1) * scores, dim=1).unsqueeze(-1)  # [B, H, N, 1]
    dots = torch.cumsum(w_sq * pi, dim=2) / (torch.cumsum(pi, dim=2) + 1e-8)
    y = -w * pi / (1 + dots)
    return y.transpose(1, 2).reshape(b, n, c)


def _split_heads(qkv: torch.Tensor, heads: int):
    b, n, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.split(c, dim=2)
    return [t.view(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v)]


def softmax_attention(qkv: torch.Tensor, heads: int, causal: bool) -> torch.Tensor:
    """Standard multi-head attention on packed qkv [B, N, 3C] (materialises N x N) -> [B, N, C]."""
    b, n, c3 = qkv.shape
    q, k, v = _split_heads(qkv, heads)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf"))
    y = torch.softmax(att, dim=-1) @ v
    return y.transpose(1, 2).reshape(b, n, c3 // 3)


def _attend_block(q, k, v, start: int, causal: bool) -> torch.Tensor:
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        rows = torch.arange(start, start + q.shape[-2]).unsqueeze(1)
        cols = torch.arange(k.shape[-2]).unsqueeze(0)
        att = att.masked_fill(cols > rows, float("-inf"))
    return torch.softmax(att, dim=-1) @ v


def flash_attention(
    qkv: torch.Tensor, heads: int, causal: bool, block: int = FLASH_BLOCK
) -> torch.Tensor:
    """Attention that never holds N x N scores: SDPA where PyTorch has it, else query blocks."""
    b, n, c3 = qkv.shape
    q, k, v = _split_heads(qkv, heads)
    if has_sdpa() and block == FLASH_BLOCK:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:
        parts = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            keys = stop if causal else n
            args = (q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys])
            if torch.is_grad_enabled() and qkv.requires_grad:
                parts.append(checkpoint(_attend_block, *args, start, causal))
            else:
                parts.append(_attend_block(*args, start, causal))
        y = torch.cat(parts, dim=2)
    return y.transpose(1, 2).reshape(b, n, c3 // 3)


# ---------------------------------------------------------------- attention modules


class AttentionTSSA(nn.Module):
    """Vision ToST's attention: `qkv` (one projection), TSSA, `to_out.0`."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.temp = nn.Parameter(torch.ones(heads, 1))
        self.qkv = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out(tssa(self.qkv(x), self.temp, self.heads))


class CausalSelfAttentionTSSA(nn.Module):
    """Language ToST's attention: `c_attn`, causal TSSA, `c_proj`."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, bias: bool = True):
        super().__init__()
        self.heads = n_head
        self.c_attn = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.temp = nn.Parameter(torch.ones(n_head, 1))
        self.denom_bias = nn.Parameter(torch.zeros(n_head, block_size, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(causal_tssa(self.c_attn(x), self.temp, self.denom_bias, self.heads))


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention with a packed qkv projection (nanoGPT's / timm's layout).

    `names` picks the parameter names: ("c_attn", "c_proj") for nanoGPT, ("qkv", "proj") for timm.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        causal: bool,
        flash: bool = False,
        bias: bool = True,
        out_bias: bool = True,
        names: tuple[str, str] = ("c_attn", "c_proj"),
    ):
        super().__init__()
        self.heads, self.causal, self.flash, self.names = heads, causal, flash, names
        setattr(self, names[0], nn.Linear(dim, 3 * dim, bias=bias))
        setattr(self, names[1], nn.Linear(dim, dim, bias=out_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = getattr(self, self.names[0])(x)
        attend = flash_attention if self.flash else softmax_attention
        return getattr(self, self.names[1])(attend(qkv, self.heads, self.causal))


# ---------------------------------------------------------------- language model (nanoGPT layout)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's `bias=False` option)."""

    def __init__(self, n: int, bias: bool, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class LanguageMLP(nn.Module):
    def __init__(self, c: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.c_proj = nn.Linear(4 * c, c, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class LanguageBlock(nn.Module):
    """`x += gamma1 * attn(ln_1(x)); x += gamma2 * mlp(ln_2(x))`."""

    def __init__(self, cfg: dict):
        super().__init__()
        c, bias = cfg["n_embd"], cfg["bias"]
        self.gamma1 = nn.Parameter(torch.ones(c))
        self.gamma2 = nn.Parameter(torch.ones(c))
        self.ln_1 = LayerNorm(c, bias, 1e-5)
        if cfg["attention"] == "tssa":
            self.attn = CausalSelfAttentionTSSA(c, cfg["n_head"], cfg["block_size"], bias)
        else:
            self.attn = SoftmaxAttention(c, cfg["n_head"], causal=True, bias=bias, out_bias=bias)
        self.ln_2 = LayerNorm(c, bias, 1e-5)
        self.mlp = LanguageMLP(c, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.ln_1(x))
        return x + self.gamma2 * self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Causal ToST (`attention: "tssa"`) or GPT (`"softmax"`) in nanoGPT's layout.

    cfg: attention, vocab_size, block_size, n_layer, n_head, n_embd, bias.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        c = cfg["n_embd"]
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg["vocab_size"], c),
                wpe=nn.Embedding(cfg["block_size"], c),
                h=nn.ModuleList([LanguageBlock(cfg) for _ in range(cfg["n_layer"])]),
                ln_f=LayerNorm(c, cfg["bias"], 1e-5),
            )
        )
        self.lm_head = nn.Linear(c, cfg["vocab_size"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        for name, p in self.named_parameters():  # nanoGPT's initialisation
            if name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
                nn.init.normal_(p, std=0.02)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        t = idx.shape[1]
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(t))
        for block in tr.h:
            x = block(x)
        logits = self.lm_head(tr.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss


# ---------------------------------------------------------------- vision model


def stem_widths(patch: int, dim: int) -> list[int]:
    """Channel widths of the conv stem: patch 8 -> D/4, D/2, D; patch 16 -> D/8 ... D."""
    if patch == 8:
        return [dim // 4, dim // 2, dim]
    if patch == 16:
        return [dim // 8, dim // 4, dim // 2, dim]
    raise ValueError(f"patch size must be 8 or 16, got {patch}")


def fourier_features(hp: int, wp: int, hidden: int = 32, temperature: float = 10000.0):
    """XCiT's positional features, float32: [2 * hidden, hp, wp] (y features then x)."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, hp + 1, dtype=torch.float32).view(hp, 1).expand(hp, wp)
    x = torch.arange(1, wp + 1, dtype=torch.float32).view(1, wp).expand(hp, wp)
    y = y / (y[-1:, :] + eps) * scale
    x = x / (x[:, -1:] + eps) * scale
    m = torch.arange(hidden, dtype=torch.float32)
    tau = temperature ** (2 * torch.div(m, 2, rounding_mode="floor") / hidden)

    def axis(pos):
        a = pos.unsqueeze(-1) / tau  # [hp, wp, hidden]
        return torch.where(m % 2 == 0, a.sin(), a.cos())

    return torch.cat([axis(y), axis(x)], dim=-1).permute(2, 0, 1)


class PositionalEncodingFourier(nn.Module):
    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.hidden = hidden
        self.token_projection = nn.Conv2d(2 * hidden, dim, kernel_size=1)

    def forward(self, b: int, hp: int, wp: int) -> torch.Tensor:
        feats = fourier_features(hp, wp, self.hidden).unsqueeze(0)
        feats = feats.to(self.token_projection.weight.dtype)
        return self.token_projection(feats).expand(b, -1, -1, -1)


class VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, h = cfg["embed_dim"], cfg["num_heads"]
        self.gamma1 = nn.Parameter(torch.ones(d))
        self.gamma2 = nn.Parameter(torch.ones(d))
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        if cfg["attention"] == "tssa":
            self.attn = AttentionTSSA(d, h, cfg["qkv_bias"])
        else:
            self.attn = SoftmaxAttention(
                d, h, causal=False, bias=cfg["qkv_bias"], names=("qkv", "proj")
            )
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = VisionMLP(d, int(d * cfg["mlp_ratio"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        return x + self.gamma2 * self.mlp(self.norm2(x))


class ClassAttention(nn.Module):
    """CaiT/XCiT class attention: only the class token queries; other rows pass through."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, c = x.shape
        q, k, v = _split_heads(self.qkv(x), self.heads)
        att = (q[:, :, :1] @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        cls = (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, 1, c)
        return torch.cat([self.proj(cls), x[:, 1:]], dim=1)


class ClassAttentionBlock(nn.Module):
    """The reference's class-attention block, quirks included (see DESIGN.md)."""

    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["embed_dim"]
        self.tokens_norm = cfg["tokens_norm"]
        self.gamma1 = nn.Parameter(torch.ones(d))
        self.gamma2 = nn.Parameter(torch.ones(d))
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = ClassAttention(d, cfg["num_heads"], cfg["qkv_bias"])
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = VisionMLP(d, int(d * cfg["mlp_ratio"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        res = x
        cls = self.gamma2 * self.mlp(x[:, :1])
        return res + torch.cat([cls, x[:, 1:]], dim=1)


class VisionToST(nn.Module):
    """Vision ToST (`attention: "tssa"`) or its ViT twin (`"softmax"`).

    cfg: attention, embed_dim, depth, num_heads, patch_size, num_classes, in_chans,
    mlp_ratio, qkv_bias, tokens_norm, cls_attn_layers, pos_hidden_dim.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["embed_dim"]
        stages: list[nn.Module] = []
        cin = cfg["in_chans"]
        widths = stem_widths(cfg["patch_size"], d)
        for i, c in enumerate(widths):
            conv = nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm2d(c)))
            if i < len(widths) - 1:
                stages.append(nn.GELU())
            cin = c
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Sequential(*stages)
        self.pos_embeder = PositionalEncodingFourier(d, cfg["pos_hidden_dim"])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList([VisionBlock(cfg) for _ in range(cfg["depth"])])
        self.cls_attn_blocks = nn.ModuleList(
            [ClassAttentionBlock(cfg) for _ in range(cfg["cls_attn_layers"])]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, cfg["num_classes"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.patch_embed.proj(images)  # [B, D, Hp, Wp]
        b, _, hp, wp = fmap.shape
        x = (fmap + self.pos_embeder(b, hp, wp)).flatten(2).transpose(1, 2)  # [B, N, D]
        for block in self.blocks:
            x = block(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        for block in self.cls_attn_blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def vision_config(state: dict, heads: int | None = None) -> dict:
    """A vision config inferred from a state_dict's names and shapes (heads: from `temp`, else given)."""
    d = state["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    tssa_attn = "blocks.0.attn.temp" in state
    if tssa_attn:
        heads = state["blocks.0.attn.temp"].shape[0]
    if heads is None:
        raise ValueError("a softmax (ViT) checkpoint does not record its heads: pass --heads")
    stages = len([k for k in state if k.startswith("patch_embed.proj.") and k.endswith(".0.weight")])
    return dict(
        attention="tssa" if tssa_attn else "softmax",
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        patch_size={3: 8, 4: 16}[stages],
        num_classes=state["head.weight"].shape[0],
        in_chans=state["patch_embed.proj.0.0.weight"].shape[1],
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / d,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        tokens_norm=True,
        cls_attn_layers=len({k.split(".")[1] for k in state if k.startswith("cls_attn_blocks.")}),
        pos_hidden_dim=state["pos_embeder.token_projection.weight"].shape[1] // 2,
    )
