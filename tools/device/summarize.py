#!/usr/bin/env python3
"""The results of tools/device_check.sh: one JSON file (every step's status, duration, figures or the
reason it failed) and a summary printed into the log. Reads the step outputs the script left in its
work folder; needs only the standard library (it runs even where torch or Node did not).

  python3 tools/device/summarize.py --work DIR --out FILE.json --started EPOCH --deadline S --dry-run 0|1
"""
import argparse
import json
import os
import re
import statistics
import time


def read_json(path):
    """The JSON of a file: one object, or the last line that is one."""
    try:
        text = open(path).read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.strip().splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def bench_median(xs):
    """The median as the benchmarks take it (tools/bench.ts): the lower middle of an even count."""
    return sorted(xs)[(len(xs) - 1) // 2]


def json_lines(path):
    out = []
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def steps(work):
    rows = []
    try:
        for line in open(os.path.join(work, "steps.tsv")):
            name, status, seconds, reason = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            rows.append({"name": name, "status": status, "seconds": float(seconds or 0), "reason": reason or None})
    except OSError:
        pass
    return rows


def figures_test_webgpu(work):
    text = open(os.path.join(work, "test_webgpu.out")).read()
    f = {}
    m = re.findall(r"^tests: (\d+) passed, (\d+) failed, (\d+) skipped", text, re.M)
    if m:
        f["passed"], f["failed"], f["skipped"] = map(int, m[-1])
    m = re.search(r"webgpu suites (?:on|SKIPPED:) (.*)", text)
    if m:
        f["adapter"] = m.group(1).strip()
    excluded = os.path.join(work, "test_webgpu.excluded")
    if os.path.exists(excluded):
        f["excluded_cases"] = [c for c in open(excluded).read().strip().split("|") if c]
        f["excluded_why"] = "sharp (libvips) not in the bundle: JPEG decoding unavailable"
    return f


def figures_check(work, backend):
    r = read_json(os.path.join(work, f"check_{backend}.json"))
    if not r:
        return None
    per = {}
    for t in r["tensors"]:
        c = t.get("comparison") or {}
        per[t["name"]] = {"ok": t["ok"], "max_abs_err": c.get("maxAbsErr"), "torch_fp32_err": t.get("torchErr"),
                          "ratio": t.get("ratio"), "cosine": c.get("cosine"), "problem": t.get("problem")}
    ratios = {k: v["ratio"] for k, v in per.items() if isinstance(v["ratio"], (int, float))}
    worst = max(ratios, key=ratios.get) if ratios else None
    return {"ok": r["ok"], "backend": r["backend"], "bound": r["bound"], "tensors": len(per),
            "failed": [k for k, v in per.items() if not v["ok"]], "worst_tensor": worst,
            "worst_ratio": ratios.get(worst), "median_ratio": statistics.median(ratios.values()) if ratios else None,
            "per_tensor": per}


def figures_bench(work):
    r = read_json(os.path.join(work, "bench_webgpu.json"))
    if not r:
        return None
    return {"adapter": r.get("adapter"), "layers": r.get("layers"), "reps": r.get("reps"),
            "llava_batch1_s_per_image": r["llava"]["perImageS"], "llava_batch1_gflops": r["llava"]["gflops"],
            "full_tower_batch1_s_per_image": r["full"]["perImageS"],
            "batch": r["batch"]["size"], "llava_batch_s_per_image": r["batch"]["perImageS"],
            "llava_batch_images_per_s": r["batch"]["imagesPerS"], "llava_batch_gflops": r["batch"]["gflops"],
            "first_forward_s": r.get("firstForwardS"), "load": r.get("load"),
            "num_tensors": r.get("numTensors"), "gflop_per_image": r.get("gflopPerImage")}


def figures_torch(work, name):
    runs = json_lines(os.path.join(work, f"{name}.json"))
    if not runs:
        return None
    out = {"torch": runs[0].get("torch"), "device": runs[0].get("device"), "gpu": runs[0].get("gpu"),
           "threads": runs[0].get("threads"), "gemm": runs[0].get("gemm"), "tf32": runs[0].get("tf32"), "batches": {}}
    for r in runs:
        out["batches"][str(r["batch"])] = {
            "llava_s_per_image": r["llava"]["median_s"],
            **({"full_tower_s_per_image": r["full"]["median_s"]} if "full" in r else {}),
            **({"peak_memory_mib": r["peak_memory_mib"]} if "peak_memory_mib" in r else {}),
        }
    return out


def figures_scaling(work):
    r = read_json(os.path.join(work, "cpu_scaling.json"))
    if not r:
        return None
    rows = []
    base = None
    torch = {t["threads"]: t for t in r.get("torch", [])}
    for x in r["results"]:
        s = bench_median(x["runsS"])
        if base is None:
            base = s
        t = torch.get(x["threads"])
        rows.append({"threads": x["threads"], "gemm": x.get("gemm"), "s_per_image": s, "speedup": base / s,
                     "identical_outputs": x.get("identical"),
                     "torch_s_per_image": t["llavaS"] if t else None,
                     "ours_over_torch": s / t["llavaS"] if t else None})
    return {"machine": r.get("machine"), "layers": r.get("layersRun"), "reps": r.get("reps"), "rows": rows,
            "loads": r.get("loads"), "cross_identical": r.get("crossIdentical")}


def collect(work):
    figures = {}
    extract = {
        "setup": lambda: read_json(os.path.join(work, "setup.json")),
        "host": lambda: {**(read_json(os.path.join(work, "host.json")) or {}),
                         **({"nvidia_smi": open(os.path.join(work, "nvidia_smi.txt")).read().strip()}
                            if os.path.exists(os.path.join(work, "nvidia_smi.txt")) else {})},
        "adapter": lambda: read_json(os.path.join(work, "adapter.json")),
        "test_webgpu": lambda: figures_test_webgpu(work),
        "weights": lambda: read_json(os.path.join(work, "model.json")),
        "reference": lambda: {"torch_fp32_max_abs_err": read_json(os.path.join(work, "reference.json"))},
        "check_webgpu": lambda: figures_check(work, "webgpu"),
        "check_wasm": lambda: figures_check(work, "wasm"),
        "gpu_batches": lambda: read_json(os.path.join(work, "gpu_batches.json")),
        "bench_webgpu": lambda: figures_bench(work),
        "torch_cuda": lambda: figures_torch(work, "torch_cuda"),
        "torch_cpu": lambda: figures_torch(work, "torch_cpu"),
        "cpu_scaling": lambda: figures_scaling(work),
    }
    for name, fn in extract.items():
        try:
            figures[name] = fn()
        except Exception as e:  # a step that failed half-way leaves half a file: say so, keep the rest
            figures[name] = {"unreadable": f"{type(e).__name__}: {e}"}
    return figures


def headline(figures):
    """The figures the issue asks for, with the same-run ratios."""
    h = {}
    c = figures.get("check_webgpu") or {}
    if c.get("tensors"):
        h["webgpu_parity"] = {"ok": c["ok"], "tensors": c["tensors"], "worst_ratio": c["worst_ratio"],
                              "worst_tensor": c["worst_tensor"], "bound": c["bound"]}
    b = figures.get("bench_webgpu") or {}
    t = (figures.get("torch_cuda") or {}).get("batches", {})
    if b.get("llava_batch1_s_per_image"):
        w = {"batch1_s_per_image": b["llava_batch1_s_per_image"], "batch": b["batch"],
             "batch_s_per_image": b["llava_batch_s_per_image"]}
        if "1" in t:
            w["torch_cuda_batch1_s_per_image"] = t["1"]["llava_s_per_image"]
            w["ours_over_torch_cuda_batch1"] = b["llava_batch1_s_per_image"] / t["1"]["llava_s_per_image"]
        if str(b["batch"]) in t:
            tb = t[str(b["batch"])]["llava_s_per_image"]
            w["torch_cuda_batch_s_per_image"] = tb
            w["ours_over_torch_cuda_batch"] = b["llava_batch_s_per_image"] / tb
        h["webgpu_speed"] = w
    s = figures.get("cpu_scaling") or {}
    if s.get("rows"):
        h["cpu_scaling"] = [{k: r[k] for k in ("threads", "s_per_image", "speedup", "torch_s_per_image", "ours_over_torch")}
                            for r in s["rows"]]
    return h


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--started", type=float, required=True)
    p.add_argument("--deadline", type=float)
    p.add_argument("--dry-run", type=int, default=0)
    a = p.parse_args()
    rows = steps(a.work)
    figures = collect(a.work)
    for r in rows:
        r["figures"] = figures.get(r["name"])
    bundle = read_json(os.path.join(os.environ.get("BUNDLE", ".device"), "manifest.json")) or {}
    bundle.pop("sources", None)
    result = {
        "format": "llava-vision-device-check/1",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.started)),
        "mode": "dry-run" if a.dry_run else "gpu-host",
        "seconds": round(time.time() - a.started, 1),
        "deadline_s": a.deadline,
        "ok": all(r["status"] == "ok" for r in rows),
        "bundle": bundle,
        "headline": headline(figures),
        "steps": rows,
    }
    tmp = f"{a.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)

    print(f"| step | status | seconds | figures or why |")
    print(f"|---|---|---|---|")
    for r in rows:
        f = r["figures"] or {}
        note = r["reason"] or ""
        if r["status"] == "ok":
            if r["name"] == "adapter":
                note = f.get("adapter", "")
            elif r["name"] == "test_webgpu":
                note = f"{f.get('passed')} passed, {f.get('failed')} failed, {f.get('skipped')} skipped" + (
                    f"; left out: {', '.join(f['excluded_cases'])}" if f.get("excluded_cases") else "")
            elif r["name"].startswith("check_"):
                note = f"{f.get('tensors')} tensors within {f.get('bound')}x; worst {fmt(f.get('worst_ratio'))}x ({f.get('worst_tensor')}), median {fmt(f.get('median_ratio'))}x"
            elif r["name"] == "gpu_batches":
                note = f"largest batch {f.get('largestBatch')} ({f.get('stoppedBecause')})"
            elif r["name"] == "bench_webgpu":
                note = f"batch 1: {fmt(f.get('llava_batch1_s_per_image'), 4)} s/image; batch {f.get('batch')}: {fmt(f.get('llava_batch_s_per_image'), 4)} s/image"
            elif r["name"].startswith("torch_"):
                note = "; ".join(f"batch {k}: {fmt(v['llava_s_per_image'], 4)} s/image" for k, v in f.get("batches", {}).items())
            elif r["name"] == "cpu_scaling":
                note = "; ".join(f"{x['threads']}t {fmt(x['s_per_image'])} s (x{x['speedup']:.2f}" + (
                    f", torch {fmt(x['torch_s_per_image'])} s" if x["torch_s_per_image"] else "") + ")" for x in f.get("rows", []))
            elif r["name"] == "weights":
                note = f"{f.get('size')}: {f.get('layers')} layers of width {f.get('hiddenSize')}, {fmt(f.get('seconds'))} s"
        print(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {note} |")
    print(f"headline: {json.dumps(result['headline'])}")
    print(f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} steps ok in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
