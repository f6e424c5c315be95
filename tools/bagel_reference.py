#!/usr/bin/env python3
"""Whole-model parity fixture: an independent NumPy BAGEL + UNO forward (no torch).

Run `python3 tools/bagel_reference.py` from the repository root. It writes, under
crates/uno-core/tests/data/:

* `bagel_parity.safetensors`: the weights of a tiny BAGEL (uno-core's `BagelConfig::tiny(64,
  specials 60..63)`: hidden 32, 2 MoT layers, a 2-layer SigLIP with 4-px patches, 64-d
  PixelCodec latent tokens, 4 metaqueries) under BAGEL's `ema.safetensors` key names, as a
  user's checkpoint would be (Linear weights `[out, in]`, float32);
* `bagel_parity_case.safetensors`: one packed batch of two samples, written out by hand
  from BAGEL's packing rules (below), with its images, noise and timesteps (`input.*`),
  and the expected final hidden states and UNO losses (`expected.*`).

The packed batch:
  sample 0, edit: source 8x8 as clean VAE (4 latent tokens) and ViT (4 patches) splits, the
    instruction [5, 9, 17], the noised 12x12 target (9 latent tokens), the caption
    [21, 33] and 4 metaqueries;
  sample 1, text-to-image: prompt [7, 8], the noised 8x12 target (6 latent tokens), the
    caption [40, 41, 42] and 4 metaqueries.
Packing rules (BAGEL, plus UNO's leakage masking as uno-rs documents it):
  * a text split is `<|im_start|> ids <|im_end|>`, an image split is
    `<|vision_start|> tokens <|vision_end|>`; the markers are text tokens (und expert), VAE
    latent tokens go to the gen expert, ViT tokens and metaqueries to the und expert;
  * positions: +1 per text token; a clean image's tokens share one id, then +1; a noised
    image's tokens share one id and do not advance; the caption continues, metaqueries +1
    each after it;
  * masks: text and metaqueries causal inside, images full inside; a split sees every
    earlier split of its sample except noised ones; the caption and metaqueries see ONLY the
    noised target split (not the prompt or the source image) and not each other;
  * caption CE: each caption token but the last predicts the next one.

The forward (each piece written from the published architecture):
  text rows  = embed_tokens[id]
  ViT rows   = connector(siglip(patchify(2 x - 1))) + vit_pos_embed[row * 8 + col]
  VAE rows   = vae2llm(x_t) + time_embedder(t) + latent_pos_embed[row * 16 + col], with
               x_t = (1 - t) x0 + t eps (clean images: t = 0) and x0 the PixelCodec tokens
  metaquery rows = uno.metaqueries
  hidden = MoT decoder (tools/mot_reference.py), final norm per expert
  L_fm   = mean over noised tokens of mean over channels (llm2vae(h) - (eps - x0))^2
  L_cap  = mean CE of lm_head(h) over the caption targets of the pack
  L_vis  = mean (1 - cos(h_mq, target)) with target = adaptive-avg-pool to 2x2 of
           connector(siglip(clean target)) (no position table)
  total  = L_fm + 0.1 L_cap + 0.2 L_vis
Weights are drawn with a fixed seed and rounded to float32; the computation runs in float64.
"""

import math
import os

import numpy as np
from safetensors.numpy import save_file

import mot_reference as mot
import objectives_reference as obj
from vision_reference import (
    connector_forward,
    get_2d_sincos_pos_embed,
    linear,
    patchify,
    silu,
    siglip_forward,
    timestep_embedding,
)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "uno-core", "tests", "data")
RNG = np.random.default_rng(5150)

HIDDEN, LAYERS, VOCAB = 32, 2, 64
IM_START, IM_END, VISION_START, VISION_END = 60, 61, 62, 63
VIT = dict(hidden=32, inter=48, heads=4, layers=2, patch=4, side=8, eps=1e-6)
LATENT_DIM, PX_PER_TOKEN, LATENT_SIDE = 64, 4, 16
NUM_MQ = 4
SHIFT = 4.0
WEIGHTS = dict(caption=0.1, visual=0.2)
LLM_PREFIX = "language_model.model."
VIT_PREFIX = "vit_model.vision_model."


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def randn(*shape, scale=1.0):
    return f32(RNG.standard_normal(shape) * scale)


def make_weights():
    w = {}

    def lin(name, d_out, d_in, bias=True):
        w[name + ".weight"] = randn(d_out, d_in, scale=1.0 / math.sqrt(d_in))
        if bias:
            w[name + ".bias"] = randn(d_out, scale=0.1)

    def norm(name, d, bias=False):
        w[name + ".weight"] = f32(1.0 + 0.2 * RNG.standard_normal(d))
        if bias:
            w[name + ".bias"] = randn(d, scale=0.1)

    heads, kv, inter = mot.NH, mot.NKV, mot.INTER
    hd = HIDDEN // heads
    for i in range(LAYERS):
        p = f"{LLM_PREFIX}layers.{i}."
        for sfx in ["", "_moe_gen"]:
            lin(p + "self_attn.q_proj" + sfx, heads * hd, HIDDEN)
            lin(p + "self_attn.k_proj" + sfx, kv * hd, HIDDEN)
            lin(p + "self_attn.v_proj" + sfx, kv * hd, HIDDEN)
            lin(p + "self_attn.o_proj" + sfx, HIDDEN, heads * hd, bias=False)
            norm(p + "self_attn.q_norm" + sfx, hd)
            norm(p + "self_attn.k_norm" + sfx, hd)
            lin(p + "mlp" + sfx + ".gate_proj", inter, HIDDEN, bias=False)
            lin(p + "mlp" + sfx + ".up_proj", inter, HIDDEN, bias=False)
            lin(p + "mlp" + sfx + ".down_proj", HIDDEN, inter, bias=False)
            norm(p + "input_layernorm" + sfx, HIDDEN)
            norm(p + "post_attention_layernorm" + sfx, HIDDEN)
    norm(LLM_PREFIX + "norm", HIDDEN)
    norm(LLM_PREFIX + "norm_moe_gen", HIDDEN)
    w[LLM_PREFIX + "embed_tokens.weight"] = randn(VOCAB, HIDDEN)
    w["language_model.lm_head.weight"] = randn(VOCAB, HIDDEN, scale=1.0 / math.sqrt(HIDDEN))

    d, p = VIT["hidden"], VIT["patch"]
    lin(VIT_PREFIX + "embeddings.patch_embedding", d, p * p * 3)
    w[VIT_PREFIX + "embeddings.position_embedding.weight"] = randn(VIT["side"] ** 2, d, scale=0.5)
    for i in range(VIT["layers"]):
        lp = VIT_PREFIX + f"encoder.layers.{i}."
        for name in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            lin(lp + "self_attn." + name, d, d)
        norm(lp + "layer_norm1", d, bias=True)
        norm(lp + "layer_norm2", d, bias=True)
        lin(lp + "mlp.fc1", VIT["inter"], d)
        lin(lp + "mlp.fc2", d, VIT["inter"])
    norm(VIT_PREFIX + "post_layernorm", d, bias=True)
    lin("connector.fc1", HIDDEN, d)
    lin("connector.fc2", HIDDEN, HIDDEN)
    w["vit_pos_embed.pos_embed"] = f32(get_2d_sincos_pos_embed(HIDDEN, VIT["side"]))
    w["latent_pos_embed.pos_embed"] = f32(get_2d_sincos_pos_embed(HIDDEN, LATENT_SIDE))
    lin("time_embedder.mlp.0", HIDDEN, 256)
    lin("time_embedder.mlp.2", HIDDEN, HIDDEN)
    lin("vae2llm", HIDDEN, LATENT_DIM)
    lin("llm2vae", LATENT_DIM, HIDDEN)
    w["uno.metaqueries"] = randn(NUM_MQ, HIDDEN)
    return w


# ---------------------------------------------------------------- the codec and the layout


def pixel_tokens(image):
    """PixelCodec + BAGEL's 2x2 latent patchify: [3, H, W] in [0, 1] -> [(H/4)(W/4), 64].

    Latent cell (y, x) has channel (dy * 2 + dx) * 3 + c = pixel (2y + dy, 2x + dx) of
    channel c, channels 12..16 zero; a token is a 2x2 block of cells in (py, px, c) order."""
    c, h, wd = image.shape
    latent = np.zeros((16, h // 2, wd // 2))
    for dy in range(2):
        for dx in range(2):
            for ch in range(3):
                latent[(dy * 2 + dx) * 3 + ch] = image[ch, dy::2, dx::2]
    return patchify(latent, 2)


class Layout:
    """One pack, built split by split with the rules in the module docstring."""

    def __init__(self):
        self.pos, self.is_gen = [], []
        self.text = []  # (index, id)
        self.vit = []  # (index, position id)
        self.vae = []  # (index, latent position id, noised image slot or None)
        self.caption = []  # (index, label)
        self.mq = []
        self.samples = []  # (start, splits [(kind, start, length, sees)])
        self.images = []  # (kind, [3, H, W])
        self.mq_targets = []  # image index of each metaquery group's clean target
        self.slots = 0

    def begin(self):
        self.counter = 0
        self.splits = []
        self.start = len(self.pos)

    def end(self):
        self.samples.append((self.start, self.splits))

    def _split(self, kind, length, sees=None):
        self.splits.append((kind, len(self.pos) - self.start, length, sees))

    def _tok(self, pos, gen=False):
        self.pos.append(pos)
        self.is_gen.append(gen)
        return len(self.pos) - 1

    def text_split(self, ids, kind="text", sees=None):
        toks = [IM_START] + list(ids) + [IM_END]
        self._split(kind, len(toks), sees)
        idx = []
        for t in toks:
            i = self._tok(self.counter)
            self.counter += 1
            self.text.append((i, t))
            idx.append(i)
        if kind == "caption":
            self.caption += [(i, t) for i, t in zip(idx[:-1], toks[1:])]

    def image_split(self, kind, image):
        h, wd = image.shape[1:]
        rows, cols = h // PX_PER_TOKEN, wd // PX_PER_TOKEN
        self._split("noised" if kind == "noised" else "image", rows * cols + 2)
        self.text.append((self._tok(self.counter), VISION_START))
        slot = None
        if kind == "noised":
            slot = self.slots
            self.slots += 1
        for r in range(rows):
            for c in range(cols):
                i = self._tok(self.counter, gen=kind != "vit")
                if kind == "vit":
                    self.vit.append((i, r * VIT["side"] + c))
                else:
                    self.vae.append((i, r * LATENT_SIDE + c, slot))
        self.text.append((self._tok(self.counter), VISION_END))
        self.images.append((kind, image))
        if kind != "noised":
            self.counter += 1
        return len(self.images) - 1, len(self.splits) - 1

    def metaqueries(self, target_image, target_split):
        self._split("metaqueries", NUM_MQ, target_split)
        for _ in range(NUM_MQ):
            self.mq.append(self._tok(self.counter))
            self.counter += 1
        self.mq_targets.append(target_image)

    def masks(self):
        out = []
        for start, splits in self.samples:
            n = sum(s[2] for s in splits)
            visible = np.zeros((n, n), dtype=bool)
            for kind, a0, la, sees in splits:
                ra = slice(a0, a0 + la)
                if kind in ("text", "caption", "metaqueries"):
                    visible[ra, ra] = np.tril(np.ones((la, la), dtype=bool))
                else:
                    visible[ra, ra] = True
                for kind_b, b0, lb, _ in splits:
                    if b0 >= a0:
                        break
                    rb = slice(b0, b0 + lb)
                    if sees is not None:
                        visible[ra, rb] = b0 == splits[sees][1]
                    elif kind_b != "noised":
                        visible[ra, rb] = True
            out.append((n, ~visible))
        return out


def build_layout():
    src = f32(RNG.uniform(0, 1, (3, 8, 8)))
    tgt0 = f32(RNG.uniform(0, 1, (3, 12, 12)))
    tgt1 = f32(RNG.uniform(0, 1, (3, 8, 12)))
    lay = Layout()
    lay.begin()  # sample 0: edit
    lay.image_split("vae", src)
    lay.image_split("vit", src)
    lay.text_split([5, 9, 17])
    image, split = lay.image_split("noised", tgt0)
    lay.text_split([21, 33], kind="caption", sees=split)
    lay.metaqueries(image, split)
    lay.end()
    lay.begin()  # sample 1: text to image
    lay.text_split([7, 8])
    image, split = lay.image_split("noised", tgt1)
    lay.text_split([40, 41, 42], kind="caption", sees=split)
    lay.metaqueries(image, split)
    lay.end()
    return lay


# ---------------------------------------------------------------- the forward


def vit_features(w, images):
    """SigLIP + connector of images in [0, 1]: one [rows * cols, hidden] block per image."""
    p, side = VIT["patch"], VIT["side"]
    rows, ids, lens = [], [], []
    for img in images:
        r, c = img.shape[1] // p, img.shape[2] // p
        rows.append(patchify(2.0 * img - 1.0, p))
        ids += [y * side + x for y in range(r) for x in range(c)]
        lens.append(r * c)
    out = connector_forward(w, siglip_forward(w, VIT_PREFIX, VIT, np.concatenate(rows), np.array(ids), lens))
    return np.split(out, np.cumsum(lens)[:-1])


def main():
    w = make_weights()
    lay = build_layout()
    L = len(lay.pos)
    h = np.zeros((L, HIDDEN))

    for i, t in lay.text:
        h[i] = w[LLM_PREFIX + "embed_tokens.weight"][t]

    vit_images = [img for kind, img in lay.images if kind == "vit"]
    (vit_rows,) = vit_features(w, vit_images)
    for (i, pid), row in zip(lay.vit, vit_rows):
        h[i] = row + w["vit_pos_embed.pos_embed"][pid]

    x0 = np.concatenate([pixel_tokens(img) for kind, img in lay.images if kind != "vit"])
    logits_t = RNG.standard_normal(lay.slots)
    image_t = SHIFT * (1 / (1 + np.exp(-logits_t))) / (1 + (SHIFT - 1) * (1 / (1 + np.exp(-logits_t))))
    image_t = f32(image_t)
    token_t = np.array([0.0 if s is None else image_t[s] for _, _, s in lay.vae])
    noised = np.array([s is not None for _, _, s in lay.vae])
    eps = randn(len(lay.vae), LATENT_DIM) * noised[:, None]
    x_t = (1.0 - token_t[:, None]) * x0 + token_t[:, None] * eps
    time = linear(
        silu(linear(timestep_embedding(token_t, 256), w["time_embedder.mlp.0.weight"], w["time_embedder.mlp.0.bias"])),
        w["time_embedder.mlp.2.weight"],
        w["time_embedder.mlp.2.bias"],
    )
    gen_in = linear(x_t, w["vae2llm.weight"], w["vae2llm.bias"]) + time
    for k, (i, pid, _) in enumerate(lay.vae):
        h[i] = gen_in[k] + w["latent_pos_embed.pos_embed"][pid]
    for k, i in enumerate(lay.mq):
        h[i] = w["uno.metaqueries"][k % NUM_MQ]

    layers = {k[len(LLM_PREFIX) :]: v for k, v in w.items() if k.startswith(LLM_PREFIX)}
    is_gen = np.array(lay.is_gen)
    pos = np.array(lay.pos, dtype=np.int64)
    hidden = mot.model(h, layers, LAYERS, is_gen, pos, lay.masks())

    noised_idx = [i for (i, _, s) in lay.vae if s is not None]
    pred = linear(hidden[noised_idx], w["llm2vae.weight"], w["llm2vae.bias"])
    velocity = (eps - x0)[noised]
    _, flow, _ = obj.flow_loss(pred, velocity)

    cap_idx = [i for i, _ in lay.caption]
    logits = hidden[cap_idx] @ w["language_model.lm_head.weight"].T
    _, caption, _ = obj.caption_ce(logits, [label for _, label in lay.caption])

    targets = []
    for image, feats in zip(lay.mq_targets, vit_features(w, [lay.images[k][1] for k in lay.mq_targets])):
        img = lay.images[image][1]
        grid = feats.reshape(img.shape[1] // VIT["patch"], img.shape[2] // VIT["patch"], HIDDEN)
        targets.append(obj.adaptive_avg_pool(grid, int(math.isqrt(NUM_MQ))))
    targets = np.concatenate(targets)
    _, visual, _ = obj.cosine_loss(hidden[lay.mq], targets)
    total = flow + WEIGHTS["caption"] * caption + WEIGHTS["visual"] * visual

    case = {
        "input.position_ids": pos,
        "input.und_indexes": np.nonzero(~is_gen)[0],
        "input.gen_indexes": np.nonzero(is_gen)[0],
        "input.text_indexes": np.array([i for i, _ in lay.text]),
        "input.text_ids": np.array([t for _, t in lay.text]),
        "input.vit_indexes": np.array([i for i, _ in lay.vit]),
        "input.vit_position_ids": np.array([p for _, p in lay.vit]),
        "input.vae_indexes": np.array([i for i, _, _ in lay.vae]),
        "input.latent_position_ids": np.array([p for _, p, _ in lay.vae]),
        "input.noised_indexes": np.array(noised_idx),
        "input.caption_indexes": np.array(cap_idx),
        "input.caption_labels": np.array([label for _, label in lay.caption]),
        "input.metaquery_indexes": np.array(lay.mq),
        "input.sample_lens": np.array([n for n, _ in lay.masks()]),
        "input.image_timesteps": image_t,
        "input.token_timesteps": token_t,
        "input.noise": eps,
        "expected.hidden": hidden,
        "expected.visual_targets": targets,
        "expected.losses": np.array([total, flow, caption, visual]),
    }
    for k, (_, m) in enumerate(lay.masks()):
        case[f"input.mask.{k}"] = m.astype(np.uint8)
    for k, (_, img) in enumerate(lay.images):
        case[f"input.image.{k}"] = img
    save(
        "bagel_parity.safetensors",
        {k: v.astype(np.float32) for k, v in w.items()},
    )
    save(
        "bagel_parity_case.safetensors",
        {k: (v.astype(np.int64) if v.dtype.kind in "iub" else v.astype(np.float32)) for k, v in case.items()},
    )
    print(f"losses: total {total:.6f} flow {flow:.6f} caption {caption:.6f} visual {visual:.6f}")


def save(name, tensors):
    path = os.path.join(OUT_DIR, name)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)
    print(f"wrote {os.path.normpath(path)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
