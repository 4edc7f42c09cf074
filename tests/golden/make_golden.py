"""Writes the golden files the Rust tests compare against (tests/src/golden.rs).

Builds a tiny diffusers UNet2DConditionModel and a tiny transformers CLIPTextModel with
seeded weights, the same configs kuosan builds, runs them on fixed inputs, and runs the
diffusers DDPM and DDIM schedulers on fixed inputs; writes weights, inputs and outputs
as safetensors next to this script. CI does not run it (it needs PyTorch); the files it
writes are committed.

    python3 -m venv .venv && .venv/bin/pip install torch diffusers transformers safetensors
    .venv/bin/python tests/golden/make_golden.py
"""

import json
import os

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
BOS, EOS, PAD, MAX_LEN = 256, 257, 258, 16


def tokenize(texts):
    """kuosan's byte tokenizer: BOS, UTF-8 bytes (cut at a whole character), EOS, PAD."""
    ids, mask = [], []
    for t in texts:
        body = b""
        for ch in t:
            if len(body) + len(ch.encode("utf-8")) > MAX_LEN - 2:
                break
            body += ch.encode("utf-8")
        row = [BOS] + list(body) + [EOS]
        mask.append([1] * len(row) + [0] * (MAX_LEN - len(row)))
        ids.append(row + [PAD] * (MAX_LEN - len(row)))
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(mask, dtype=torch.int64)


def text_encoder():
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=259, hidden_size=24, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=MAX_LEN, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    model = CLIPTextModel(config).eval()
    ids, mask = tokenize(["a red circle", "左边是一个红色的圆形"])
    with torch.no_grad():
        enc = model(input_ids=ids, attention_mask=mask)
        out, pooled = enc.last_hidden_state, enc.pooler_output
    # The canonical names carry the `text_model.` prefix (transformers 4 writes it,
    # transformers 5 maps it on load); write them that way whatever this version uses.
    weights = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
               for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(weights, os.path.join(HERE, "text_weights.safetensors"))
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "out": out.contiguous(),
               "pooled": pooled.contiguous()},
              os.path.join(HERE, "text_io.safetensors"))


def unet(name="unet", pooled=False, scale_shift=False, only_cross=None):
    """A tiny U-Net; `pooled` adds the pooled-text MLP (class_embed_type "projection",
    the pooled vector passed as class_labels), as kuosan's presets build it;
    `scale_shift` makes the resnets AdaGN (resnet_time_scale_shift "scale_shift");
    `only_cross` is only_cross_attention per down block (the up path reads it reversed)."""
    torch.manual_seed(1)
    extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=24) if pooled else {}
    if scale_shift:
        extra["resnet_time_scale_shift"] = "scale_shift"
    if only_cross is not None:
        extra["only_cross_attention"] = only_cross
    model = UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
        norm_num_groups=8, norm_eps=1e-5, cross_attention_dim=24, attention_head_dim=2,
        **extra,
    ).eval()
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(2, 3, 16, 16, generator=g)
    context = torch.randn(2, MAX_LEN, 24, generator=g)
    t = torch.tensor([10.0, 900.0])
    io = {"sample": sample, "context": context, "timesteps": t}
    if pooled:
        io["pooled"] = torch.randn(2, 24, generator=g)
    with torch.no_grad():
        out = model(sample, t, encoder_hidden_states=context, class_labels=io.get("pooled")).sample
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(HERE, f"{name}_weights.safetensors"))
    save_file({**io, "out": out.contiguous()}, os.path.join(HERE, f"{name}_io.safetensors"))
    with open(os.path.join(HERE, f"{name}_config.json"), "w") as f:
        json.dump(dict(model.config), f, indent=2, default=list)


def schedulers():
    """Deterministic scheduler quantities: DDPM posterior means (the step without its
    noise) and variances, DDIM eta=0 steps, and DDIM timesteps, for both predictions."""
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 3, 4, 4, generator=g)
    model_out = torch.randn(2, 3, 4, 4, generator=g)
    tensors = {"sample": sample, "model_output": model_out}
    for pred in ["epsilon", "v_prediction"]:
        for schedule in ["linear", "squaredcos_cap_v2"]:
            key = f"{pred}.{schedule}"
            ddpm = DDPMScheduler(beta_schedule=schedule, prediction_type=pred, clip_sample=False)
            tensors[f"{key}.alphas_cumprod"] = ddpm.alphas_cumprod.to(torch.float64)
            for t in [999, 500, 37, 1, 0]:
                # The step's mean: run with zero noise by asking for t's posterior mean
                # through a generator-free path: step() adds variance only for t > 0,
                # so compute it as prev_sample - the noise term with a fixed noise of 0.
                out = ddpm.step(model_out, t, sample, generator=torch.Generator().manual_seed(0))
                noise = torch.randn(model_out.shape, generator=torch.Generator().manual_seed(0))
                variance = ddpm._get_variance(t) ** 0.5 if t > 0 else torch.tensor(0.0)
                tensors[f"{key}.ddpm.{t}.mean"] = (out.prev_sample - variance * noise).contiguous()
                tensors[f"{key}.ddpm.{t}.pred_x0"] = out.pred_original_sample.contiguous()
                tensors[f"{key}.ddpm.{t}.variance"] = torch.tensor([float(ddpm._get_variance(t)) if t > 0 else 0.0],
                                                                   dtype=torch.float64)
            for steps in [50, 10]:
                ddim = DDIMScheduler(beta_schedule=schedule, prediction_type=pred, clip_sample=False,
                                     set_alpha_to_one=False, steps_offset=1)
                ddim.set_timesteps(steps)
                tensors[f"{key}.ddim{steps}.timesteps"] = ddim.timesteps.to(torch.int64)
                for t in [int(ddim.timesteps[0]), int(ddim.timesteps[steps // 2]), int(ddim.timesteps[-1])]:
                    out = ddim.step(model_out, t, sample, eta=0.0)
                    tensors[f"{key}.ddim{steps}.{t}"] = out.prev_sample.contiguous()
    save_file(tensors, os.path.join(HERE, "schedulers.safetensors"))


if __name__ == "__main__":
    text_encoder()
    unet()
    unet("unet_pooled", pooled=True)
    unet("unet_scale_shift", pooled=True, scale_shift=True)
    # Down block 0's attention and, reversed, up block 1's: both attend only to the text.
    unet("unet_only_cross", pooled=True, scale_shift=True, only_cross=[True, False])
    schedulers()
    print("wrote golden files to", HERE)
