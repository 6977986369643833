#!/usr/bin/python3
"""PyTorch peer for `npm run bench -- --vs-torch` (dev-only; the project never needs it).

Runs the same generated ViT-L/14-336 + mlp2x_gelu checkpoint (weights/generated/...) through a
plain PyTorch transcription of HF's CLIPVisionModel (eager attention) and LLaVA's projector, and
prints one JSON line with per-image latencies. Needs only torch and numpy (Debian python3-torch);
safetensors are parsed here, so neither `safetensors` nor `transformers` is required.

Every GEMM goes through oneDNN (`mkldnn_linear`, weights converted once): Debian's torch is linked
against the reference BLAS (`BLAS_INFO=generic`), whose `addmm`/`bmm` take minutes per image, while
its bundled oneDNN runs at ~60 GFLOP/s per core. `--gemm blas` uses plain F.linear / bmm instead
(for a torch with a real BLAS); `--gemm auto` (the default) picks blas where torch has a real BLAS
(MKL, OpenBLAS: a pip wheel) and onednn where it has the generic one.

`--device cuda` runs it on the GPU in float32, TF32 off (strict float32 matmuls and convolutions, as
on the CPU), with F.linear / bmm (cuBLAS), each timed run ending in torch.cuda.synchronize().

  /usr/bin/python3 tools/bench_torch.py --tower DIR --llava DIR [--batch 1] [--reps 3] [--threads 1]
      [--device cpu|cuda] [--gemm auto|onednn|blas] [--modes llava,full]
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[info["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


def mm_onednn(x, w, b=None):
    """x [..., in] (dense) times w [out, in] (mkldnn) + b: torch's F.linear through oneDNN."""
    y = torch._C._nn.mkldnn_linear(x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn(), w, b)
    return y.to_dense().view(*x.shape[:-1], -1)


class Vision:
    """HF CLIPVisionTransformer (transformers 4.37 eager path) + LLaVA mlp2x_gelu projector."""

    def __init__(self, tower, projector, config, gemm, device="cpu"):
        self.onednn = gemm == "onednn"
        if device != "cpu":
            tower = {k: v.to(device) for k, v in tower.items()}
            projector = {k: v.to(device) for k, v in projector.items()}
        # Linear weights and biases live as oneDNN tensors, converted once (like a packed BLAS copy).
        is_linear = lambda k: "_proj." in k or ".fc1." in k or ".fc2." in k or "mm_projector" in k
        convert = lambda d: {k: v.to_mkldnn() if self.onednn and is_linear(k) else v for k, v in d.items()}
        self.w = convert(tower)
        self.p = convert(projector)
        self.c = config

    def matmul(self, a, b):
        """a [t, k] @ b [k, n] for one (image, head)."""
        if not self.onednn:
            return a @ b
        return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.t().contiguous().to_mkldnn(), None).to_dense()

    def embed(self, pixels):
        w, c = self.w, self.c
        x = F.conv2d(pixels, w["vision_model.embeddings.patch_embedding.weight"], stride=c["patch_size"])
        x = x.flatten(2).transpose(1, 2)
        cls = w["vision_model.embeddings.class_embedding"].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + w["vision_model.embeddings.position_embedding.weight"]
        return self.ln(x, "vision_model.pre_layrnorm")

    def ln(self, x, prefix):
        return F.layer_norm(x, x.shape[-1:], self.w[prefix + ".weight"], self.w[prefix + ".bias"], self.c["layer_norm_eps"])

    def lin(self, x, prefix, weights=None):
        w = weights or self.w
        if self.onednn:
            return mm_onednn(x, w[prefix + ".weight"], w[prefix + ".bias"])
        return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])

    def layer(self, x, i):
        p = f"vision_model.encoder.layers.{i}"
        b, t, d = x.shape
        h = self.c["num_attention_heads"]
        hd = d // h
        y = self.ln(x, p + ".layer_norm1")
        q = self.lin(y, p + ".self_attn.q_proj") * hd ** -0.5
        k = self.lin(y, p + ".self_attn.k_proj")
        v = self.lin(y, p + ".self_attn.v_proj")
        q, k, v = (z.view(b, t, h, hd).transpose(1, 2).reshape(b * h, t, hd) for z in (q, k, v))
        if self.onednn:
            ctx = torch.stack([self.matmul(torch.softmax(self.matmul(q[i], k[i].t()), dim=-1), v[i]) for i in range(b * h)])
        else:
            ctx = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)
        ctx = ctx.view(b, h, t, hd).transpose(1, 2).reshape(b, t, d)
        x = x + self.lin(ctx, p + ".self_attn.out_proj")
        y = self.lin(self.ln(x, p + ".layer_norm2"), p + ".mlp.fc1")
        y = y * torch.sigmoid(1.702 * y)
        return x + self.lin(y, p + ".mlp.fc2")

    def llava(self, pixels):
        x = self.embed(pixels)
        for i in range(self.c["num_hidden_layers"] - 1):  # hidden_states[-2]: the last layer is skipped
            x = self.layer(x, i)
        feats = x[:, 1:]
        y = F.gelu(self.lin(feats, "model.mm_projector.0", self.p))
        return self.lin(y, "model.mm_projector.2", self.p)

    def full(self, pixels):
        hidden = [self.embed(pixels)]
        for i in range(self.c["num_hidden_layers"]):
            hidden.append(self.layer(hidden[-1], i))
        pooled = self.ln(hidden[-1][:, 0], "vision_model.post_layernorm")
        return hidden, pooled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tower", required=True)
    ap.add_argument("--llava", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="llava,full")
    ap.add_argument("--gemm", choices=["auto", "onednn", "blas"], default="auto")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_torch: --device cuda, but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        a.gemm = "blas"  # cuBLAS; oneDNN is a CPU library
    elif a.gemm == "auto":
        a.gemm = "onednn" if "BLAS_INFO=generic" in torch.__config__.show() else "blas"
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    cfg = json.load(open(os.path.join(a.tower, "config.json")))
    cfg = cfg.get("vision_config", cfg)
    cfg.setdefault("layer_norm_eps", 1e-5)
    model = Vision(read_safetensors(os.path.join(a.tower, "model.safetensors")),
                   read_safetensors(os.path.join(a.llava, "model.safetensors")), cfg, a.gemm, a.device)
    s = cfg["image_size"]
    g = torch.Generator().manual_seed(0)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "gemm": a.gemm, "batch": a.batch, "device": a.device}
    if a.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["tf32"] = False
    with torch.inference_mode():
        for mode in a.modes.split(","):
            run = model.llava if mode == "llava" else model.full
            px = (torch.rand(a.batch, 3, s, s, generator=g) * 3.9 - 1.8).to(a.device)
            run(px)  # warm-up
            sync()
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                run(px)
                sync()
                times.append((time.perf_counter() - t0) / a.batch)
            result[mode] = {"per_image_s": times, "median_s": statistics.median(times)}
    if a.device == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
