//! The U-Net and text encoder: diffusers / transformers parameter names, shapes through
//! the network, gradients reaching every parameter, CPU vs GPU agreement.

use crate::harness::*;
use kuosan_diffusion::unet::{UNet2DConditionModel, UNetConfig};
use kuosan_nn::VarStore;
use kuosan_tensor::{DType, Device, Philox, Tensor};
use kuosan_textenc::{TextConfig, TextEncoder, Tokenizer};

pub fn tiny_unet(in_channels: usize) -> UNetConfig {
    UNetConfig {
        pooled_text_dim: None,
        scale_shift: false,
        only_cross_attention: vec![false; 2],
        sample_size: 16,
        in_channels,
        out_channels: in_channels,
        block_out_channels: vec![16, 32],
        down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
        up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
        layers_per_block: 1,
        norm_num_groups: 8,
        norm_eps: 1e-5,
        cross_attention_dim: 24,
        attention_head_dim: 2,
        transformer_layers_per_block: 1,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
    }
}

fn build(device: &Device, scale_shift: bool) -> (VarStore, UNet2DConditionModel, TextEncoder) {
    let vs = VarStore::new(device.clone(), DType::F32, 0);
    let config = UNetConfig {
        scale_shift,
        ..tiny_unet(3)
    };
    let unet = UNet2DConditionModel::new(&vs.root().pp("unet"), &config).unwrap();
    let text = TextEncoder::new(&vs.root().pp("text"), &TextConfig::new(24, 2, 2, 16)).unwrap();
    (vs, unet, text)
}

#[test]
fn parameter_names_follow_diffusers_and_transformers() {
    let (vs, _, _) = build(&Device::Cpu, false);
    let names: Vec<String> = vs.vars().into_iter().map(|(n, _)| n).collect();
    for want in [
        "unet.conv_in.weight",
        "unet.time_embedding.linear_1.weight",
        "unet.down_blocks.0.resnets.0.norm1.weight",
        "unet.down_blocks.0.resnets.0.time_emb_proj.bias",
        "unet.down_blocks.0.attentions.0.proj_in.weight",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.bias",
        "unet.down_blocks.0.downsamplers.0.conv.weight",
        "unet.down_blocks.1.resnets.0.conv_shortcut.weight",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
        "unet.mid_block.resnets.1.conv2.weight",
        "unet.up_blocks.0.resnets.1.conv_shortcut.weight",
        "unet.up_blocks.0.upsamplers.0.conv.weight",
        "unet.up_blocks.1.attentions.1.norm.weight",
        "unet.conv_norm_out.bias",
        "unet.conv_out.weight",
        "text.text_model.embeddings.token_embedding.weight",
        "text.text_model.embeddings.position_embedding.weight",
        "text.text_model.encoder.layers.1.self_attn.q_proj.weight",
        "text.text_model.encoder.layers.0.mlp.fc2.bias",
        "text.text_model.final_layer_norm.weight",
    ] {
        assert!(names.iter().any(|n| n == want), "missing parameter {want}");
    }
    // to_q/to_k/to_v have no bias in diffusers.
    assert!(!names.iter().any(|n| n.ends_with("to_q.bias")));
}

/// AdaGN (`resnet_time_scale_shift` "scale_shift"): each resnet's time projection
/// gives a scale and a shift per channel, [2 C, T] as in diffusers.
#[test]
fn scale_shift_doubles_the_time_projection() {
    let shape = |scale_shift| {
        let (vs, _, _) = build(&Device::Cpu, scale_shift);
        let w = vs
            .get("unet.down_blocks.1.resnets.0.time_emb_proj.weight")
            .unwrap();
        w.dims().to_vec()
    };
    // The second level has 32 channels; the time embedding is 4 x 16 wide.
    assert_eq!(shape(false), [32, 64]);
    assert_eq!(shape(true), [64, 64]);
}

/// diffusers' `only_cross_attention`: per level, the up path reversed; attn1's keys and
/// values then come from the text (cross_attention_dim wide); the config keeps it in
/// JSON as a bool or a list and names a bad value.
#[test]
fn only_cross_attention_makes_attn1_attend_to_the_text() {
    let k_shape = |only_cross: Vec<bool>, name: &str| {
        let vs = VarStore::new(Device::Cpu, DType::F32, 0);
        let config = UNetConfig {
            only_cross_attention: only_cross,
            ..tiny_unet(3)
        };
        UNet2DConditionModel::new(&vs.root().pp("unet"), &config).unwrap();
        vs.get(&format!(
            "unet.{name}.transformer_blocks.0.attn1.to_k.weight"
        ))
        .unwrap()
        .dims()
        .to_vec()
    };
    // Level 0 has 16 channels and cross-attention blocks down (block 0) and up (block 1);
    // the text is 24 wide; the middle block keeps self-attention.
    for (flags, block, want) in [
        ([false, false], "down_blocks.0.attentions.0", [16, 16]),
        ([true, false], "down_blocks.0.attentions.0", [16, 24]),
        ([true, false], "up_blocks.1.attentions.1", [16, 24]),
        ([false, true], "up_blocks.1.attentions.1", [16, 16]),
        ([true, true], "mid_block.attentions.0", [32, 32]),
    ] {
        assert_eq!(k_shape(flags.to_vec(), block), want, "{flags:?} {block}");
    }

    let base = tiny_unet(3);
    let json = base.to_json();
    assert_eq!(json["only_cross_attention"], serde_json::json!(false));
    assert_eq!(UNetConfig::from_json(&json, "c").unwrap(), base);
    let mixed = UNetConfig {
        only_cross_attention: vec![true, false],
        ..base.clone()
    };
    assert_eq!(
        mixed.to_json()["only_cross_attention"],
        serde_json::json!([true, false])
    );
    assert_eq!(UNetConfig::from_json(&mixed.to_json(), "c").unwrap(), mixed);
    let with = |v: serde_json::Value| {
        let mut j = base.to_json();
        j["only_cross_attention"] = v;
        UNetConfig::from_json(&j, "unet/config.json")
    };
    assert_eq!(
        with(serde_json::json!(true)).unwrap().only_cross_attention,
        [true, true]
    );
    for bad in [
        serde_json::json!([true]),
        serde_json::json!("yes"),
        serde_json::json!([1, 0]),
    ] {
        let e = with(bad.clone()).unwrap_err();
        assert!(
            e.contains("unet/config.json") && e.contains("only_cross_attention"),
            "{bad}: {e}"
        );
    }
}

/// A forward and backward pass on the CPU and on the GPU from the same weights agree,
/// and every parameter receives a gradient; with the time embedding added (diffusers'
/// default) and with AdaGN.
#[test]
fn forward_backward_on_cpu_and_gpu() {
    forward_backward_on_cpu_and_gpu_with(false);
}

#[test]
fn forward_backward_on_cpu_and_gpu_with_scale_shift() {
    forward_backward_on_cpu_and_gpu_with(true);
}

fn forward_backward_on_cpu_and_gpu_with(scale_shift: bool) {
    let run = |device: &Device| {
        let (vs, unet, text) = build(device, scale_shift);
        let tok = Tokenizer::new(16);
        let (ids, mask) = tok
            .encode(&["a red circle", "左边是一个红色的圆形"])
            .tensors(device)
            .unwrap();
        let ctx = text.forward(&ids, &mask).unwrap();
        assert_eq!(ctx.dims(), [2, 16, 24]);
        let x = Tensor::randn([2, 3, 16, 16], DType::F32, device, &mut Philox::new(5)).unwrap();
        let eps = unet.forward(&x, &[10.0, 900.0], &ctx, None).unwrap();
        assert_eq!(eps.dims(), [2, 3, 16, 16]);
        let loss = eps.sqr().unwrap().mean_all().unwrap();
        loss.backward().unwrap();
        let missing: Vec<String> = vs
            .vars()
            .into_iter()
            .filter(|(_, p)| p.grad().is_none())
            .map(|(n, _)| n)
            .collect();
        assert!(missing.is_empty(), "no gradient for {missing:?}");
        let grads: Vec<f64> = vs
            .vars()
            .iter()
            .flat_map(|(_, p)| values(&p.grad().unwrap()))
            .collect();
        (values(&eps), grads)
    };
    let (cpu_out, cpu_grads) = run(&Device::Cpu);
    let (gpu_out, gpu_grads) = run(&gpu());
    assert_close("unet output gpu vs cpu", &gpu_out, &cpu_out, 1e-4, 1e-3);
    assert_close(
        "all gradients gpu vs cpu",
        &gpu_grads,
        &cpu_grads,
        1e-4,
        1e-2,
    );
}
