"""Plain-PyTorch stand-ins for the modules a user hands to python/llava_vision_reference.py, with
their call contracts (transformers cannot be installed here):

- CLIPVisionModel: HF transformers' CLIPVisionModel (4.37 eager semantics), the same module names,
  so HF checkpoints' `vision_model.*` keys load into it; forward(pixel_values, output_hidden_states)
  returns an object with last_hidden_state, pooler_output and hidden_states.
- LlavaCLIPVisionTower: LLaVA's CLIPVisionTower (llava/model/multimodal_encoder/clip_encoder.py):
  .vision_tower, .select_layer, .select_feature, feature_select, forward(images).
- build_projector: LLaVA's builder.py (linear, mlp{N}x_gelu, identity): keys `<idx>.weight|bias`.
- clip_pixel_values: HF's slow CLIPImageProcessor and LLaVA's expand2square on PIL images.

Weights are read from the safetensors checkpoints this repository writes (F32, F16), with bench_torch.py's reader.
Dev and test only: the library never needs Python.
"""
import json
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import read_safetensors  # noqa: E402  (F32 and F16 safetensors, parsed without the safetensors package)


def read_folder_weights(folder):
    """All tensors of a model folder: model.safetensors, or the shards of model.safetensors.index.json."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        out.update(read_safetensors(os.path.join(folder, f)))
    return out


def _act(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: F.gelu(x)
    if name == "gelu_new":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    raise ValueError(f"unknown hidden_act {name}")


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(c.hidden_size))
        self.patch_embedding = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, c.patch_size, bias=False)
        positions = (c.image_size // c.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(positions, c.hidden_size)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values):
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class CLIPAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.scale = self.head_dim ** -0.5
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, nn.Linear(c.hidden_size, c.hidden_size))

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q = split(self.q_proj(x) * self.scale)  # transformers 4.37: q scaled before QK^T
        attn = torch.softmax(q @ split(self.k_proj(x)).transpose(-1, -2), dim=-1)
        return self.out_proj((attn @ split(self.v_proj(x))).transpose(1, 2).reshape(b, t, d))


class CLIPMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.activation_fn = _act(c.hidden_act)
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.fc2(self.activation_fn(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = CLIPAttention(c)
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = CLIPMLP(c)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(c) for _ in range(c.num_hidden_layers)])


class CLIPVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.encoder = CLIPEncoder(c)
        self.post_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixel_values, output_hidden_states=False):
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return SimpleNamespace(last_hidden_state=x, pooler_output=self.post_layernorm(x[:, 0, :]),
                               hidden_states=tuple(states) if output_hidden_states else None)


CLIP_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)


class CLIPVisionModel(nn.Module):
    """HF's CLIPVisionModel: .vision_model, forward(pixel_values, output_hidden_states=...)."""

    def __init__(self, config):
        super().__init__()
        config = config.get("vision_config", config)
        self.config = SimpleNamespace(**{**CLIP_DEFAULTS, **{k: v for k, v in config.items() if k in CLIP_DEFAULTS}})
        self.vision_model = CLIPVisionTransformer(self.config)

    @classmethod
    def from_folder(cls, folder):
        model = cls(json.load(open(os.path.join(folder, "config.json"))))
        weights = read_folder_weights(folder)
        model.load_state_dict({k: v for k, v in weights.items() if k.startswith("vision_model.")})
        return model.eval()

    @property
    def dtype(self):
        return self.vision_model.post_layernorm.weight.dtype

    @property
    def device(self):
        return self.vision_model.post_layernorm.weight.device

    def forward(self, pixel_values, output_hidden_states=False):
        return self.vision_model(pixel_values, output_hidden_states=output_hidden_states)


class LlavaCLIPVisionTower(nn.Module):
    """LLaVA's CLIPVisionTower, loaded (delay_load False), around a CLIPVisionModel."""

    def __init__(self, vision_tower, select_layer=-2, select_feature="patch"):
        super().__init__()
        self.is_loaded = True
        self.vision_tower = vision_tower
        self.vision_tower.requires_grad_(False)
        self.select_layer = select_layer
        self.select_feature = select_feature

    def feature_select(self, image_forward_outs):
        image_features = image_forward_outs.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            return image_features[:, 1:]
        if self.select_feature == "cls_patch":
            return image_features
        raise ValueError(f"Unexpected select feature: {self.select_feature}")

    @torch.no_grad()
    def forward(self, images):
        if isinstance(images, list):
            return [self.feature_select(self.vision_tower(img.to(device=self.device, dtype=self.dtype).unsqueeze(0),
                                                          output_hidden_states=True)).to(img.dtype) for img in images]
        outs = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        return self.feature_select(outs).to(images.dtype)

    @property
    def dtype(self):
        return self.vision_tower.dtype

    @property
    def device(self):
        return self.vision_tower.device


class IdentityMap(nn.Module):
    def forward(self, x):
        return x


def build_projector(projector_type, mm_hidden_size, hidden_size):
    """LLaVA's build_vision_projector."""
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type.startswith("mlp") and projector_type.endswith("x_gelu"):
        depth = int(projector_type[3:-6])
        modules = [nn.Linear(mm_hidden_size, hidden_size)]
        for _ in range(1, depth):
            modules += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        return nn.Sequential(*modules)
    if projector_type == "identity":
        return IdentityMap()
    raise ValueError(f"Unknown projector type: {projector_type}")


def load_llava(llava_dir, tower_dir):
    """(LlavaCLIPVisionTower, mm_projector) of an original LLaVA folder and its CLIP tower folder."""
    config = json.load(open(os.path.join(llava_dir, "config.json")))
    tower = LlavaCLIPVisionTower(CLIPVisionModel.from_folder(tower_dir),
                                 config.get("mm_vision_select_layer", -2), config.get("mm_vision_select_feature", "patch"))
    projector = build_projector(config.get("mm_projector_type", "linear"), config["mm_hidden_size"], config["hidden_size"])
    prefix = "model.mm_projector."
    weights = {k[len(prefix):]: v for k, v in read_folder_weights(llava_dir).items() if k.startswith(prefix)}
    projector.load_state_dict(weights)
    return tower.eval(), projector.eval(), config


def expand2square(img, background):
    """LLaVA's expand2square."""
    from PIL import Image
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, 0) if h > w else (0, (side - h) // 2))
    return out


def clip_pixel_values(images, processor_config, aspect="square"):
    """HF's slow CLIPImageProcessor (4.37) on PIL RGB images, LLaVA's 'pad' first if asked: [N, 3, H, W] float32."""
    c = processor_config
    size = c.get("size", 224)
    short = size if isinstance(size, int) else size["shortest_edge"]
    crop = c.get("crop_size", 224)
    ch, cw = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
    mean_list = c.get("image_mean", [0.48145466, 0.4578275, 0.40821073])
    mean = np.array(mean_list, dtype=np.float32)
    std = np.array(c.get("image_std", [0.26862954, 0.26130258, 0.27577711]), dtype=np.float32)
    out = []
    for img in images:
        img = img.convert("RGB")
        if aspect == "pad":
            img = expand2square(img, tuple(int(x * 255) for x in mean_list))
        w, h = img.size
        if w <= h:
            nw, nh = short, int(short * h / w)
        else:
            nw, nh = int(short * w / h), short
        img = img.resize((nw, nh), resample=c.get("resample", 3), reducing_gap=None)
        top, left = (nh - ch) // 2, (nw - cw) // 2
        if top < 0 or left < 0:
            raise ValueError("images smaller than the crop are not handled here")
        arr = np.asarray(img)[top:top + ch, left:left + cw]
        x = (arr.astype(np.float64) * c.get("rescale_factor", 1 / 255)).astype(np.float32)
        x = (x - mean) / std
        out.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
    return torch.stack(out)
