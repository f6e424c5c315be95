#!/usr/bin/env python3
"""Independent NumPy reference of BAGEL's MoT decoder (Qwen2 layers, two experts).

Writes `crates/uno-mot/tests/data/mot_reference.safetensors`: random weights under BAGEL's
names (PyTorch layout, Linear weights [out, in]), a small packed input (2 samples, mixed
routing, shared position ids, block masks) and the expected outputs of
  * `expected.one_layer`: layer 0 followed by the final norms (a 1-layer model),
  * `expected.two_layers`: the full 2-layer model with final norms,
computed in float64 and stored as float32.

Semantics follow HF Qwen2 / BAGEL `qwen2_navit.py`, written from the architecture
description, not from the Rust code:
  * RMSNorm: w * x / sqrt(mean(x^2) + eps)
  * q/k RMSNorm over head_dim right after projection, before RoPE
  * RoPE: rotate_half, cos/sin of position_ids * inv_freq, emb = cat(freqs, freqs)
  * GQA: KV heads repeated consecutively (repeat_interleave)
  * attention scale 1/sqrt(head_dim), bool mask True = masked, per sample
  * SwiGLU: down(silu(gate(x)) * up(x)); q/k/v with bias, o and MLP without
  * routing: und tokens use the plain weights, gen tokens the `_moe_gen` weights.

Run: python3 tools/mot_reference.py   (seeded; rerunning gives the same file)
"""

import json
import os

import numpy as np
from safetensors.numpy import save_file

SEED = 1234
CFG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    vocab_size=64,
    qk_norm=True,
)
H = CFG["hidden_size"]
NH = CFG["num_attention_heads"]
NKV = CFG["num_key_value_heads"]
HD = H // NH
INTER = CFG["intermediate_size"]
EPS = CFG["rms_norm_eps"]
THETA = CFG["rope_theta"]

rng = np.random.default_rng(SEED)


def make_weights():
    w = {}

    def lin(name, d_out, d_in, bias):
        w[name + ".weight"] = rng.normal(0.0, 1.0 / np.sqrt(d_in), (d_out, d_in))
        if bias:
            w[name + ".bias"] = rng.normal(0.0, 0.1, (d_out,))

    def norm(name, d):
        w[name + ".weight"] = 1.0 + rng.normal(0.0, 0.2, (d,))

    for i in range(CFG["num_hidden_layers"]):
        p = f"layers.{i}."
        for sfx in ["", "_moe_gen"]:
            lin(p + "self_attn.q_proj" + sfx, NH * HD, H, True)
            lin(p + "self_attn.k_proj" + sfx, NKV * HD, H, True)
            lin(p + "self_attn.v_proj" + sfx, NKV * HD, H, True)
            lin(p + "self_attn.o_proj" + sfx, H, NH * HD, False)
            norm(p + "self_attn.q_norm" + sfx, HD)
            norm(p + "self_attn.k_norm" + sfx, HD)
            lin(p + "mlp" + sfx + ".gate_proj", INTER, H, False)
            lin(p + "mlp" + sfx + ".up_proj", INTER, H, False)
            lin(p + "mlp" + sfx + ".down_proj", H, INTER, False)
            norm(p + "input_layernorm" + sfx, H)
            norm(p + "post_attention_layernorm" + sfx, H)
    norm("norm", H)
    norm("norm_moe_gen", H)
    return w


def rms_norm(x, weight):
    var = np.mean(x * x, axis=-1, keepdims=True)
    return weight * (x / np.sqrt(var + EPS))


def linear(x, w, name, bias=True):
    y = x @ w[name + ".weight"].T
    if bias and (name + ".bias") in w:
        y = y + w[name + ".bias"]
    return y


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return np.concatenate([-x2, x1], axis=-1)


def apply_rope(x, pos):
    # x: [L, heads, HD]
    inv_freq = 1.0 / (THETA ** (np.arange(0, HD, 2, dtype=np.float64) / HD))
    freqs = np.outer(pos.astype(np.float64), inv_freq)  # [L, HD/2]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [L, HD]
    cos = np.cos(emb)[:, None, :]
    sin = np.sin(emb)[:, None, :]
    return x * cos + rotate_half(x) * sin


def softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def sdpa(q, k, v, mask):
    # q: [NH, l, HD], k/v: [NKV, l, HD], mask: [l, l] True = masked
    groups = NH // NKV
    k = np.repeat(k, groups, axis=0)  # repeat_interleave: kv0, kv0, kv1, kv1
    v = np.repeat(v, groups, axis=0)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(HD)
    scores = np.where(mask[None, :, :], -np.inf, scores)
    return softmax(scores) @ v


def decoder_layer(h, w, i, is_gen, pos, samples):
    L = h.shape[0]
    p = f"layers.{i}."
    q = np.zeros((L, NH, HD))
    k = np.zeros((L, NKV, HD))
    v = np.zeros((L, NKV, HD))
    experts = [(~is_gen, ""), (is_gen, "_moe_gen")]
    for sel, sfx in experts:
        if not sel.any():
            continue
        x = rms_norm(h[sel], w[p + "input_layernorm" + sfx + ".weight"])
        qs = linear(x, w, p + "self_attn.q_proj" + sfx).reshape(-1, NH, HD)
        ks = linear(x, w, p + "self_attn.k_proj" + sfx).reshape(-1, NKV, HD)
        vs = linear(x, w, p + "self_attn.v_proj" + sfx).reshape(-1, NKV, HD)
        q[sel] = rms_norm(qs, w[p + "self_attn.q_norm" + sfx + ".weight"])
        k[sel] = rms_norm(ks, w[p + "self_attn.k_norm" + sfx + ".weight"])
        v[sel] = vs
    q = apply_rope(q, pos)
    k = apply_rope(k, pos)
    attn = np.zeros((L, NH * HD))
    start = 0
    for length, mask in samples:
        s = slice(start, start + length)
        o = sdpa(
            q[s].transpose(1, 0, 2), k[s].transpose(1, 0, 2), v[s].transpose(1, 0, 2), mask
        )
        attn[s] = o.transpose(1, 0, 2).reshape(length, NH * HD)
        start += length
    out = h.copy()
    for sel, sfx in experts:
        if not sel.any():
            continue
        r = h[sel] + linear(attn[sel], w, p + "self_attn.o_proj" + sfx, bias=False)
        x = rms_norm(r, w[p + "post_attention_layernorm" + sfx + ".weight"])
        m = p + "mlp" + sfx
        g = linear(x, w, m + ".gate_proj", bias=False)
        u = linear(x, w, m + ".up_proj", bias=False)
        silu = g / (1.0 + np.exp(-g))
        out[sel] = r + linear(silu * u, w, m + ".down_proj", bias=False)
    return out


def model(h, w, n_layers, is_gen, pos, samples):
    for i in range(n_layers):
        h = decoder_layer(h, w, i, is_gen, pos, samples)
    out = np.empty_like(h)
    out[~is_gen] = rms_norm(h[~is_gen], w["norm.weight"])
    out[is_gen] = rms_norm(h[is_gen], w["norm_moe_gen.weight"])
    return out


def split_mask(splits):
    """BAGEL rules: each split sees all earlier splits of its sample; causal is
    lower-triangular inside, full/noise bidirectional; a noise split is hidden from every
    other split; a `caption` split (causal) sees only the split named by `sees`."""
    n = sum(length for _, length, _ in splits)
    visible = np.zeros((n, n), dtype=bool)
    offs = np.cumsum([0] + [length for _, length, _ in splits])
    for a, (kind, la, sees) in enumerate(splits):
        ra = slice(offs[a], offs[a + 1])
        if kind == "causal" or kind == "caption":
            visible[ra, ra] = np.tril(np.ones((la, la), dtype=bool))
        else:
            visible[ra, ra] = True
        for b in range(a):
            kind_b = splits[b][0]
            rb = slice(offs[b], offs[b + 1])
            if kind == "caption":
                visible[ra, rb] = b == sees
            elif kind_b != "noise":
                visible[ra, rb] = True
    return ~visible


def main():
    w = make_weights()
    # sample 0: prompt text (und, causal), noised image (gen, noise), caption (und) that
    # sees only the noised image; sample 1: clean VAE image (gen, full), text (und, causal).
    s0 = [("causal", 3, None), ("noise", 3, None), ("caption", 2, 1)]
    s1 = [("full", 2, None), ("causal", 3, None)]
    samples = [(8, split_mask(s0)), (5, split_mask(s1))]
    is_gen = np.array([0, 0, 0, 1, 1, 1, 0, 0] + [1, 1, 0, 0, 0], dtype=bool)
    pos = np.array([0, 1, 2, 3, 3, 3, 3, 4] + [0, 0, 1, 2, 3], dtype=np.int64)
    L = is_gen.shape[0]
    h = rng.normal(0.0, 1.0, (L, H))

    one = model(h, w, 1, is_gen, pos, samples)
    two = model(h, w, 2, is_gen, pos, samples)

    tensors = {k: v.astype(np.float32) for k, v in w.items()}
    tensors["input.hidden"] = h.astype(np.float32)
    tensors["input.position_ids"] = pos
    tensors["input.und_idx"] = np.nonzero(~is_gen)[0].astype(np.int64)
    tensors["input.gen_idx"] = np.nonzero(is_gen)[0].astype(np.int64)
    tensors["input.sample_lens"] = np.array([n for n, _ in samples], dtype=np.int64)
    for i, (_, m) in enumerate(samples):
        tensors[f"input.mask.{i}"] = m.astype(np.uint8)
    tensors["expected.one_layer"] = one.astype(np.float32)
    tensors["expected.two_layers"] = two.astype(np.float32)

    out = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..",
        "crates",
        "uno-mot",
        "tests",
        "data",
        "mot_reference.safetensors",
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(tensors, out, metadata={"config": json.dumps(CFG), "seed": str(SEED)})
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
