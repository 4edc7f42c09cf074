#!/usr/bin/env python3
"""torch.profiler's per-op table of the PyTorch peer's training step on kuosan's model.

  python3 peer_profile.py UNET_CONFIG TEXT_CONFIG [--batch 64] [--threads 2] [--steps 5]

The configs are the ones `cargo xtask bench train` writes (target/bench-model/...). The
step is the peer script's (text encoder + U-Net forward, MSE, backward, AdamW), with the
pooled text and the x / y input channels filled in as `peer_wrapper.py` does; compare the
table with kuosan's `KUOSAN_PROFILE=1` one.
"""
import argparse, json, os, sys

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

# The same model as kuosan's: the pooled text and the x / y channels (see the wrapper).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_wrapper  # noqa: E402,F401  (patches UNet2DConditionModel.forward)


def load(path):
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("unet")
    ap.add_argument("text")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    unet = UNet2DConditionModel(**load(a.unet))
    text = CLIPTextModel(CLIPTextConfig(**load(a.text)))
    c = unet.config
    x = torch.randn(a.batch, c.in_channels, c.sample_size, c.sample_size)
    ids = torch.randint(3, text.config.vocab_size, (a.batch, text.config.max_position_embeddings))
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=2e-4)

    def step():
        t = torch.randint(0, 1000, (a.batch,))
        eps = torch.randn_like(x)
        ctx = text(ids).last_hidden_state
        loss = ((unet(x + eps, t, encoder_hidden_states=ctx).sample - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))


if __name__ == "__main__":
    main()
