#!/usr/bin/env python3
"""DEV-ONLY: the Pillow sweep's generator (the project never needs Python at run/test time).

Builds small valid PNG, APNG, TIFF, JPEG, WebP and GIF files, mutates each many times in ways that
follow the format's structure (chunk order, CRCs, truncation, tags, palettes, bit depths,
orientation, colour spaces, markers) and at random, and records what Pillow 9.4 does with every
file: LLaVA's `numpy.array(Image.open(f).convert('RGB'))` (mode, size, sha256 of the bytes) or the
exception class and message. tools/sweep_pillow.ts then checks that decodeImage gives the same
pixels, or refuses where Pillow raises.

  /usr/bin/python3 tools/sweep_pillow.py --out /tmp/sweep.json [--seed 1] [--rounds 40] [--formats png,tiff]

`npm run sweep:pillow` runs it with many rounds and then the checker. The seeded subset that
`npm test` checks (test/fixtures/pillow_sweep/cases.json) is this generator with --seed 21
--rounds 4 (see tools/sweep_pillow.ts). Run with Debian bookworm's python3-pil (Pillow 9.4.0).
"""
import argparse
import base64
import hashlib
import io
import json
import os
import random
import struct
import sys
import tempfile
import warnings
import zlib

import numpy as np
import PIL
from PIL import Image, TiffImagePlugin

from pillow_cases import pillow_rgb

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SRC = os.path.join(ROOT, 'test', 'fixtures', 'images', 'chelsea.png')

warnings.simplefilter('ignore')


def base(w=11, h=7, at=(200, 100)):
    return Image.open(SRC).convert('RGB').crop((at[0], at[1], at[0] + w, at[1] + h))


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


# ---------------------------------------------------------------------------------------------
# PNG

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def png_chunk(cid, data, crc=None):
    c = zlib.crc32(cid + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack('>I', len(data)) + cid + data + struct.pack('>I', c)


def png_chunks(data):
    """[(cid, body, crc_ok)] of a PNG, or None when it does not parse as a chunk list."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        n = struct.unpack('>I', data[pos:pos + 4])[0]
        cid = data[pos + 4:pos + 8]
        if pos + 12 + n > len(data):
            return None
        out.append([cid, data[pos + 8:pos + 8 + n]])
        pos += 12 + n
    return out if pos == len(data) else None


def png_join(chunks):
    return PNG_MAGIC + b''.join(png_chunk(c, d) for c, d in chunks)


def png_rows(a, bits, colour):
    """Rows (bytes, no filter byte) of array a for a bit depth and colour type."""
    h = a.shape[0]
    rows = []
    for y in range(h):
        r = a[y]
        if bits < 8:
            per = 8 // bits
            flat = r.ravel()
            b = bytearray()
            for i in range(0, len(flat), per):
                v = 0
                for j in range(per):
                    v <<= bits
                    if i + j < len(flat):
                        v |= int(flat[i + j])
                b.append(v)
            rows.append(bytes(b))
        elif bits == 16:
            rows.append(r.astype('>u2').tobytes())
        else:
            rows.append(r.astype(np.uint8).tobytes())
    return rows


def filter_rows(rows, bpp, kinds):
    """Applies PNG filters (kinds cycled per row); returns the filtered stream bytes."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b''
    for y, r in enumerate(rows):
        k = kinds[y % len(kinds)]
        f = bytearray(len(r))
        for i in range(len(r)):
            a = r[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if k == 0:
                p = 0
            elif k == 1:
                p = a
            elif k == 2:
                p = b
            elif k == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else b if pb <= pc else c
            f[i] = (r[i] - p) & 255
        out += bytes([k]) + f
        prev = r
    return bytes(out)


def adam7(a):
    passes = []
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = a[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            passes.append(sub)
    return passes


def make_png(a, bits, colour, interlace=False, plte=None, extra=(), after=(), kinds=(0, 1, 2, 3, 4), idat_split=0, level=6):
    h, w = a.shape[:2]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    bpp = max(1, bits * channels // 8)
    if interlace:
        raw = b''.join(filter_rows(png_rows(p, bits, colour), bpp, kinds) for p in adam7(a))
    else:
        raw = filter_rows(png_rows(a, bits, colour), bpp, kinds)
    z = zlib.compress(raw, level)
    chunks = [(b'IHDR', struct.pack('>IIBBBBB', w, h, bits, colour, 0, 0, int(interlace)))]
    chunks += list(extra)
    if plte is not None:
        chunks.append((b'PLTE', plte))
    if idat_split:
        chunks += [(b'IDAT', z[i:i + idat_split]) for i in range(0, len(z), idat_split)]
    else:
        chunks.append((b'IDAT', z))
    chunks += list(after)
    chunks.append((b'IEND', b''))
    return png_join(chunks)


def png_seeds():
    im = base()
    a = np.asarray(im)
    grey = np.asarray(im.convert('L'))
    w, h = im.size
    pal = im.convert('P', palette=Image.ADAPTIVE, colors=16)
    idx = np.asarray(pal)
    plte = bytes(pal.getpalette()[:48])
    alpha = (np.arange(w * h).reshape(h, w) * 37 % 256).astype(np.uint8)
    g16 = (grey.astype(np.uint16) * 4 + np.arange(w)[None, :]).astype(np.uint16)
    rgb16 = (a.astype(np.uint16) * 257 + np.arange(w)[None, :, None]).astype(np.uint16)
    seeds = {
        'pil_rgb': pil_bytes(im, 'PNG'),
        'pil_rgba': pil_bytes(Image.fromarray(np.dstack([a, alpha]), 'RGBA'), 'PNG'),
        'pil_l': pil_bytes(im.convert('L'), 'PNG'),
        'pil_la': pil_bytes(im.convert('LA'), 'PNG'),
        'pil_p4': pil_bytes(pal, 'PNG', bits=4),
        'pil_p_trns': pil_bytes(pal, 'PNG', transparency=3),
        'pil_1': pil_bytes(im.convert('1'), 'PNG'),
        'pil_text': pil_bytes(im, 'PNG', pnginfo=_pnginfo()),
        'rgb_interlaced': make_png(a, 8, 2, interlace=True),
        'rgba_interlaced': make_png(np.dstack([a, alpha]), 8, 6, interlace=True),
        'grey2': make_png(grey >> 6, 2, 0),
        'grey4_interlaced': make_png(grey >> 4, 4, 0, interlace=True),
        'grey1_interlaced': make_png(grey >> 7, 1, 0, interlace=True),
        'grey16': make_png(g16, 16, 0),
        'grey16_trns': make_png(g16, 16, 0, extra=[(b'tRNS', struct.pack('>H', 300))]),
        'la16': make_png(np.dstack([g16 * 50, alpha.astype(np.uint16) * 257]), 16, 4),
        'rgb16': make_png(rgb16, 16, 2),
        'rgba16_interlaced': make_png(np.dstack([rgb16, alpha.astype(np.uint16) * 257]), 16, 6, interlace=True),
        'p1': make_png(idx % 2, 1, 3, plte=plte[:6]),
        'p2_interlaced': make_png(idx % 4, 2, 3, plte=plte[:12], interlace=True),
        'p8_short_plte': make_png(idx * 16 + 3, 8, 3, plte=plte),
        'p4_short_plte': make_png(idx, 4, 3, plte=plte[:15]),
        'p8_no_plte': make_png(idx * 9, 8, 3),
        'rgb_trns_idat_split': make_png(a, 8, 2, extra=[(b'tRNS', struct.pack('>HHH', *a[0, 0]))], idat_split=37),
        'rgb_chunks': make_png(a, 8, 2, extra=[(b'gAMA', struct.pack('>I', 45455)), (b'sRGB', b'\0'),
                                               (b'cHRM', struct.pack('>8I', *range(8))), (b'pHYs', struct.pack('>IIB', 2835, 2835, 1)),
                                               (b'iCCP', b'prof\0\0' + zlib.compress(b'x' * 300)), (b'eXIf', _exif(6))]),
        'apng': _apng(im),
        'apng_fctl_first': _apng(im, default_image=False),
    }
    return seeds


def _exif(orientation):
    ifd = struct.pack('<HHHIHH', 1, 0x0112, 3, 1, orientation, 0) + struct.pack('<I', 0)
    return b'II*\0' + struct.pack('<I', 8) + ifd


def _pnginfo():
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text('Comment', 'hello')
    info.add_text('zipped', 'z' * 200, zip=True)
    info.add_itxt('Title', 'ünïcode', lang='de', tkey='Titel', zip=True)
    return info


def _apng(im, default_image=True):
    frames = [im, im.transpose(Image.FLIP_LEFT_RIGHT)]
    if default_image:
        return pil_bytes(frames[0], 'PNG', save_all=True, append_images=frames[1:], default_image=True, duration=100)
    return pil_bytes(frames[0], 'PNG', save_all=True, append_images=frames[1:], duration=100)


def mutate_png(rng, data):
    chunks = png_chunks(data)
    if chunks is None or rng.random() < 0.08:
        return random_bytes(rng, data)
    kind = rng.choice(['drop', 'dup', 'swap', 'move', 'crc', 'body_fixcrc', 'body_badcrc', 'truncate', 'truncate_chunk',
                       'ihdr', 'ihdr', 'plte', 'plte', 'trns', 'unknown', 'text_limits', 'idat_stream', 'idat_stream',
                       'idat_split', 'apng', 'random'])
    names = [c for c, _ in chunks]
    i = rng.randrange(len(chunks))
    if kind == 'drop' and len(chunks) > 1:
        del chunks[i]
    elif kind == 'dup':
        chunks.insert(i, list(chunks[i]))
    elif kind == 'swap' and len(chunks) > 2:
        i = rng.randrange(len(chunks) - 1)
        chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
    elif kind == 'move':
        c = chunks.pop(i)
        chunks.insert(rng.randrange(len(chunks) + 1), c)
    elif kind == 'crc':
        out = PNG_MAGIC + b''.join(png_chunk(c, d, crc=(zlib.crc32(c + d) ^ (1 << rng.randrange(32))) & 0xFFFFFFFF if j == i else None)
                                   for j, (c, d) in enumerate(chunks))
        return f'png:crc:{names[i].decode("latin-1")}', out
    elif kind in ('body_fixcrc', 'body_badcrc') and chunks[i][1]:
        body = bytearray(chunks[i][1])
        for _ in range(1 + rng.randrange(3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if kind == 'body_badcrc':
            out = PNG_MAGIC + b''.join(png_chunk(c, d, crc=zlib.crc32(c + d) & 0xFFFFFFFF) if j != i else png_chunk(c, bytes(body), crc=zlib.crc32(c + d) & 0xFFFFFFFF)
                                       for j, (c, d) in enumerate(chunks))
            return f'png:body_badcrc:{names[i].decode("latin-1")}', out
        chunks[i][1] = bytes(body)
    elif kind == 'truncate':
        return 'png:truncate', data[:rng.randrange(8, len(data))]
    elif kind == 'truncate_chunk':
        out = png_join(chunks[:i + 1])
        cut = rng.choice([0, 4, 8, 12, len(chunks[i][1]) // 2])
        return f'png:truncate_chunk:{names[i].decode("latin-1")}', out[:len(out) - cut] if cut else png_join(chunks[:i + 1])
    elif kind == 'ihdr':
        j = names.index(b'IHDR') if b'IHDR' in names else 0
        h = bytearray(chunks[j][1].ljust(13, b'\0'))
        field = rng.choice(['depth', 'colour', 'interlace', 'filter', 'compression', 'width', 'height', 'short', 'second'])
        if field == 'depth':
            h[8] = rng.choice([1, 2, 4, 8, 16, 3, 0, 32])
        elif field == 'colour':
            h[9] = rng.choice([0, 2, 3, 4, 6, 1, 7])
        elif field == 'interlace':
            h[12] = rng.choice([0, 1, 2])
        elif field == 'filter':
            h[11] = 1
        elif field == 'compression':
            h[10] = 1
        elif field in ('width', 'height'):
            o = 0 if field == 'width' else 4
            v = struct.unpack('>I', h[o:o + 4])[0]
            h[o:o + 4] = struct.pack('>I', rng.choice([0, 1, v - 1, v + 1, v * 2, 0x7FFFFFFF, 0x100000000 - 1]) & 0xFFFFFFFF)
        elif field == 'short':
            chunks[j][1] = bytes(h[:rng.randrange(13)])
            return 'png:ihdr:short', png_join(chunks)
        else:
            h2 = bytearray(h)
            h2[8], h2[9] = rng.choice([(8, 0), (8, 2), (8, 3), (16, 2), (1, 0)])
            h2[12] = rng.choice([0, 1])
            chunks.insert(j + 1 + rng.randrange(len(chunks) - j), [b'IHDR', bytes(h2)])
            return 'png:ihdr:second', png_join(chunks)
        chunks[j][1] = bytes(h)
        return f'png:ihdr:{field}', png_join(chunks)
    elif kind == 'plte':
        j = names.index(b'PLTE') if b'PLTE' in names else None
        n = rng.choice([0, 1, 2, 3, 4, 6, 15, 48, 768, 769, 770, 771, 800])
        body = bytes(rng.randrange(256) for _ in range(n))
        if j is None:
            k = names.index(b'IDAT') if b'IDAT' in names else 1
            chunks.insert(k, [b'PLTE', body])
        elif rng.random() < 0.2:
            del chunks[j]
        else:
            chunks[j][1] = body
        return 'png:plte', png_join(chunks)
    elif kind == 'trns':
        k = names.index(b'IDAT') if b'IDAT' in names and rng.random() < 0.8 else len(chunks) - 1
        body = rng.choice([b'', b'\x01', b'\x00\x05', b'\x01\x2c\x00\x10\x00\x20', b'\xff\x00', b'\xff\xff\x00\xff',
                           b'\xff\x00\n', b'\x00\x00', b'\x80' * 20, b'\xff' * 300 + b'\x00'])
        chunks.insert(k, [b'tRNS', body])
        return 'png:trns', png_join(chunks)
    elif kind == 'unknown':
        cid = rng.choice([b'ABCD', b'abcd', b'zzZz', b'IDAx', b'a_9Z', b'a b!', b'\x00\x01\x02\x03', b'IHDr'])
        chunks.insert(rng.randrange(1, len(chunks) + 1), [cid, bytes(rng.randrange(256) for _ in range(rng.randrange(20)))])
        return 'png:unknown_chunk', png_join(chunks)
    elif kind == 'text_limits':
        which = rng.choice(['ztxt_big', 'itxt_big', 'iccp_big', 'ztxt_exact', 'text_memory', 'ztxt_method', 'iccp_method',
                            'itxt_bad_utf8', 'ztxt_corrupt', 'text_no_nul', 'after_idat'])
        big = zlib.compress(b'a' * (1024 * 1024 + 1), 9)
        exact = zlib.compress(b'a' * (1024 * 1024), 9)
        extra = {
            'ztxt_big': [[b'zTXt', b'k\0\0' + big]],
            'itxt_big': [[b'iTXt', b'k\0\x01\0en\0\0' + big]],
            'iccp_big': [[b'iCCP', b'p\0\0' + big]],
            'ztxt_exact': [[b'zTXt', b'k\0\0' + exact]],
            'text_memory': [[b'zTXt', b'k%d\0\0' % n + exact] for n in range(65)],
            'ztxt_method': [[b'zTXt', b'k\0\x01' + exact]],
            'iccp_method': [[b'iCCP', b'p\0\x05' + exact]],
            'itxt_bad_utf8': [[b'iTXt', b'k\0\0\0en\0\0\xff\xfe']],
            'ztxt_corrupt': [[b'zTXt', b'k\0\0' + big[:10] + b'\xff' * 10]],
            'text_no_nul': [[b'tEXt', b'just a key']],
            'after_idat': [[b'zTXt', b'k\0\0' + big]],
        }[which]
        k = names.index(b'IDAT') if b'IDAT' in names else 1
        if which == 'after_idat':
            k = len(chunks) - 1
        chunks[k:k] = extra
        return f'png:text:{which}', png_join(chunks)
    elif kind == 'idat_stream':
        js = [j for j, n in enumerate(names) if n == b'IDAT']
        if not js:
            return random_bytes(rng, data)
        z = b''.join(chunks[j][1] for j in js)
        try:
            raw = zlib.decompress(z)
        except zlib.error:
            return random_bytes(rng, data)
        how = rng.choice(['cut_stream', 'bad_adler', 'garbage_after', 'fewer_rows', 'bad_filter', 'more_data', 'stored', 'no_end',
                          'flip_in_stream', 'empty_idat', 'fewer_rows_split'])
        if how == 'cut_stream':
            z2 = z[:rng.randrange(2, len(z))]
        elif how == 'bad_adler':
            z2 = z[:-4] + bytes(b ^ 0x55 for b in z[-4:])
        elif how == 'garbage_after':
            z2 = z + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
        elif how in ('fewer_rows', 'fewer_rows_split'):
            z2 = zlib.compress(raw[:rng.randrange(len(raw))], 6)
        elif how == 'bad_filter':
            r = bytearray(raw)
            r[0 if rng.random() < 0.5 else rng.randrange(len(r))] = rng.choice([5, 9, 255])
            z2 = zlib.compress(bytes(r))
        elif how == 'more_data':
            z2 = zlib.compress(raw + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif how == 'stored':
            z2 = zlib.compress(raw, 0)
        elif how == 'no_end':
            co = zlib.compressobj()
            z2 = co.compress(raw) + co.flush(zlib.Z_SYNC_FLUSH)
        elif how == 'flip_in_stream':
            b = bytearray(z)
            b[rng.randrange(2, len(b))] ^= 1 << rng.randrange(8)
            z2 = bytes(b)
        else:
            z2 = z
        if how == 'empty_idat':
            chunks.insert(js[0], [b'IDAT', b''])
            return 'png:idat:empty_idat', png_join(chunks)
        split = 7 if how == 'fewer_rows_split' else 0
        first = js[0]
        chunks = [c for j, c in enumerate(chunks) if j not in js]
        parts = [z2[i:i + split] for i in range(0, len(z2), split)] if split else [z2]
        chunks[first:first] = [[b'IDAT', p] for p in parts]
        return f'png:idat:{how}', png_join(chunks)
    elif kind == 'idat_split':
        js = [j for j, n in enumerate(names) if n == b'IDAT']
        if not js:
            return random_bytes(rng, data)
        z = b''.join(chunks[j][1] for j in js)
        n = rng.choice([1, 2, 5, 16, 100])
        first = js[0]
        chunks = [c for j, c in enumerate(chunks) if j not in js]
        chunks[first:first] = [[rng.choice([b'IDAT', b'IDAT', b'IDAT', b'DDAT', b'fdAT']) if i else b'IDAT', z[i:i + n]] for i in range(0, len(z), n)]
        return 'png:idat_split', png_join(chunks)
    elif kind == 'apng':
        return _mutate_apng(rng, chunks, names)
    else:
        return random_bytes(rng, data)
    return f'png:{kind}', png_join(chunks)


def _mutate_apng(rng, chunks, names):
    ihdr = chunks[names.index(b'IHDR')][1] if b'IHDR' in names else struct.pack('>IIBBBBB', 11, 7, 8, 2, 0, 0, 0)
    w, h = struct.unpack('>II', ihdr[:8])
    how = rng.choice(['small_fctl', 'offset_fctl', 'zero_fctl', 'seq', 'actl_zero', 'two_actl', 'fdat_first', 'fctl_no_actl', 'dispose'])
    k = names.index(b'IDAT') if b'IDAT' in names else len(chunks) - 1
    fw, fh, fx, fy = {
        'small_fctl': (max(1, w // 2), max(1, h // 2), 0, 0),
        'offset_fctl': (max(1, w // 2), max(1, h // 2), w // 3, h // 3),
        'zero_fctl': (0, h, 0, 0),
    }.get(how, (w, h, 0, 0))
    seq = 1 if how == 'seq' else 0
    fctl = [b'fcTL', struct.pack('>IIIIIHHBB', seq, fw, fh, fx, fy, 1, 10, rng.choice([0, 1, 2]), rng.choice([0, 1]))]
    actl = [b'acTL', struct.pack('>II', 0 if how == 'actl_zero' else 2, 0)]
    new = [c for c in chunks if c[0] not in (b'acTL', b'fcTL')]
    names2 = [c for c, _ in new]
    k = names2.index(b'IDAT') if b'IDAT' in names2 else len(new) - 1
    ins = [fctl] if how == 'fctl_no_actl' else [actl, actl, fctl] if how == 'two_actl' else [actl, fctl]
    if how == 'fdat_first':
        new[k] = [b'fdAT', struct.pack('>I', 1) + new[k][1]]
    new[k:k] = ins
    return f'png:apng:{how}', png_join(new)


# ---------------------------------------------------------------------------------------------
# Shared

def random_bytes(rng, data):
    b = bytearray(data)
    for _ in range(1 + rng.randrange(4)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    if rng.random() < 0.2:
        b = b[:rng.randrange(1, len(b))]
    return 'random', bytes(b)


FORMATS = {
    'png': (png_seeds, mutate_png),
}


def pillow_result(data, fmt):
    """Pillow's result from memory and, where it differs (TIFF memory-maps files opened by name), from a path."""
    r = pillow_rgb(io.BytesIO(data), '\0')
    entry = {'error': r['error']} if 'error' in r else {'mode': r['mode'], 'size_wh': r['size_wh'], 'rgb_u8_sha256': r['rgb_u8_sha256']}
    try:
        with Image.open(io.BytesIO(data)) as im:
            entry['pillow_format'] = im.format
    except Exception:  # noqa: BLE001
        pass
    if fmt == 'tiff':
        with tempfile.NamedTemporaryFile(suffix='.tif') as f:
            f.write(data)
            f.flush()
            p = pillow_rgb(f.name, os.path.dirname(f.name))
        if ('error' in p) != ('error' in r) or p.get('rgb_u8_sha256') != r.get('rgb_u8_sha256'):
            entry['from_path'] = p if 'error' not in p else {'error': p['error'].replace(f.name, '<file>')}
    return entry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--rounds', type=int, default=40, help='mutants per seed file')
    ap.add_argument('--formats', default=','.join(FORMATS))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cases, seen = [], set()
    for fmt in args.formats.split(','):
        make_seeds, mutate = FORMATS[fmt]
        for seed_name, data in make_seeds().items():
            todo = [('seed', data)] + [mutate(rng, data) for _ in range(args.rounds)]
            for k, (kind, b) in enumerate(todo):
                digest = hashlib.sha256(b).hexdigest()
                if digest in seen or not b:
                    continue
                seen.add(digest)
                case = {'name': f'{fmt}/{seed_name}/{k}', 'format': fmt, 'mutation': kind, 'bytes_b64': base64.b64encode(b).decode()}
                case.update(pillow_result(b, fmt))
                cases.append(case)
    out = {
        '_note': f'generated by tools/sweep_pillow.py --seed {args.seed} --rounds {args.rounds} --formats {args.formats} with Pillow '
        + PIL.__version__ + '; rgb_u8_sha256 = sha256(numpy.array(Image.open(BytesIO(bytes)).convert("RGB")).tobytes()); '
        + 'error = the exception Pillow raises instead; from_path = the result of Image.open(path) where it differs',
        'cases': cases,
    }
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=0, sort_keys=True)
        f.write('\n')
    print(f'{len(cases)} files written to {args.out}', file=sys.stderr)


if __name__ == '__main__':
    main()
