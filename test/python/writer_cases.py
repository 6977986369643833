"""Cases of python/llava_vision_reference.py's write_reference on small modules built here; run by
test/check_reference.test.ts, which reads the files written and the one JSON line printed.

  /usr/bin/python3 test/python/writer_cases.py OUT_DIR
"""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

from llava_vision_reference import write_reference  # noqa: E402
import torch_clip  # noqa: E402

out_dir = sys.argv[1]
results = {}


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the message is the result
        return f"{type(e).__name__}: {e}"
    return None


class SoftmaxTower(torch.nn.Module):
    """A tower whose attention-like step asks for a float32 softmax, as newer transformers' eager attention does."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, pixel_values, output_hidden_states=False):
        x = pixel_values.flatten(2) * self.scale
        h = torch.nn.functional.softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)
        return SimpleNamespace(hidden_states=(x, h, h * 2), pooler_output=None)


torch.manual_seed(0)
pixels = torch.randn(2, 3, 4, 4)
path = os.path.join(out_dir, "softmax.safetensors")
expected = write_reference(path, SoftmaxTower(), pixels, select_layer=-1, select_feature="cls_patch")
truth = torch.softmax(pixels.double().flatten(2) * 3.0, dim=-1)
results["softmax"] = {
    "file": path,
    "torch_err": expected["hidden_states.1"]["torch_fp32_max_abs_err"],
    "truth_f32": truth.float().flatten().tolist(),
}

# LLaVA's tower: its select_layer is the tower's own; a different one given is an error.
config = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 28, "patch_size": 14}
clip = torch_clip.CLIPVisionModel(config)
with torch.no_grad():
    for i, p in enumerate(clip.parameters()):
        p.copy_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape) * (1 + i % 3))
llava = torch_clip.LlavaCLIPVisionTower(clip, select_layer=-1, select_feature="patch")
tiles = torch.randn(3, 3, 28, 28)
results["select_layer_conflict"] = error_of(lambda: write_reference(os.path.join(out_dir, "x.safetensors"), llava, tiles, select_layer=-2))

# The input forms: LLaVA's list of per-image tiles, [B, T, 3, H, W], a numpy array, a BatchFeature-like dict.
half = clip.half()  # a float16 module (LLaVA's usual dtype) is copied to float32 and float64, and left as it was
before = [p.clone() for p in half.parameters()]
forms = {
    "list": [tiles[:2], tiles[2]],
    "five_d": tiles[:2].unsqueeze(0),
    "numpy": tiles.numpy(),
    "dict": {"pixel_values": tiles},
}
results["forms"] = {}
for name, value in forms.items():
    f = os.path.join(out_dir, f"form_{name}.safetensors")
    write_reference(f, half, value)
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        md = json.loads(fh.read(n))["__metadata__"]
    results["forms"][name] = {"file": f, "run": json.loads(md["run"])}
results["module_untouched"] = half.vision_model.post_layernorm.weight.dtype == torch.float16 and all(
    torch.equal(a, b) for a, b in zip(before, half.parameters()))
results["leftovers"] = sorted(f for f in os.listdir(out_dir) if ".tmp-" in f)


# Images with a processor: a callable (LLaVA's process_images) or an HF image processor (.preprocess).
demo = os.path.join(HERE, "..", "..", "weights", "demo")
chelsea = os.path.join(demo, "images", "chelsea.png")
processor_config = json.load(open(os.path.join(demo, "clip_tower", "preprocessor_config.json")))
demo_tower = torch_clip.CLIPVisionModel.from_folder(os.path.join(demo, "clip_tower"))


class HFLikeProcessor:
    def preprocess(self, images, return_tensors=None):
        assert return_tensors == "pt"
        return {"pixel_values": torch_clip.clip_pixel_values(images, processor_config, "pad")}


results["images"] = {}
for name, processor in (("callable", lambda imgs: torch_clip.clip_pixel_values(imgs, processor_config, "pad")), ("hf", HFLikeProcessor())):
    f = os.path.join(out_dir, f"images_{name}.safetensors")
    write_reference(f, demo_tower, images=[chelsea], processor=processor)
    results["images"][name] = f
results["images_without_processor"] = error_of(lambda: write_reference(os.path.join(out_dir, "w.safetensors"), demo_tower, images=[chelsea]))


class NanTower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, pixel_values, output_hidden_states=False):
        return SimpleNamespace(hidden_states=(pixel_values.flatten(2) * self.w, torch.log(pixel_values.flatten(2) - 10)))


results["nan"] = error_of(lambda: write_reference(os.path.join(out_dir, "nan.safetensors"), NanTower(), pixels))
results["no_pixels"] = error_of(lambda: write_reference(os.path.join(out_dir, "y.safetensors"), NanTower()))
results["bad_feature"] = error_of(lambda: write_reference(os.path.join(out_dir, "z.safetensors"), NanTower(), pixels, select_feature="cls"))
print(json.dumps(results))
