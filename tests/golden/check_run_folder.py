"""Loads a kuosan run folder with diffusers and transformers and samples from it.

    python tests/golden/check_run_folder.py runs/shapes-small [--prompt TEXT ...] [--out FILE]

Checks that `UNet2DConditionModel.from_pretrained(run/"unet")` and
`CLIPTextModel.from_pretrained(run/"text_encoder")` load every tensor (nothing missing,
unexpected or of the wrong shape), then samples with diffusers' DDIMScheduler built from
`run/"scheduler"` (50 steps, eta 1, guidance 4, kuosan's byte tokenizer re-implemented
below, the pooled text as `class_labels`) and
writes a PNG grid, one row per prompt. Not run by CI: it needs torch, diffusers and
transformers.
"""
import argparse
import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel


def byte_tokens(prompts, tok):
    """kuosan's tokenizer: BOS, the UTF-8 bytes (cut at a character boundary), EOS, PAD."""
    n = tok["model_max_length"]
    ids, mask = [], []
    for p in prompts:
        b = p.encode("utf-8")[: n - 2]
        b = b.decode("utf-8", errors="ignore").encode("utf-8")
        row = [tok["bos_token_id"], *b, tok["eos_token_id"]]
        mask.append([1] * len(row) + [0] * (n - len(row)))
        ids.append(row + [tok["pad_token_id"]] * (n - len(row)))
    return torch.tensor(ids), torch.tensor(mask)


def coordinate_channels(c, n):
    """kuosan's `coord_channels` (in_channels = out_channels + 2): x then y, -1..1 across
    the pixel centres, appended to the noisy picture; None for a plain U-Net."""
    if c.in_channels != c.out_channels + 2:
        return None
    size = c.sample_size
    lin = torch.linspace(-1, 1, size)
    return torch.cat([lin.view(1, 1, 1, size).expand(n, 1, size, size),
                      lin.view(1, 1, size, 1).expand(n, 1, size, size)], 1)


def check_loading(info, what):
    bad = {k: v for k, v in info.items() if v}  # missing, unexpected, mismatched, errors
    if bad:
        raise SystemExit(f"{what} did not load cleanly: {bad}")
    print(f"{what}: every tensor loaded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--prompt", action="append")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    prompts = a.prompt or ["a red circle", "a blue square on the left", "一个黄色的圆形"]

    unet, info = UNet2DConditionModel.from_pretrained(os.path.join(a.run, "unet"), output_loading_info=True)
    check_loading(info, "UNet2DConditionModel.from_pretrained(run/unet)")
    text, info = CLIPTextModel.from_pretrained(os.path.join(a.run, "text_encoder"), output_loading_info=True)
    check_loading(info, "CLIPTextModel.from_pretrained(run/text_encoder)")
    # kuosan's DDIM defaults: the last step lands on abar_0, leading spacing + 1.
    sched = DDIMScheduler.from_pretrained(os.path.join(a.run, "scheduler"), set_alpha_to_one=False,
                                          steps_offset=1, clip_sample=True)
    with open(os.path.join(a.run, "tokenizer", "tokenizer_config.json")) as f:
        tok = json.load(f)
    # kuosan's `context_mask`: the U-Net's cross-attention ignores the padding tokens,
    # which diffusers takes as `encoder_attention_mask`.
    with open(os.path.join(a.run, "kuosan_config.json")) as f:
        context_mask = json.load(f).get("context_mask", False)

    unet.eval(), text.eval()
    torch.manual_seed(0)
    rows = []
    with torch.no_grad():
        for p in prompts:
            ids, mask = byte_tokens(["", p], tok)
            enc = text(input_ids=ids, attention_mask=mask)
            ctx = enc.last_hidden_state
            uncond, cond = ctx[:1].expand(a.n, -1, -1), ctx[1:].expand(a.n, -1, -1)
            key_mask = None
            if context_mask:
                key_mask = torch.cat([mask[:1].expand(a.n, -1), mask[1:].expand(a.n, -1)])
            # The pooled text (EOS state) goes in as class_labels (class_embed_type
            # "projection"), when the U-Net was trained with it.
            pooled = None
            if unet.config.class_embed_type == "projection":
                pooled = torch.cat([enc.pooler_output[:1].expand(a.n, -1), enc.pooler_output[1:].expand(a.n, -1)])
            c = unet.config
            x = torch.randn(a.n, c.out_channels, c.sample_size, c.sample_size)
            extra = coordinate_channels(c, 2 * a.n)
            sched.set_timesteps(a.steps)
            for t in sched.timesteps:
                inp = torch.cat([x, x]) if extra is None else torch.cat([torch.cat([x, x]), extra], 1)
                eps = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond]),
                           class_labels=pooled, encoder_attention_mask=key_mask).sample
                e_u, e_c = eps.chunk(2)
                x = sched.step(e_u + a.guidance * (e_c - e_u), t, x, eta=1.0).prev_sample
            img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            rows.append(torch.cat(list(img), dim=2))  # [C, H, n W]
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    out = a.out or os.path.join(a.run, "diffusers_samples.png")
    Image.fromarray(np.ascontiguousarray(grid)).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
    print("diffusers sampled", len(prompts), "prompts x", a.n, "->", out)


if __name__ == "__main__":
    main()
