"""Write a parity reference for llava-vision-tfjs from your own PyTorch modules.

One file, no dependency beyond torch (and numpy, which torch uses; Pillow only to open image files).
It runs your vision tower (and projector) twice -- in float32, and in a float64 copy that serves as
the truth -- and writes one safetensors file in the format of llava-vision-tfjs's golden fixtures:

  pixel_values         [N, 3, H, W]  the input, as your modules got it (float32)
  hidden_states.<k>    [N, T, D]     k = 0..L, every hidden state (0 = embeddings after pre_layrnorm)
  pooler_output        [N, D]        when the tower returns it
  features             [N, P, D]     LLaVA's selected features (select_layer, select_feature)
  projected            [N, P, H]     the projector's output, when a projector is given

each the float64 truth rounded to float32, and in __metadata__ (JSON strings):

  expected   per tensor: torch_fp32_max_abs_err (how far PyTorch's own float32 run is from the
             truth: the unit of the parity bound), f32_storage_max_abs_err, torch_fp32_rms_err,
             torch_fp32_max_rel_err, ref_max_abs, ref_rms; pixel_values: "exact": true
  run        select_layer, select_feature, images, tiles_per_image, module classes, versions, ...

Then, in JavaScript:  npx llava-vision check --reference ref.safetensors --model MODEL [IMAGES...]
or the Jest/Vitest matcher toMatchReference (llava-vision-tfjs/testing).

The tower is any module with the call contract of one of:

- HF transformers' CLIPVisionModel (or llava-hf's model.vision_tower): called as
  tower(pixel_values, output_hidden_states=True), it returns .hidden_states (and .pooler_output);
  features = hidden_states[select_layer] without the CLS token for select_feature="patch".
- LLaVA's CLIPVisionTower (llava/model/multimodal_encoder/clip_encoder.py): tower(images) returns the
  selected features itself, tower.vision_tower is the HF CLIPVisionModel that gives the hidden states,
  tower.select_layer and tower.select_feature are read from it.

The projector is any module called as projector(features): LLaVA's mm_projector (built by
llava/model/multimodal_projector/builder.py) or llava-hf's model.multi_modal_projector.

With transformers:

    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModel
    from llava_vision_reference import write_reference

    tower = CLIPVisionModel.from_pretrained("openai/clip-vit-large-patch14-336")
    processor = CLIPImageProcessor.from_pretrained("openai/clip-vit-large-patch14-336")
    write_reference("ref.safetensors", tower, images=["a.jpg", "b.png"], processor=processor)

With LLaVA (haotian-liu/LLaVA):

    from llava.model.builder import load_pretrained_model
    from llava.mm_utils import process_images
    from llava_vision_reference import write_reference

    tokenizer, model, image_processor, _ = load_pretrained_model("liuhaotian/llava-v1.5-7b", None, "llava-v1.5-7b")
    write_reference("ref.safetensors", model.get_vision_tower(), projector=model.get_model().mm_projector,
                    images=["a.jpg"], processor=lambda imgs: process_images(imgs, image_processor, model.config))

The modules are copied (copy.deepcopy) before they are converted; yours are left as they were. The
runs use no autocast and no TF32; in the float64 run, a softmax asked for in float32 on float64
input (newer transformers' eager attention upcasts that way, for half precision) is computed in
float64, so that the truth is float64 throughout.
"""

import copy
import contextlib
import json
import math
import os
import struct
import sys

import torch

FORMAT = "llava-vision-reference/1"
WRITER_VERSION = 1

__all__ = ["write_reference", "FORMAT"]


def write_reference(path, vision_tower, pixel_values=None, *, projector=None, images=None, processor=None,
                    select_layer=None, select_feature=None, interpolate_pos_encoding=False, image_names=None):
    """Runs the modules in float32 and float64 and writes the reference file `path`.

    vision_tower: HF CLIPVisionModel-like, or LLaVA's CLIPVisionTower (see the module docstring).
    pixel_values: [N, 3, H, W], or [B, T, 3, H, W], or a list of [T_i, 3, H, W] / [3, H, W] (LLaVA's
        anyres tiles): the tiles are concatenated and tiles_per_image is recorded. Or give
    images: image file paths (opened as LLaVA does: PIL.Image.open(f).convert("RGB")) or PIL images,
        with processor: an HF image processor (its .preprocess(images, return_tensors="pt") is used)
        or any callable returning pixel_values for a list of PIL images (e.g. LLaVA's process_images).
        With both, pixel_values are used and images only name them.
    select_layer, select_feature: LLaVA's mm_vision_select_layer / mm_vision_select_feature
        ("patch" drops the CLS token, "cls_patch" keeps it); default -2 and "patch", or the tower's
        own for LLaVA's CLIPVisionTower. For llava-hf: config.vision_feature_layer, and "patch" for
        vision_feature_select_strategy "default", "cls_patch" for "full".
    interpolate_pos_encoding: passed to an HF tower (transformers >= 4.45) for other image sizes.

    Returns {name: metadata} as written in __metadata__.expected.
    """
    llava_tower = _is_llava_tower(vision_tower)
    if llava_tower:
        if not getattr(vision_tower, "is_loaded", True):
            raise ValueError("the LLaVA vision tower is not loaded (delay_load): call vision_tower.load_model() first")
        for name, given, own in (("select_layer", select_layer, vision_tower.select_layer),
                                 ("select_feature", select_feature, vision_tower.select_feature)):
            if given is not None and given != own:
                raise ValueError(f"{name}={given!r} differs from the LLaVA tower's own {name} {own!r}")
        select_layer, select_feature = vision_tower.select_layer, vision_tower.select_feature
        if interpolate_pos_encoding:
            raise ValueError("interpolate_pos_encoding applies to an HF CLIPVisionModel, not to LLaVA's CLIPVisionTower")
    else:
        select_layer = -2 if select_layer is None else select_layer
        select_feature = "patch" if select_feature is None else select_feature
    if not isinstance(select_layer, int) or isinstance(select_layer, bool):
        raise ValueError(f"select_layer must be one integer, got {select_layer!r}")
    if select_feature not in ("patch", "cls_patch"):
        raise ValueError(f"select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")

    names = _image_names(images, image_names)
    if pixel_values is None:
        if images is None:
            raise ValueError("give pixel_values, or images with a processor")
        if processor is None:
            raise ValueError("images need a processor (an HF image processor, or a callable such as LLaVA's process_images)")
        pixel_values = _preprocess(_open_images(images), processor)
    pixels, tiles = _as_tiles(pixel_values)
    if names is not None and tiles is not None and len(names) != len(tiles):
        raise ValueError(f"{len(names)} images but pixel_values hold {len(tiles)}")

    device = _device_of(vision_tower)
    tower_kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
    runs = {}
    upcasts = 0
    for dtype in (torch.float32, torch.float64):
        tower = copy.deepcopy(vision_tower).to(dtype).eval()
        proj = copy.deepcopy(projector).to(dtype).eval() if projector is not None else None
        with _exact(device, upcast_softmax=dtype == torch.float64) as counter:
            runs[dtype] = _forward(tower, proj, pixels.to(device=device, dtype=dtype), llava_tower,
                                   select_layer, select_feature, tower_kwargs)
        upcasts += counter[0]
        del tower, proj
        for name, t in runs[dtype].items():
            if t.dtype != dtype:
                raise RuntimeError(f"the {_dtype_name(dtype)} run returned {name} in {_dtype_name(t.dtype)}: "
                                   "something in the module computes in another precision")
    truth, fp32 = runs[torch.float64], runs[torch.float32]

    tensors = {"pixel_values": pixels.detach().to("cpu", torch.float32).contiguous()}
    expected = {"pixel_values": {
        "shape": list(pixels.shape), "dtype": "F32", "exact": True,
        "what": "input: the pixel values the modules got (float32)",
        "ref_max_abs": float(pixels.abs().max()) if pixels.numel() else 0.0,
    }}
    for name, t in truth.items():
        if t.numel() == 0:
            continue
        meta = _error_stats(name, t.detach().to("cpu"), fp32[name].detach().to("cpu"))
        meta["what"] = _WHAT.get(name.split(".")[0], name)
        expected[name] = meta
        tensors[name] = t.detach().to("cpu", torch.float32).contiguous()

    run = {
        "writer": f"llava_vision_reference.py {WRITER_VERSION}",
        "tower": type(vision_tower).__name__,
        "tower_kind": "llava_clip_vision_tower" if llava_tower else "clip_vision_model",
        "projector": type(projector).__name__ if projector is not None else None,
        "select_layer": select_layer,
        "select_feature": select_feature,
        "images": names,
        "tiles_per_image": tiles,
        "interpolate_pos_encoding": bool(interpolate_pos_encoding),
        "pixel_values_dtype": _dtype_name(pixels.dtype),
        "module_dtype": _dtype_name(_param_dtype(vision_tower)),
        "device": str(device),
        "float64_softmax_upcasts": upcasts,
        "torch": torch.__version__,
        "transformers": getattr(sys.modules.get("transformers"), "__version__", None),
    }
    metadata = {
        "format": FORMAT,
        "producer": f"llava_vision_reference.py {WRITER_VERSION} (torch {torch.__version__})",
        "expected": json.dumps(expected, sort_keys=True),
        "run": json.dumps(run, sort_keys=True),
    }
    write_safetensors(path, tensors, metadata)
    return expected


_WHAT = {
    "hidden_states": "CLIPVisionModel hidden_states[k] (k=0: embeddings after pre_layrnorm)",
    "pooler_output": "CLIPVisionModel pooler_output (post_layernorm of the CLS token)",
    "features": "LLaVA CLIPVisionTower output: hidden_states[select_layer], feature_select applied",
    "projected": "mm_projector(features)",
}


def _is_llava_tower(m):
    return hasattr(m, "vision_tower") and hasattr(m, "feature_select") and hasattr(m, "select_layer")


def _forward(tower, projector, x, llava_tower, select_layer, select_feature, tower_kwargs):
    out = {}
    if llava_tower:
        hs_out = tower.vision_tower(x, output_hidden_states=True)
        features = tower(x)  # LLaVA's own forward: its feature_select, its dtype handling
    else:
        hs_out = tower(x, output_hidden_states=True, **tower_kwargs)
    hidden_states = _field(hs_out, "hidden_states", 2)
    if hidden_states is None:
        raise ValueError("the tower returned no hidden_states for output_hidden_states=True")
    for k, h in enumerate(hidden_states):
        out[f"hidden_states.{k}"] = h
    pooled = _field(hs_out, "pooler_output", 1)
    if pooled is not None:
        out["pooler_output"] = pooled
    if not llava_tower:
        selected = hidden_states[select_layer]
        features = selected[:, 1:] if select_feature == "patch" else selected
    out["features"] = features
    if projector is not None:
        out["projected"] = projector(features)
    return out


def _field(output, name, index):
    """An HF ModelOutput's field, also from a dict or a plain tuple (return_dict=False)."""
    if hasattr(output, name):
        return getattr(output, name)
    if isinstance(output, dict):
        return output.get(name)
    if isinstance(output, (tuple, list)) and len(output) > index:
        return output[index]
    return None


@contextlib.contextmanager
def _exact(device, upcast_softmax):
    """No autocast, no TF32; in the float64 run, softmax asked for in float32 on float64 input stays float64."""
    counter = [0]
    cuda = torch.backends.cuda.matmul if hasattr(torch.backends, "cuda") else None
    saved_tf32 = (getattr(cuda, "allow_tf32", None), torch.backends.cudnn.allow_tf32)
    saved_precision = torch.get_float32_matmul_precision() if hasattr(torch, "get_float32_matmul_precision") else None
    softmax = torch.nn.functional.softmax

    def float64_softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and torch.is_tensor(input) and input.dtype == torch.float64:
            counter[0] += 1
            dtype = torch.float64
        return softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    try:
        if cuda is not None and saved_tf32[0] is not None:
            cuda.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if saved_precision is not None:
            torch.set_float32_matmul_precision("highest")
        if upcast_softmax:
            torch.nn.functional.softmax = float64_softmax
        autocast = torch.autocast(device_type=device.type, enabled=False) if hasattr(torch, "autocast") and device.type in ("cpu", "cuda") else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            yield counter
    finally:
        torch.nn.functional.softmax = softmax
        if cuda is not None and saved_tf32[0] is not None:
            cuda.allow_tf32 = saved_tf32[0]
        torch.backends.cudnn.allow_tf32 = saved_tf32[1]
        if saved_precision is not None:
            torch.set_float32_matmul_precision(saved_precision)


def _error_stats(name, truth, fp32):
    if truth.shape != fp32.shape:
        raise RuntimeError(f"{name}: the float32 run gave {list(fp32.shape)}, the float64 run {list(truth.shape)}")
    t = truth.double()
    for what, x in (("float64", t), ("float32", fp32)):
        bad = (~torch.isfinite(x)).sum().item()
        if bad:
            raise ValueError(f"{name}: the {what} run gave {bad} NaN or Inf values: no reference can be made from it")
    err = (fp32.double() - t).abs()
    ref_max_abs = t.abs().max().item()
    max_err = err.max().item()
    return {
        "shape": list(t.shape),
        "dtype": "F32",
        "ref_max_abs": ref_max_abs,
        "ref_rms": math.sqrt((t * t).mean().item()),
        "torch_fp32_max_abs_err": max_err,
        "torch_fp32_rms_err": math.sqrt((err * err).mean().item()),
        "torch_fp32_max_rel_err": max_err / ref_max_abs if ref_max_abs > 0 else 0.0,
        "f32_storage_max_abs_err": (t.float().double() - t).abs().max().item(),
    }


def _as_tiles(pixel_values):
    """[N, 3, H, W] float tiles, and the tiles per image when the input had several per image."""
    if isinstance(pixel_values, dict) or hasattr(pixel_values, "data") and isinstance(getattr(pixel_values, "data"), dict):
        pixel_values = pixel_values["pixel_values"]
    if isinstance(pixel_values, (list, tuple)):
        parts = [_tensor(p) for p in pixel_values]
        if not parts:
            raise ValueError("pixel_values is an empty list")
        parts = [p.unsqueeze(0) if p.dim() == 3 else p for p in parts]
        for i, p in enumerate(parts):
            if p.dim() != 4:
                raise ValueError(f"pixel_values[{i}] must be [3, H, W] or [tiles, 3, H, W], got {list(p.shape)}")
        tiles = [p.shape[0] for p in parts]
        return torch.cat(parts), (tiles if any(t != 1 for t in tiles) else None)
    x = _tensor(pixel_values)
    if x.dim() == 5:
        return x.reshape(-1, *x.shape[2:]), [x.shape[1]] * x.shape[0]
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"pixel_values must be [N, 3, H, W], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"pixel_values must be floats, got {x.dtype}")
    return x, None


def _tensor(x):
    if torch.is_tensor(x):
        return x
    import numpy as np  # only for array input
    return torch.from_numpy(np.ascontiguousarray(x))


def _open_images(images):
    out = []
    for img in images:
        if isinstance(img, (str, os.PathLike)):
            from PIL import Image  # only for image files
            with Image.open(img) as opened:
                out.append(opened.convert("RGB"))  # LLaVA's loader
        else:
            out.append(img)
    return out


def _image_names(images, names):
    if names is not None:
        return [str(n) for n in names]
    if images is None:
        return None
    return [os.path.basename(os.fspath(img)) if isinstance(img, (str, os.PathLike)) else f"image {i}" for i, img in enumerate(images)]


def _preprocess(images, processor):
    if hasattr(processor, "preprocess"):  # an HF image processor
        return processor.preprocess(images, return_tensors="pt")["pixel_values"]
    return processor(images)


def _device_of(module):
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _param_dtype(module):
    for p in module.parameters():
        return p.dtype
    return torch.float32


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def write_safetensors(path, tensors, metadata):
    """float32 tensors to a safetensors file, written by hand (no safetensors package needed), to a
    temporary file renamed into place. The header is JSON {name: {dtype, shape, data_offsets}} with
    the string map __metadata__, padded with spaces to 8 bytes, after its length as u64 little-endian."""
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype != torch.float32:
            raise ValueError(f"{name}: only float32 tensors are written, got {t.dtype}")
        data = t.contiguous().numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _main(argv):
    """python llava_vision_reference.py REF.safetensors: what a reference file holds."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python llava_vision_reference.py REF.safetensors  (prints what it holds)\n"
              "       from llava_vision_reference import write_reference  (writes one; see the module docstring)")
        return 2
    with open(argv[0], "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    md = header.pop("__metadata__", {})
    expected = json.loads(md.get("expected", "{}"))
    print(f"{argv[0]}: {md.get('format', '(no format)')}, {md.get('producer', '(no producer)')}")
    print(f"run: {md.get('run', '{}')}")
    for name in sorted(header, key=_order):
        e = expected.get(name, {})
        err = "exact" if e.get("exact") else f"torch fp32 err {e['torch_fp32_max_abs_err']:.2e}" if "torch_fp32_max_abs_err" in e else "no error metadata"
        print(f"  {name:20s} {str(header[name]['shape']):22s} {err}")
    return 0


def _order(name):
    head, _, k = name.partition(".")
    rank = {"pixel_values": 0, "hidden_states": 1, "pooler_output": 2, "features": 3, "projected": 4}.get(head, 5)
    return (rank, int(k) if k.isdigit() else 0, name)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
