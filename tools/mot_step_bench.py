#!/usr/bin/env python3
"""PyTorch eager timing of the MoT step that `crates/uno-mot/benches/mot_step.rs` times.

The same work as the Rust bench, written from BAGEL's `qwen2_navit.py` semantics (not from
the Rust code): a Qwen2 MoT decoder with an understanding and a generation expert per layer
(hidden 256, 4 layers, 4 query / 2 KV heads, head 64, intermediate 1024, q/k RMSNorm,
RoPE theta 1e6, final norms per expert), one 1024-token sample: tokens 0..512 are
understanding tokens under a causal mask, tokens 512..1024 generation tokens that see the
text and each other and share one position id. Per layer, as BAGEL's `PackedAttentionMoT`
and `Qwen2MoTDecoderLayer` do: split the rows by expert index, run each expert's norm and
projections on its rows, scatter back to sequence order, RoPE, one joint attention
(`scaled_dot_product_attention` with the dense boolean mask, GQA), split again for `o_proj`,
the residual, the post-attention norm and the SwiGLU MLP.

One step = forward, `loss = (out * w).sum()`, backward into every parameter (the input does
not require a gradient), as the Rust bench. Prints the median over `--runs` after a warm-up.

Run: python3 tools/mot_step_bench.py --threads 2 --runs 10
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 256, 4, 4, 2, 1024
HEAD_DIM = HIDDEN // HEADS
EPS, THETA, TOKENS = 1e-6, 1e6, 1024


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + EPS))


class Expert(nn.Module):
    """One expert's share of a layer (BAGEL's plain or `_moe_gen` weights)."""

    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=True)
        self.k_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.v_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=True)
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.q_norm = RMSNorm(HEAD_DIM)
        self.k_norm = RMSNorm(HEAD_DIM)
        self.gate_proj = nn.Linear(HIDDEN, INTER, bias=False)
        self.up_proj = nn.Linear(HIDDEN, INTER, bias=False)
        self.down_proj = nn.Linear(INTER, HIDDEN, bias=False)
        self.input_layernorm = RMSNorm(HIDDEN)
        self.post_attention_layernorm = RMSNorm(HIDDEN)

    def qkv(self, x):
        n = x.shape[0]
        x = self.input_layernorm(x)
        q = self.q_norm(self.q_proj(x).view(n, HEADS, HEAD_DIM))
        k = self.k_norm(self.k_proj(x).view(n, KV_HEADS, HEAD_DIM))
        v = self.v_proj(x).view(n, KV_HEADS, HEAD_DIM)
        return q, k, v

    def mlp(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class MotLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.und = Expert()
        self.gen = Expert()

    def forward(self, h, und_idx, gen_idx, cos, sin, mask):
        n = h.shape[0]
        qu, ku, vu = self.und.qkv(h[und_idx])
        qg, kg, vg = self.gen.qkv(h[gen_idx])
        q = h.new_zeros(n, HEADS, HEAD_DIM)
        k = h.new_zeros(n, KV_HEADS, HEAD_DIM)
        v = h.new_zeros(n, KV_HEADS, HEAD_DIM)
        q[und_idx], q[gen_idx] = qu, qg
        k[und_idx], k[gen_idx] = ku, kg
        v[und_idx], v[gen_idx] = vu, vg
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # [heads, L, head_dim]; the mask is True where attention is allowed.
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1),
            k.transpose(0, 1),
            v.transpose(0, 1),
            attn_mask=mask,
            enable_gqa=True,
        )
        out = out.transpose(0, 1).reshape(n, HEADS * HEAD_DIM)
        res = h.new_zeros(h.shape)
        for expert, idx in ((self.und, und_idx), (self.gen, gen_idx)):
            x = h[idx] + expert.o_proj(out[idx])
            res[idx] = x + expert.mlp(expert.post_attention_layernorm(x))
        return res


class MotModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(MotLayer() for _ in range(LAYERS))
        self.norm = RMSNorm(HIDDEN)
        self.norm_moe_gen = RMSNorm(HIDDEN)

    def forward(self, h, und_idx, gen_idx, cos, sin, mask):
        for layer in self.layers:
            h = layer(h, und_idx, gen_idx, cos, sin, mask)
        out = h.new_zeros(h.shape)
        out[und_idx] = self.norm(h[und_idx])
        out[gen_idx] = self.norm_moe_gen(h[gen_idx])
        return out


def inputs():
    half = TOKENS // 2
    und_idx = torch.arange(0, half)
    gen_idx = torch.arange(half, TOKENS)
    pos = torch.cat([torch.arange(half), torch.full((half,), half)]).float()
    inv_freq = 1.0 / THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
    allowed = torch.zeros(TOKENS, TOKENS, dtype=torch.bool)
    allowed[:half, :half] = torch.ones(half, half, dtype=torch.bool).tril()
    allowed[half:, :] = True
    return und_idx, gen_idx, emb.cos(), emb.sin(), allowed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MotModel()
    und_idx, gen_idx, cos, sin, mask = inputs()
    hidden = torch.randn(TOKENS, HIDDEN)
    weights = torch.randn(TOKENS, HIDDEN)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(hidden, und_idx, gen_idx, cos, sin, mask)
        (out * weights).sum().backward()

    step()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(
        f"torch {torch.__version__}, {args.threads} threads: mot step (h{HIDDEN}, {LAYERS} layers, "
        f"{TOKENS} tokens, fwd+bwd) median {statistics.median(times) * 1e3:.1f} ms "
        f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}, {args.runs} runs)"
    )


if __name__ == "__main__":
    main()
