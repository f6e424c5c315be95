#!/usr/bin/env python3
"""PyTorch timing of the FLUX autoencoder, the counterpart of
`crates/uno-core/benches/codec.rs` (same shapes, random weights, f32, CPU).

Run `python3 tools/flux_ae_bench.py [--threads 2] [--sizes 256 512] [--runs 5]` from the
repository root. It prints one line per case: the median and minimum wall time of `--runs`
timed calls after one warm-up call, under `torch.inference_mode()` (the codec is frozen in
training, so neither side records a graph). Record the figures next to the criterion ones
in docs/performance.md, from the same sitting.

The module is FLUX's `flux/modules/autoencoder.py` (black-forest-labs), which BAGEL copies:
written out here so the script needs only torch. Weights are PyTorch's default init from a
fixed seed; timings do not depend on the values.
"""

import argparse
import statistics
import time

import torch
from torch import nn

CH, CH_MULT, NUM_RES_BLOCKS, Z, IN_CH, OUT_CH = 128, (1, 2, 4, 4), 2, 16, 3, 3
SCALE, SHIFT = 0.3611, 0.1159


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def swish(x):
    return x * torch.sigmoid(x)


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        seq = lambda t: t.reshape(b, 1, c, h * w).transpose(2, 3).contiguous()
        o = nn.functional.scaled_dot_product_attention(
            seq(self.q(n)), seq(self.k(n)), seq(self.v(n))
        )
        return x + self.proj_out(o.transpose(2, 3).reshape(b, c, h, w))


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class Mid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(IN_CH, CH, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = CH
        for i, m in enumerate(CH_MULT):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(NUM_RES_BLOCKS):
                level.block.append(ResnetBlock(block_in, CH * m))
                block_in = CH * m
            level.downsample = (
                nn.Conv2d(block_in, block_in, 3, stride=2) if i + 1 != len(CH_MULT) else None
            )
            self.down.append(level)
        self.mid = Mid(block_in)
        self.norm_out = norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * Z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(nn.functional.pad(h, (0, 1, 0, 1)))
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        block_in = CH * CH_MULT[-1]
        self.conv_in = nn.Conv2d(Z, block_in, 3, padding=1)
        self.mid = Mid(block_in)
        up = []
        for i in reversed(range(len(CH_MULT))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(NUM_RES_BLOCKS + 1):
                level.block.append(ResnetBlock(block_in, CH * CH_MULT[i]))
                block_in = CH * CH_MULT[i]
            level.upsample = nn.Conv2d(block_in, block_in, 3, padding=1) if i != 0 else None
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = norm(block_in)
        self.conv_out = nn.Conv2d(block_in, OUT_CH, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(swish(self.norm_out(h)))


def encode(encoder, x):
    mean, _ = encoder(x).chunk(2, dim=1)
    return SCALE * (mean - SHIFT)


def decode(decoder, z):
    return decoder(z / SCALE + SHIFT)


def time_call(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder, decoder = Encoder().eval(), Decoder().eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, f32 CPU")
    with torch.inference_mode():
        for size in args.sizes:
            image = torch.rand(1, IN_CH, size, size) * 2 - 1
            latent = torch.randn(1, Z, size // 8, size // 8)
            for name, fn in [
                ("encode", lambda: encode(encoder, image)),
                ("decode", lambda: decode(decoder, latent)),
            ]:
                med, best = time_call(fn, args.runs)
                print(f"flux_ae {name} {size}x{size}: median {med:.3f} s, min {best:.3f} s")


if __name__ == "__main__":
    main()
