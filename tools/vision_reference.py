#!/usr/bin/env python3
"""Reference fixtures for uno-core's vision pieces (numpy + safetensors only, no torch).

Run `python3 tools/vision_reference.py` from the repository root. It writes

* crates/uno-core/tests/data/vision_embed.safetensors: timestep embedder, 2-D sin-cos
  tables, the generation-input sum;
* crates/uno-core/tests/data/vision_vit.safetensors: a tiny SigLIP NaViT (2 layers) on two
  images of different sizes, and the MLP connector + its sin-cos table;
* crates/uno-core/tests/data/vision_vae.safetensors: a tiny FLUX autoencoder (ch 8,
  ch_mult [1, 2], z 16, GroupNorm with 4 groups) encoder and decoder on two images.

Everything follows the published PyTorch semantics, written here independently of the Rust
code: Linear `y = x W^T + b` with `W` `[out, in]`; Conv2d weight `[out, in, kh, kw]`
(cross-correlation); GroupNorm/LayerNorm with biased variance; GELU tanh approximation;
softmax attention with scale `d^-0.5`. Weights are drawn with a fixed seed, rounded to
float32 and the outputs computed in float64 from the rounded values, then stored as float32.
Weights are stored under the checkpoint key names (BAGEL `ema.safetensors`, FLUX
`ae.safetensors`); inputs under `input.*`, expected outputs under `expected.*`.
"""

import math
import os

import numpy as np
from safetensors.numpy import save_file

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "crates", "uno-core", "tests", "data")
RNG = np.random.default_rng(20240605)


def f32(x):
    """Round to float32 and return as float64 for the computation."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def randn(*shape, scale=1.0):
    return f32(RNG.standard_normal(shape) * scale)


# ---------------------------------------------------------------- basic ops (PyTorch semantics)


def linear(x, w, b):
    return x @ w.T + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x):
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


def conv2d(x, w, b, stride=1, pad=(0, 0, 0, 0)):
    """x [N, C, H, W], w [O, C, kh, kw]; pad = (left, right, top, bottom) like F.pad."""
    left, right, top, bottom = pad
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = (h - kh) // stride + 1
    ow = (wd - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def group_norm(x, groups, w, b, eps):
    n, c, h, wd = x.shape
    g = x.reshape(n, groups, -1)
    mu = g.mean(axis=-1, keepdims=True)
    var = ((g - mu) ** 2).mean(axis=-1, keepdims=True)
    g = (g - mu) / np.sqrt(var + eps)
    return g.reshape(n, c, h, wd) * w[None, :, None, None] + b[None, :, None, None]


# ---------------------------------------------------------------- sin-cos tables and timesteps


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """MAE / BAGEL `get_2d_sincos_pos_embed` (meshgrid(w, h): the column comes first)."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = t[:, None] * freqs[None]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros_like(emb[:, :1])], axis=-1)
    return emb


def embed_fixture():
    t = {}
    hidden = 32
    ts = f32([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
    w0, b0 = randn(hidden, 256, scale=0.1), randn(hidden, scale=0.1)
    w2, b2 = randn(hidden, hidden, scale=0.2), randn(hidden, scale=0.1)
    sin = timestep_embedding(ts, 256)
    out = linear(silu(linear(sin, w0, b0)), w2, b2)
    t.update(
        {
            "input.t": ts,
            "expected.sinusoid": sin,
            "time_embedder.mlp.0.weight": w0,
            "time_embedder.mlp.0.bias": b0,
            "time_embedder.mlp.2.weight": w2,
            "time_embedder.mlp.2.bias": b2,
            "expected.time_out": out,
            "expected.sincos_d16_g5": get_2d_sincos_pos_embed(16, 5),
            "expected.sincos_d24_g7": get_2d_sincos_pos_embed(24, 7),
        }
    )
    # Generation input: vae2llm(x_t) + time_embedder(t) + latent_pos_embed[ids], side 4.
    side = 4
    table = f32(get_2d_sincos_pos_embed(hidden, side))
    wv, bv = randn(hidden, 64, scale=0.1), randn(hidden, scale=0.1)
    x_t = randn(5, 64)
    gen_t = f32([0.0, 0.3, 0.3, 0.75, 1.0])
    ids = np.array([0, 3, 5, 12, 15], dtype=np.int64)
    time = linear(silu(linear(timestep_embedding(gen_t, 256), w0, b0)), w2, b2)
    gen = linear(x_t, wv, bv) + time + table[ids]
    t.update(
        {
            "vae2llm.weight": wv,
            "vae2llm.bias": bv,
            "input.gen_x_t": x_t,
            "input.gen_t": gen_t,
            "input.gen_ids": ids,
            "expected.gen_input": gen,
        }
    )
    return t


# ---------------------------------------------------------------- SigLIP NaViT + connector

VIT = dict(hidden=32, inter=48, heads=4, layers=2, patch=2, side=4, channels=3, eps=1e-6)
LLM_HIDDEN = 24


def patchify(image, p):
    """BAGEL's patchify: [c, h, w] -> [(h/p)*(w/p), p*p*c] in (py, px, c) order."""
    c, h, w = image.shape
    image = image.reshape(c, h // p, p, w // p, p)
    image = np.einsum("chpwq->hwpqc", image)
    return image.reshape(-1, p * p * c)


def siglip_forward(t, pre, cfg, x, ids, lens):
    """SigLIP NaViT encoder on packed patch rows `x` (images of `lens` patches each, learned
    position ids `ids`): pre-LN layers, attention confined to each image, post-layernorm.
    Weights `t` are under BAGEL's names with prefix `pre` (`vit_model.vision_model.`)."""
    d = cfg["hidden"]
    x = linear(x, t[pre + "embeddings.patch_embedding.weight"], t[pre + "embeddings.patch_embedding.bias"])
    x = x + t[pre + "embeddings.position_embedding.weight"][ids]
    for i in range(cfg["layers"]):
        lp = pre + f"encoder.layers.{i}."
        g = lambda n: (t[lp + n + ".weight"], t[lp + n + ".bias"])  # noqa: E731
        h = layer_norm(x, *g("layer_norm1"), cfg["eps"])
        q, k, v = (linear(h, *g(f"self_attn.{n}")) for n in ["q_proj", "k_proj", "v_proj"])
        hd = d // cfg["heads"]
        out = np.zeros_like(h)
        start = 0
        for n in lens:  # attention confined to each image
            sl = slice(start, start + n)
            for head in range(cfg["heads"]):
                hs = slice(head * hd, (head + 1) * hd)
                s = q[sl, hs] @ k[sl, hs].T / math.sqrt(hd)
                out[sl, hs] = softmax(s) @ v[sl, hs]
            start += n
        x = x + linear(out, *g("self_attn.out_proj"))
        h = layer_norm(x, *g("layer_norm2"), cfg["eps"])
        x = x + linear(gelu_tanh(linear(h, *g("mlp.fc1"))), *g("mlp.fc2"))
    return layer_norm(x, t[pre + "post_layernorm.weight"], t[pre + "post_layernorm.bias"], cfg["eps"])


def connector_forward(t, x):
    """BAGEL's MLP connector: fc2(gelu_tanh(fc1(x)))."""
    return linear(gelu_tanh(linear(x, t["connector.fc1.weight"], t["connector.fc1.bias"])), t["connector.fc2.weight"], t["connector.fc2.bias"])


def vit_fixture():
    cfg = VIT
    d, p, c = cfg["hidden"], cfg["patch"], cfg["channels"]
    t = {}
    pre = "vit_model.vision_model."
    # The patch embedding as BAGEL stores it: the SigLIP Conv2d weight [d, c, p, p]
    # permuted to (out, py, px, c) and flattened (convert_conv2d_to_linear).
    conv_w = randn(d, c, p, p, scale=0.3)
    lin_w = conv_w.transpose(0, 2, 3, 1).reshape(d, p * p * c)
    t[pre + "embeddings.patch_embedding.weight"] = lin_w
    t[pre + "embeddings.patch_embedding.bias"] = randn(d, scale=0.1)
    t[pre + "embeddings.position_embedding.weight"] = randn(cfg["side"] ** 2, d, scale=0.5)
    for i in range(cfg["layers"]):
        lp = pre + f"encoder.layers.{i}."
        for name in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            t[lp + f"self_attn.{name}.weight"] = randn(d, d, scale=1 / math.sqrt(d))
            t[lp + f"self_attn.{name}.bias"] = randn(d, scale=0.1)
        for name in ["layer_norm1", "layer_norm2"]:
            t[lp + f"{name}.weight"] = f32(1.0 + 0.1 * RNG.standard_normal(d))
            t[lp + f"{name}.bias"] = randn(d, scale=0.1)
        t[lp + "mlp.fc1.weight"] = randn(cfg["inter"], d, scale=1 / math.sqrt(d))
        t[lp + "mlp.fc1.bias"] = randn(cfg["inter"], scale=0.1)
        t[lp + "mlp.fc2.weight"] = randn(d, cfg["inter"], scale=1 / math.sqrt(cfg["inter"]))
        t[lp + "mlp.fc2.bias"] = randn(d, scale=0.1)
    t[pre + "post_layernorm.weight"] = f32(1.0 + 0.1 * RNG.standard_normal(d))
    t[pre + "post_layernorm.bias"] = randn(d, scale=0.1)

    # Two images in [-1, 1]: 6x8 (3x4 patches) and 4x4 (2x2 patches).
    images = [f32(RNG.uniform(-1, 1, (c, 6, 8))), f32(RNG.uniform(-1, 1, (c, 4, 4)))]
    patches, ids, lens = [], [], []
    for img in images:
        rows, cols = img.shape[1] // p, img.shape[2] // p
        # Cross-check the einsum patchify against the conv it replaces: the conv's output
        # at (r, q) equals the Linear on patch row r*cols+q.
        conv = conv2d(img[None], conv_w, np.zeros(d), stride=p)[0]  # [d, rows, cols]
        pr = patchify(img, p)
        assert np.allclose(pr @ lin_w.T, conv.reshape(d, -1).T, atol=1e-10)
        patches.append(pr)
        ids += [r * cfg["side"] + q for r in range(rows) for q in range(cols)]
        lens.append(rows * cols)
    x_in = np.concatenate(patches, axis=0)
    ids = np.array(ids, dtype=np.int64)

    vit_out = siglip_forward(t, pre, cfg, x_in, ids, lens)
    t["connector.fc1.weight"] = randn(LLM_HIDDEN, d, scale=1 / math.sqrt(d))
    t["connector.fc1.bias"] = randn(LLM_HIDDEN, scale=0.1)
    t["connector.fc2.weight"] = randn(LLM_HIDDEN, LLM_HIDDEN, scale=1 / math.sqrt(LLM_HIDDEN))
    t["connector.fc2.bias"] = randn(LLM_HIDDEN, scale=0.1)
    table = get_2d_sincos_pos_embed(LLM_HIDDEN, cfg["side"])
    t["vit_pos_embed.pos_embed"] = table
    conn = connector_forward(t, vit_out)
    t.update(
        {
            "input.image0": images[0],
            "input.image1": images[1],
            "input.patches": x_in,
            "input.position_ids": ids,
            "input.seq_lens": np.array(lens, dtype=np.int64),
            "expected.vit_out": vit_out,
            "expected.connector_out": conn + table[ids],
        }
    )
    return t


# ---------------------------------------------------------------- FLUX autoencoder

AE = dict(ch=8, ch_mult=[1, 2], num_res_blocks=2, z=16, groups=4, eps=1e-6, in_ch=3, out_ch=3)
SCALE, SHIFT = 0.3611, 0.1159


def vae_fixture():
    cfg = AE
    t = {}

    def conv_params(name, cin, cout, k):
        t[name + ".weight"] = randn(cout, cin, k, k, scale=1 / math.sqrt(cin * k * k))
        t[name + ".bias"] = randn(cout, scale=0.05)

    def norm_params(name, c):
        t[name + ".weight"] = f32(1.0 + 0.1 * RNG.standard_normal(c))
        t[name + ".bias"] = randn(c, scale=0.1)

    def resnet_params(name, cin, cout):
        norm_params(name + ".norm1", cin)
        conv_params(name + ".conv1", cin, cout, 3)
        norm_params(name + ".norm2", cout)
        conv_params(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv_params(name + ".nin_shortcut", cin, cout, 1)

    def attn_params(name, c):
        norm_params(name + ".norm", c)
        for n in ["q", "k", "v", "proj_out"]:
            conv_params(f"{name}.{n}", c, c, 1)

    ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
    levels = len(mult)
    # Encoder parameters (FLUX Encoder.__init__ order).
    conv_params("encoder.conv_in", cfg["in_ch"], ch, 3)
    in_mult = [1] + mult
    for i in range(levels):
        block_in, block_out = ch * in_mult[i], ch * mult[i]
        for j in range(nrb):
            resnet_params(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != levels - 1:
            conv_params(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    resnet_params("encoder.mid.block_1", block_in, block_in)
    attn_params("encoder.mid.attn_1", block_in)
    resnet_params("encoder.mid.block_2", block_in, block_in)
    norm_params("encoder.norm_out", block_in)
    conv_params("encoder.conv_out", block_in, 2 * cfg["z"], 3)
    # Decoder parameters.
    block_in = ch * mult[-1]
    conv_params("decoder.conv_in", cfg["z"], block_in, 3)
    resnet_params("decoder.mid.block_1", block_in, block_in)
    attn_params("decoder.mid.attn_1", block_in)
    resnet_params("decoder.mid.block_2", block_in, block_in)
    for i in reversed(range(levels)):
        block_out = ch * mult[i]
        for j in range(nrb + 1):
            resnet_params(f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != 0:
            conv_params(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm_params("decoder.norm_out", block_in)
    conv_params("decoder.conv_out", block_in, cfg["out_ch"], 3)

    def p(name):
        return t[name + ".weight"], t[name + ".bias"]

    def gn(x, name):
        return group_norm(x, cfg["groups"], *p(name), cfg["eps"])

    def conv3(x, name):
        return conv2d(x, *p(name), pad=(1, 1, 1, 1))

    def resnet(x, name):
        h = conv3(silu(gn(x, name + ".norm1")), name + ".conv1")
        h = conv3(silu(gn(h, name + ".norm2")), name + ".conv2")
        if name + ".nin_shortcut.weight" in t:
            x = conv2d(x, *p(name + ".nin_shortcut"))
        return x + h

    def attn(x, name):
        n, c, hh, ww = x.shape
        h = gn(x, name + ".norm")
        q, k, v = (conv2d(h, *p(f"{name}.{m}")).reshape(n, c, hh * ww).transpose(0, 2, 1) for m in "qkv")
        a = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(c)) @ v  # [n, hw, c]
        a = a.transpose(0, 2, 1).reshape(n, c, hh, ww)
        return x + conv2d(a, *p(name + ".proj_out"))

    def encoder(x):
        hs = [conv3(x, "encoder.conv_in")]
        for i in range(levels):
            for j in range(nrb):
                hs.append(resnet(hs[-1], f"encoder.down.{i}.block.{j}"))
            if i != levels - 1:
                # F.pad(x, (0, 1, 0, 1)): one zero column right, one zero row bottom.
                hs.append(conv2d(hs[-1], *p(f"encoder.down.{i}.downsample.conv"), stride=2, pad=(0, 1, 0, 1)))
        h = resnet(hs[-1], "encoder.mid.block_1")
        h = attn(h, "encoder.mid.attn_1")
        h = resnet(h, "encoder.mid.block_2")
        return conv3(silu(gn(h, "encoder.norm_out")), "encoder.conv_out")

    def decoder(z):
        h = conv3(z, "decoder.conv_in")
        h = resnet(h, "decoder.mid.block_1")
        h = attn(h, "decoder.mid.attn_1")
        h = resnet(h, "decoder.mid.block_2")
        for i in reversed(range(levels)):
            for j in range(nrb + 1):
                h = resnet(h, f"decoder.up.{i}.block.{j}")
            if i != 0:
                h = np.repeat(np.repeat(h, 2, axis=2), 2, axis=3)  # nearest x2
                h = conv3(h, f"decoder.up.{i}.upsample.conv")
        return conv3(silu(gn(h, "decoder.norm_out")), "decoder.conv_out")

    image = f32(RNG.uniform(-1, 1, (2, 3, 8, 12)))
    moments = encoder(image)
    mean = moments[:, : cfg["z"]]
    latent = SCALE * (mean - SHIFT)
    # BAGEL's latent patchify of image 0: [z, h, w] -> [(h/2)*(w/2), 4z] in (py, px, c).
    lat0 = latent[0]
    zc, lh, lw = lat0.shape
    tokens = np.einsum("chpwq->hwpqc", lat0.reshape(zc, lh // 2, 2, lw // 2, 2)).reshape(-1, 4 * zc)
    z_in = f32(latent)  # the decoder's input as the Rust test gives it (float32)
    raw = decoder(z_in / SCALE + SHIFT)
    t.update(
        {
            "input.image": image,
            "expected.moments": moments,
            "expected.latent": latent,
            "expected.tokens0": tokens,
            "input.latent": z_in,
            "expected.decoded_raw": raw,
            "expected.decoded": np.clip(raw * 0.5 + 0.5, 0.0, 1.0),
        }
    )
    return t


def save(name, tensors):
    out = {}
    for k, v in tensors.items():
        v = np.asarray(v)
        out[k] = np.ascontiguousarray(v if v.dtype == np.int64 else v.astype(np.float32))
    path = os.path.join(OUT_DIR, name)
    save_file(out, path)
    print(f"{path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    save("vision_embed.safetensors", embed_fixture())
    save("vision_vit.safetensors", vit_fixture())
    save("vision_vae.safetensors", vae_fixture())


if __name__ == "__main__":
    main()
