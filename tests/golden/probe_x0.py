"""What a run's model predicts from (almost) pure noise, per prompt: a diagnostic.

    python tests/golden/probe_x0.py runs/shapes-small [--t 900] [--n 8] [--out FILE]
        [--prompt TEXT ...]

At a noisy timestep the best prediction of the clean picture is its mean given the
prompt: for "a large red circle on the left" a red disc on the left. This loads the run
folder with diffusers / transformers (as check_run_folder.py does), feeds n noise draws
at timestep t (the noisy picture of a black canvas) with each prompt, and writes a grid:
one row per prompt, the n predicted clean pictures, then their mean. If the means of the
"left" / "right" / "top" prompts are the same blur of all five places, the model has not
tied the place words to places. It also prints the cosine between the prompts' pooled
text embeddings (near 1: the text encoder does not tell them apart). Not run by CI.
"""
import argparse
import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel

from check_run_folder import byte_tokens, coordinate_channels

PROMPTS = [
    "a large red circle on the left",
    "a large red circle on the right",
    "a large red circle at the top",
    "a large red circle at the bottom",
    "a large red circle in the centre",
    "左边是一个大的红色圆形",
    "右边是一个大的红色圆形",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--prompt", action="append")
    ap.add_argument("--t", type=int, default=900)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    prompts = a.prompt or PROMPTS

    unet = UNet2DConditionModel.from_pretrained(os.path.join(a.run, "unet")).eval()
    text = CLIPTextModel.from_pretrained(os.path.join(a.run, "text_encoder")).eval()
    sched = DDIMScheduler.from_pretrained(os.path.join(a.run, "scheduler"))
    with open(os.path.join(a.run, "tokenizer", "tokenizer_config.json")) as f:
        tok = json.load(f)
    c = unet.config
    channels = c.out_channels
    abar = sched.alphas_cumprod[a.t]
    torch.manual_seed(0)
    rows, pooled_all = [], []
    with torch.no_grad():
        for p in prompts:
            ids, mask = byte_tokens([p], tok)
            enc = text(input_ids=ids, attention_mask=mask)
            pooled_all.append(enc.pooler_output[0])
            ctx = enc.last_hidden_state.expand(a.n, -1, -1)
            pooled = enc.pooler_output.expand(a.n, -1) if c.class_embed_type == "projection" else None
            size = c.sample_size
            # A black canvas (-1) noised to step t.
            xt = abar.sqrt() * -torch.ones(a.n, channels, size, size) + (1 - abar).sqrt() * torch.randn(
                a.n, channels, size, size)
            extra = coordinate_channels(c, a.n)
            inp = xt if extra is None else torch.cat([xt, extra], 1)
            out = unet(inp, a.t, encoder_hidden_states=ctx, class_labels=pooled).sample
            if sched.config.prediction_type == "v_prediction":
                x0 = abar.sqrt() * xt - (1 - abar).sqrt() * out
            else:
                x0 = (xt - (1 - abar).sqrt() * out) / abar.sqrt()
            rows.append(torch.cat([*x0.clamp(-1, 1), x0.mean(0).clamp(-1, 1)], dim=2))
    grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    out = a.out or os.path.join(a.run, f"probe_x0_t{a.t}.png")
    Image.fromarray(np.ascontiguousarray(grid)).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                                       Image.NEAREST).save(out)
    print("predicted clean pictures at t =", a.t, "->", out)
    pooled = torch.nn.functional.normalize(torch.stack(pooled_all), dim=-1)
    print("cosine of pooled text embeddings with", repr(prompts[0]))
    for p, v in zip(prompts[1:], pooled[1:]):
        print(f"  {float(pooled[0] @ v):6.3f}  {p}")


if __name__ == "__main__":
    main()
