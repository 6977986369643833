#!/usr/bin/env python3
"""Dev-only: regenerates test/fixtures/torch_bin/ (real torch.save outputs for test/torch_bin.test.ts).

The project never needs Python: the generated files are committed. Run from the repo root with a
torch that writes the zip format (>= 1.6; fixtures were made with Debian's python3-torch 1.13):
    /usr/bin/python3 tools/dev/gen_torch_bin_fixtures.py
"""
import collections
import json
import os
import struct

import numpy as np
import torch

OUT = 'test/fixtures/torch_bin'


def raw_bytes(t):
    """Row-major little-endian bytes of t, what TorchBinFile.read(name).data must return."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b''


DTYPES = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64',
          torch.int64: 'I64', torch.int32: 'I32', torch.uint8: 'U8', torch.bool: 'BOOL'}


def save(name, sd):
    path = os.path.join(OUT, name)
    torch.save(sd, path)
    expected = {k: {'dtype': DTYPES[v.dtype], 'shape': list(v.shape), 'hex': raw_bytes(v).hex()}
                for k, v in sd.items()}
    with open(path + '.expected.json', 'w') as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write('\n')


def values(n, dtype, scale=0.37):
    return ((torch.arange(n, dtype=torch.float32) - n / 3) * scale).to(dtype)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # 1. An nn.Module state_dict in F16: an OrderedDict with `_metadata` (pickled via BUILD), like
    #    torch.save(model.state_dict()).
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU(), torch.nn.Linear(3, 2)).half()
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(values(p.numel(), torch.float16, 0.1 + i).reshape(p.shape))
    sd = m.state_dict()
    assert hasattr(sd, '_metadata') and isinstance(sd, collections.OrderedDict)
    save('state_dict_f16.bin', sd)

    # 2. BF16 and friends with views: a transposed (non-contiguous) tensor, slices sharing one storage
    #    at an offset, a 0-dim scalar, an empty tensor, a Parameter (_rebuild_parameter), an I64 buffer,
    #    a strided every-other-row view and a broadcast (stride 0) view.
    base = values(24, torch.bfloat16).reshape(4, 6)
    sd2 = {
        'bf16.matrix': base,
        'bf16.transposed': base.t(),
        'bf16.rows_1_3': base[1:3],
        'bf16.every_other_col': base[:, ::2],
        'bf16.scalar': torch.tensor(1.5, dtype=torch.bfloat16),
        'bf16.empty': torch.zeros(0, 3, dtype=torch.bfloat16),
        'bf16.broadcast': torch.tensor([1.0, -2.0], dtype=torch.bfloat16).expand(3, 2),
        'f32.param': torch.nn.Parameter(values(5, torch.float32)),
        'f64.vec': values(3, torch.float64, 1e-3),
        'i64.position_ids': torch.arange(7).unsqueeze(0),
        'bool.mask': torch.tensor([True, False, True]),
    }
    save('views_bf16.bin', sd2)

    # 3. A tiny CLIP vision tower saved as HF's pytorch_model.bin (plain dict of contiguous tensors),
    #    from the F16 safetensors fixture so the test can compare against it; plus the int64
    #    `position_ids` buffer that transformers < 4.31 also saved.
    st = 'test/fixtures/cases/tiny_clip_vision_only_f16/model/model.safetensors'
    with open(st, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    np_dtypes = {'F16': np.float16, 'F32': np.float32}
    tower = {}
    for k in sorted(header):
        if k == '__metadata__':
            continue
        h = header[k]
        b, e = h['data_offsets']
        tower[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=np_dtypes[h['dtype']]).reshape(h['shape']).copy())
    npos = tower['vision_model.embeddings.position_embedding.weight'].shape[0]
    tower['vision_model.embeddings.position_ids'] = torch.arange(npos).unsqueeze(0)
    os.makedirs(os.path.join(OUT, 'tiny_clip_vision_f16'), exist_ok=True)
    torch.save(tower, os.path.join(OUT, 'tiny_clip_vision_f16', 'pytorch_model.bin'))

    print('torch', torch.__version__, '->', OUT)


if __name__ == '__main__':
    main()
