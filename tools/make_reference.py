#!/usr/bin/python3
"""A reference file (python/llava_vision_reference.py) for a model folder of this repository, through
the plain-PyTorch stand-ins of tools/torch_clip.py: what a user does with transformers or LLaVA, here
without either. The test of the writer and `llava-vision check` (test/check_reference.test.ts) and
the bundled demo's reference (weights/demo/reference.safetensors) are made with it.

  /usr/bin/python3 tools/make_reference.py --llava DIR --vision-tower DIR [--aspect square|pad] IMAGE... --out REF
  /usr/bin/python3 tools/make_reference.py --clip DIR [--select-layer N] [--select-feature F] IMAGE... --out REF
      [--perturb NAME=ULPS]   add ULPS units in the last place to every element of weight NAME (a
                              vision_model.* or model.mm_projector.* key) before the run
      [--list-of-tiles]       hand the pixel values over as a list of [1, 3, H, W] tensors (LLaVA's list form)
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import torch_clip  # noqa: E402
from llava_vision_reference import write_reference  # noqa: E402


def perturb(modules, spec):
    name, ulps = spec.rsplit("=", 1)
    for prefix, module in modules:
        key = name[len(prefix):] if name.startswith(prefix) else None
        params = dict(module.named_parameters())
        if key in params:
            with torch.no_grad():
                # Adding to the float32 bit pattern moves each element |ulps| units away from (or towards) zero.
                params[key].view(torch.int32).add_(int(ulps))
            return
    raise SystemExit(f"make_reference: no weight {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--llava")
    p.add_argument("--vision-tower")
    p.add_argument("--clip")
    p.add_argument("--select-layer", type=int)
    p.add_argument("--select-feature")
    p.add_argument("--aspect", choices=["square", "pad"])
    p.add_argument("--perturb")
    p.add_argument("--list-of-tiles", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("images", nargs="+")
    a = p.parse_args()
    torch.set_num_threads(1)
    from PIL import Image
    if a.llava:
        tower_dir = a.vision_tower or os.path.join(a.llava, json.load(open(os.path.join(a.llava, "config.json")))["mm_vision_tower"])
        tower, projector, config = torch_clip.load_llava(a.llava, tower_dir)
        modules = [("", tower.vision_tower), ("model.mm_projector.", projector)]
        aspect = a.aspect or config.get("image_aspect_ratio", "square")
        select = {}
    else:
        tower_dir = a.clip
        tower, projector = torch_clip.CLIPVisionModel.from_folder(a.clip), None
        modules = [("", tower)]
        aspect = a.aspect or "square"
        select = {"select_layer": a.select_layer, "select_feature": a.select_feature}
    if a.perturb:
        perturb(modules, a.perturb)
    processor_config = json.load(open(os.path.join(tower_dir, "preprocessor_config.json")))
    opened = [Image.open(f).convert("RGB") for f in a.images]
    pixels = torch_clip.clip_pixel_values(opened, processor_config, aspect)
    if a.list_of_tiles:
        pixels = [t.unsqueeze(0) for t in pixels]
    expected = write_reference(a.out, tower, pixels, projector=projector, image_names=[os.path.basename(f) for f in a.images], **select)
    print(json.dumps({name: e.get("torch_fp32_max_abs_err") for name, e in expected.items()}))


if __name__ == "__main__":
    main()
