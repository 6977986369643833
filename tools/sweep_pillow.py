#!/usr/bin/env python3
"""DEV-ONLY: the Pillow sweep's generator (the project never needs Python at run/test time).

Builds small valid PNG, APNG, TIFF, JPEG, WebP and GIF files, mutates each many times in ways that
follow the format's structure (chunk order, CRCs, truncation, tags, palettes, bit depths,
orientation, colour spaces, markers) and at random, and records what Pillow 9.4 does with every
file: LLaVA's `numpy.array(Image.open(f).convert('RGB'))` (mode, size, sha256 of the bytes) or the
exception class and message. tools/sweep_pillow.ts then checks that decodeImage gives the same
pixels, or refuses where Pillow raises.

  /usr/bin/python3 tools/sweep_pillow.py --out /tmp/sweep.json [--seed 1] [--rounds 40] [--formats png,tiff]

`npm run sweep:pillow` runs it (seed 1, 60 mutants per seed file; SWEEP_SEED, SWEEP_ROUNDS,
SWEEP_OUT change that) and then the checker. The seeded subset that `npm test` checks
(test/fixtures/pillow_sweep/cases.json, test/image_sweep.test.ts) is:
  /usr/bin/python3 tools/sweep_pillow.py --out test/fixtures/pillow_sweep/cases.json --seed 21 --rounds 3
Run with Debian bookworm's python3-pil (Pillow 9.4.0); libtiff-tools' tiffcp adds tiled and planar
TIFF seeds when installed.
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

from pillow_cases import pack_bits, pillow_rgb

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SRC = os.path.join(ROOT, 'test', 'fixtures', 'images', 'chelsea.png')

warnings.simplefilter('ignore')


def base(w=11, h=7, at=(200, 100)):
    im = Image.open(SRC).convert('RGB').crop((at[0], at[1], at[0] + w, at[1] + h))
    im.info = {}  # no ICC profile: small files
    return im


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


def idat_stream(chunks, names):
    """The positions of a PNG's IDAT chunks and the zlib stream they hold together."""
    js = [j for j, n in enumerate(names) if n == b'IDAT']
    return js, b''.join(chunks[j][1] for j in js)


def with_idat(chunks, js, new):
    """`chunks` with the IDAT chunks at positions `js` replaced by `new`, where the first one was."""
    out = [c for j, c in enumerate(chunks) if j not in js]
    out[js[0]:js[0]] = new
    return out


def png_rows(a, bits, colour):
    """Rows (bytes, no filter byte) of array a for a bit depth and colour type."""
    h = a.shape[0]
    rows = []
    for y in range(h):
        r = a[y]
        if bits < 8:
            rows.append(pack_bits(r.ravel(), bits))
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
        js, z = idat_stream(chunks, names)
        if not js:
            return random_bytes(rng, data)
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
        parts = [z2[i:i + split] for i in range(0, len(z2), split)] if split else [z2]
        return f'png:idat:{how}', png_join(with_idat(chunks, js, [[b'IDAT', p] for p in parts]))
    elif kind == 'idat_split':
        js, z = idat_stream(chunks, names)
        if not js:
            return random_bytes(rng, data)
        n = rng.choice([1, 2, 5, 16, 100])
        chunks = with_idat(chunks, js, [[rng.choice([b'IDAT', b'IDAT', b'IDAT', b'DDAT', b'fdAT']) if i else b'IDAT', z[i:i + n]] for i in range(0, len(z), n)])
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
# TIFF

TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def tiff_ifd(data):
    """(endian, bigtiff, [entries], next offset) of the first IFD; entries are [tag, type, count, raw value bytes]."""
    e = '<' if data[:2] == b'II' else '>'
    big = data[2:4] in (b'\x2b\x00', b'\x00\x2b')
    off = struct.unpack(e + ('Q' if big else 'I'), data[8:16] if big else data[4:8])[0]
    n = struct.unpack(e + ('Q' if big else 'H'), data[off:off + (8 if big else 2)])[0]
    pos = off + (8 if big else 2)
    entries = []
    for _ in range(n):
        if big:
            tag, typ, count = struct.unpack(e + 'HHQ', data[pos:pos + 12])
            inline, width = data[pos + 12:pos + 20], 8
            pos += 20
        else:
            tag, typ, count = struct.unpack(e + 'HHI', data[pos:pos + 8])
            inline, width = data[pos + 8:pos + 12], 4
            pos += 12
        size = TIFF_TYPES.get(typ, 1) * count
        if size > width:
            at = struct.unpack(e + ('Q' if big else 'I'), inline)[0]
            value = data[at:at + size]
        else:
            value = inline[:size]
        entries.append([tag, typ, count, value])
    nxt = struct.unpack(e + ('Q' if big else 'I'), data[pos:pos + (8 if big else 4)])[0]
    return e, big, entries, nxt


def tiff_with_ifd(data, e, big, entries, nxt=None):
    """The file with a new first IFD (and its out-of-line values) appended and the header pointing at it."""
    out = bytearray(data)
    if len(out) % 2:
        out += b'\0'
    width = 8 if big else 4
    blobs = bytearray()
    base = len(out)
    ifd_size = (8 if big else 2) + len(entries) * (20 if big else 12) + width
    body = bytearray(struct.pack(e + ('Q' if big else 'H'), len(entries)))
    for tag, typ, count, value in entries:
        body += struct.pack(e + ('HHQ' if big else 'HHI'), tag, typ, count)
        if len(value) > width:
            at = base + ifd_size + len(blobs)
            blobs += value + (b'\0' if len(value) % 2 else b'')
            body += struct.pack(e + ('Q' if big else 'I'), at)
        else:
            body += value.ljust(width, b'\0')
    if nxt is None:
        nxt = tiff_ifd(data)[3]
    body += struct.pack(e + ('Q' if big else 'I'), nxt)
    out += body + blobs
    if big:
        out[8:16] = struct.pack(e + 'Q', base)
    else:
        out[4:8] = struct.pack(e + 'I', base)
    return bytes(out)


def tiff_value(e, typ, values):
    fmt = {1: 'B', 3: 'H', 4: 'I', 6: 'b', 8: 'h', 9: 'i', 11: 'f', 12: 'd', 16: 'Q', 13: 'I'}[typ]
    if typ not in (11, 12):  # wrap into the type's range
        bits = 8 * struct.calcsize(fmt)
        values = [int(v) % (1 << bits) for v in values]
        if fmt in 'bhi':
            values = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in values]
    return struct.pack(e + fmt * len(values), *values)


def tiff_num(e, entry):
    tag, typ, count, value = entry
    fmt = {1: 'B', 3: 'H', 4: 'I', 6: 'b', 8: 'h', 9: 'i', 11: 'f', 12: 'd', 16: 'Q', 13: 'I'}.get(typ)
    if not fmt or not count:
        return []
    return list(struct.unpack(e + fmt * count, value[:struct.calcsize(fmt) * count]))


def tiffcp(data, *args):
    """libtiff's tiffcp over the file (tiles, planes, predictors Pillow cannot write); None without libtiff-tools."""
    import shutil
    import subprocess
    if not shutil.which('tiffcp'):
        return None
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, 'in.tif'), os.path.join(d, 'out.tif')
        open(src, 'wb').write(data)
        subprocess.run(['tiffcp', *args, src, dst], check=True, capture_output=True)
        return open(dst, 'rb').read()


def raw_tiff(a, photometric, bps, e='<', rows_per_strip=None, extra=(), planar=1, fill_order=None, orientation=None,
             sample_format=None, colormap=None, compression=1, bigtiff=False):
    """An uncompressed TIFF written here (any sample layout): a is H x W x spp of ints packed at bps bits."""
    h, w = a.shape[:2]
    spp = 1 if a.ndim == 2 else a.shape[2]
    planes = [a] if planar == 1 or spp == 1 else [a[:, :, k] for k in range(spp)]
    rps = rows_per_strip or h
    strips = []
    for plane in planes:
        p_spp = 1 if plane.ndim == 2 else plane.shape[2]
        for y0 in range(0, h, rps):
            rows = plane[y0:y0 + rps]
            b = bytearray()
            for row in rows:
                flat = row.reshape(-1)
                if bps >= 8:
                    b += flat.astype(e + {8: 'u1', 16: 'u2', 32: 'u4'}[bps] if sample_format != 3 else e + 'f4').tobytes()
                else:
                    b += pack_bits(flat, bps)
            strips.append(bytes(b))
    header = (b'II' if e == '<' else b'MM') + (struct.pack(e + 'HHHQ', 43, 8, 0, 0) if bigtiff else struct.pack(e + 'HI', 42, 0))
    data = bytearray(header)
    offsets = []
    for s_ in strips:
        offsets.append(len(data))
        data += s_
    entries = [[256, 4, 1, struct.pack(e + 'I', w)], [257, 4, 1, struct.pack(e + 'I', h)],
               [258, 3, spp, tiff_value(e, 3, [bps] * spp)], [259, 3, 1, struct.pack(e + 'H', compression)],
               [262, 3, 1, struct.pack(e + 'H', photometric)],
               [273, 4, len(offsets), tiff_value(e, 4, offsets)], [277, 3, 1, struct.pack(e + 'H', spp)],
               [278, 4, 1, struct.pack(e + 'I', rps)], [279, 4, len(strips), tiff_value(e, 4, [len(s_) for s_ in strips])],
               [284, 3, 1, struct.pack(e + 'H', planar)]]
    if fill_order:
        entries.append([266, 3, 1, struct.pack(e + 'H', fill_order)])
    if orientation:
        entries.append([274, 3, 1, struct.pack(e + 'H', orientation)])
    if extra:
        entries.append([338, 3, len(extra), tiff_value(e, 3, list(extra))])
    if sample_format:
        entries.append([339, 3, spp, tiff_value(e, 3, [sample_format] * spp)])
    if colormap is not None:
        entries.append([320, 3, len(colormap), tiff_value(e, 3, list(colormap))])
    entries.sort(key=lambda x: x[0])
    return tiff_with_ifd(bytes(data), e, bigtiff, entries, nxt=0)


def tiff_seeds():
    im = base()
    a = np.asarray(im)
    w, h = im.size
    big = base(19, 13, (180, 90))
    ab = np.asarray(big)
    grey = np.asarray(im.convert('L'))
    pal = im.convert('P', palette=Image.ADAPTIVE, colors=16)
    alpha = (np.arange(w * h).reshape(h, w) * 37 % 256).astype(np.uint8)
    seeds = {
        'pil_rgb': pil_bytes(im, 'TIFF'),
        'pil_rgb_lzw': pil_bytes(im, 'TIFF', compression='tiff_lzw'),
        'pil_rgb_deflate': pil_bytes(im, 'TIFF', compression='tiff_adobe_deflate'),
        'pil_rgb_packbits': pil_bytes(im, 'TIFF', compression='packbits'),
        'pil_rgb_jpeg': pil_bytes(big, 'TIFF', compression='jpeg'),
        'pil_l': pil_bytes(im.convert('L'), 'TIFF'),
        'pil_l_lzw': pil_bytes(im.convert('L'), 'TIFF', compression='tiff_lzw'),
        'pil_1': pil_bytes(im.convert('1'), 'TIFF'),
        'pil_1_g4': pil_bytes(big.convert('1'), 'TIFF', compression='group4'),
        'pil_p': pil_bytes(pal, 'TIFF'),
        'pil_p_lzw': pil_bytes(pal, 'TIFF', compression='tiff_lzw'),
        'pil_la': pil_bytes(im.convert('LA'), 'TIFF'),
        'pil_rgba': pil_bytes(Image.fromarray(np.dstack([a, alpha]), 'RGBA'), 'TIFF'),
        'pil_rgba_deflate': pil_bytes(Image.fromarray(np.dstack([a, alpha]), 'RGBA'), 'TIFF', compression='tiff_adobe_deflate'),
        'pil_cmyk': pil_bytes(im.convert('CMYK'), 'TIFF'),
        'pil_cmyk_lzw': pil_bytes(im.convert('CMYK'), 'TIFF', compression='tiff_lzw'),
        'pil_i16': pil_bytes(Image.frombytes('I;16', (w, h), (grey.astype('<u2') * 3).tobytes()), 'TIFF'),
        'pil_i32': pil_bytes(Image.fromarray(grey.astype(np.int32) * 5 - 300, 'I'), 'TIFF'),
        'pil_f': pil_bytes(Image.fromarray(grey.astype(np.float32) * 1.7 - 20, 'F'), 'TIFF'),
        'pil_lab': pil_bytes(im.convert('LAB'), 'TIFF'),
        'pil_lab_lzw': pil_bytes(im.convert('LAB'), 'TIFF', compression='tiff_lzw'),
        'pil_ycbcr': pil_bytes(im.convert('YCbCr'), 'TIFF'),
        'pil_two_pages': pil_bytes(im, 'TIFF', save_all=True, append_images=[im.transpose(Image.FLIP_LEFT_RIGHT)]),
        'raw_rgb_strips_be': raw_tiff(a, 2, 8, e='>', rows_per_strip=2),
        'raw_rgb_planar': raw_tiff(a, 2, 8, planar=2, rows_per_strip=3),
        'raw_grey4_fill2': raw_tiff(grey >> 4, 1, 4, fill_order=2),
        'raw_grey2_white': raw_tiff(grey >> 6, 0, 2),
        'raw_rgb16_be': raw_tiff(a.astype(np.uint16) * 257, 2, 16, e='>'),
        'raw_rgba_assoc': raw_tiff(np.dstack([a * (alpha[:, :, None] / 255.0), alpha]).astype(np.uint8), 2, 8, extra=(1,)),
        'raw_rgbx': raw_tiff(np.dstack([a, alpha]), 2, 8, extra=(0,)),
        'raw_p4': raw_tiff(np.asarray(pal) % 16, 3, 4, colormap=[(i * 4111) % 65536 for i in range(48)]),
        'raw_orient6': raw_tiff(a, 2, 8, orientation=6, rows_per_strip=4),
        'raw_orient5_l': raw_tiff(grey, 1, 8, orientation=5),
        'raw_bigtiff': raw_tiff(a, 2, 8, bigtiff=True),
        'raw_lab': raw_tiff(np.asarray(im.convert('LAB')).astype(np.uint8) ^ np.array([0, 128, 128], np.uint8), 8, 8),
        'raw_ycbcr': raw_tiff(np.asarray(im.convert('YCbCr')), 6, 8),
    }
    for name, args in [('lzw_pred_tiles', ('-c', 'lzw:2', '-t', '-w', '16', '-l', '16')), ('deflate_planar', ('-c', 'zip', '-p', 'separate')),
                       ('jpeg_tiles', ('-c', 'jpeg', '-t', '-w', '16', '-l', '16')), ('raw_tiles', ('-c', 'none', '-t', '-w', '16', '-l', '16')),
                       ('packbits_strips', ('-c', 'packbits', '-r', '3')), ('lzw_orient', ('-c', 'lzw'))]:
        out = tiffcp(pil_bytes(big, 'TIFF'), *args)
        if out is not None:
            seeds['tiffcp_' + name] = out
    assoc = tiffcp(seeds['raw_rgba_assoc'], '-c', 'lzw')
    if assoc is not None:
        seeds['tiffcp_lzw_rgba_assoc'] = assoc
    if 'tiffcp_lzw_orient' in seeds:
        e, bt, entries, nxt = tiff_ifd(seeds['tiffcp_lzw_orient'])
        entries = [x for x in entries if x[0] != 274] + [[274, 3, 1, struct.pack(e + 'H', 7)]]
        seeds['tiffcp_lzw_orient'] = tiff_with_ifd(seeds['tiffcp_lzw_orient'], e, bt, sorted(entries, key=lambda x: x[0]))
    return seeds


TIFF_TAG_CHOICES = {
    256: [0, 1, 5, 11, 12, 19, 70000], 257: [0, 1, 3, 7, 8, 13, 70000], 258: [1, 2, 4, 8, 12, 16, 32, 3],
    259: [1, 2, 3, 4, 5, 7, 8, 32773, 32946, 6, 9, 34712], 262: [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32844],
    266: [1, 2, 3], 274: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 277: [1, 2, 3, 4, 5, 6, 7], 278: [0, 1, 2, 3, 100, 0xFFFFFFFF],
    284: [1, 2, 3], 317: [1, 2, 3], 338: [0, 1, 2], 339: [1, 2, 3, 4],
}


def mutate_tiff(rng, data):
    try:
        e, big, entries, nxt = tiff_ifd(data)
    except Exception:  # noqa: BLE001
        return random_bytes(rng, data)
    if not entries or rng.random() < 0.06:
        return random_bytes(rng, data)
    kind = rng.choice(['orientation', 'orientation', 'orientation', 'dup', 'dup', 'dup', 'drop', 'value', 'value', 'value', 'type',
                       'count', 'truncate', 'truncate_data', 'strip_offset', 'photometric', 'order', 'next_ifd', 'random'])
    tags = [t for t, _, _, _ in entries]
    i = rng.randrange(len(entries))
    if kind == 'orientation':
        v = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 8, 6, 0, 9, 65535])
        entries = [x for x in entries if x[0] != 274] + [[274, rng.choice([3, 3, 3, 4, 1]), 1, tiff_value(e, 3, [v]) if True else b'']]
        if entries[-1][1] != 3:
            entries[-1][3] = tiff_value(e, entries[-1][1], [v % 256 if entries[-1][1] == 1 else v])
        if rng.random() < 0.8:
            entries.sort(key=lambda x: x[0])
        return f'tiff:orientation:{v}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'dup':
        t, typ, count, value = entries[i]
        nums = tiff_num(e, entries[i])
        choices = TIFF_TAG_CHOICES.get(t)
        if t in (273, 324):  # strip/tile offsets: point elsewhere in the file
            new = [max(0, min(len(data) - 1, v + rng.choice([-64, -3, 1, 7, 64, 200]))) for v in nums]
        elif choices:
            new = [rng.choice(choices)] * max(1, count)
        else:
            new = [v ^ rng.randrange(1, 8) for v in nums] if nums else None
        dup = [t, typ, count, tiff_value(e, typ, new) if new is not None and typ in (1, 3, 4, 6, 8, 9, 16) else value]
        where = rng.choice(['after', 'end', 'before'])
        entries.insert(i + 1 if where == 'after' else len(entries) if where == 'end' else i, dup)
        return f'tiff:dup:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'drop':
        t = entries.pop(i)[0]
        return f'tiff:drop:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind in ('value', 'photometric'):
        if kind == 'photometric':
            i = tags.index(262) if 262 in tags else i
        t, typ, count, value = entries[i]
        choices = TIFF_TAG_CHOICES.get(t)
        if not choices or typ not in (1, 3, 4, 6, 8, 9, 16):
            return random_bytes(rng, data)
        v = rng.choice(choices)
        entries[i] = [t, typ, count, tiff_value(e, typ, [v % (256 if typ == 1 else 65536 if typ == 3 else 1 << 32)] * count)]
        return f'tiff:value:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'type':
        t, typ, count, value = entries[i]
        nums = tiff_num(e, entries[i])
        new_typ = rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 16, 14, 0])
        if new_typ in (1, 3, 4, 8, 9, 16) and nums:
            val = tiff_value(e, new_typ, [int(v) % (1 << (8 * TIFF_TYPES[new_typ] - (1 if new_typ in (8, 9) else 0))) for v in nums])
        elif new_typ in (11, 12) and nums:
            val = struct.pack(e + ('f' if new_typ == 11 else 'd') * len(nums), *[float(v) for v in nums])
        elif new_typ == 5 and nums:
            val = struct.pack(e + 'II' * len(nums), *[x for v in nums for x in (int(v), 1)])
        else:
            val = value
        entries[i] = [t, new_typ, count, val]
        return f'tiff:type:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'count':
        t, typ, count, value = entries[i]
        nc = rng.choice([0, 1, 2, 3, count + 1, max(0, count - 1)])
        unit = TIFF_TYPES.get(typ, 1)
        entries[i] = [t, typ, nc, (value * (nc // max(1, count) + 1))[:unit * nc]]
        return f'tiff:count:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'truncate':
        return 'tiff:truncate', data[:rng.randrange(8, len(data))]
    if kind == 'truncate_data':
        offs = [tiff_num(e, x) for x in entries if x[0] in (273, 324)]
        if not offs or not offs[0]:
            return random_bytes(rng, data)
        o = rng.choice(offs[0])
        b = bytearray(data)
        for k in range(rng.randrange(1, 6)):
            if o + k < len(b):
                b[o + k] = rng.randrange(256)
        return 'tiff:strip_bytes', bytes(b)
    if kind == 'strip_offset':
        j = next((k for k, x in enumerate(entries) if x[0] in (273, 279, 324, 325)), None)
        if j is None:
            return random_bytes(rng, data)
        t, typ, count, value = entries[j]
        nums = tiff_num(e, entries[j])
        nums = [max(0, v + rng.choice([-5, -1, 1, 10, 1000, -v])) for v in nums]
        entries[j] = [t, typ, count, tiff_value(e, typ, nums) if typ in (3, 4, 16) else value]
        return f'tiff:strips:{t}', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'order':
        rng.shuffle(entries)
        return 'tiff:unsorted', tiff_with_ifd(data, e, big, entries, nxt)
    if kind == 'next_ifd':
        return 'tiff:next_ifd', tiff_with_ifd(data, e, big, entries, rng.choice([0, 1, 8, len(data) + 100, 4]))
    return random_bytes(rng, data)



# ---------------------------------------------------------------------------------------------
# GIF

def gif_seeds():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gen_pillow_gif_cases import gif
    im = base()
    w, h = im.size
    pal = [(10 * i % 256, 37 * i % 256, 91 * i % 256) for i in range(16)]
    idx = (np.arange(w * h).reshape(h, w) * 3 % 16).astype(np.uint8)
    frame = {'rect': (0, 0, w, h), 'idx': idx}
    full = (np.arange(w * h).reshape(h, w) % 7).astype(np.uint8)
    return {
        'pil_p': pil_bytes(im.convert('P', palette=Image.ADAPTIVE, colors=16), 'GIF'),
        'pil_l': pil_bytes(im.convert('L'), 'GIF'),
        'pil_anim': pil_bytes(im.convert('P', palette=Image.ADAPTIVE, colors=16), 'GIF', save_all=True,
                              append_images=[im.transpose(Image.FLIP_LEFT_RIGHT)], duration=100, loop=0),
        'plain': gif((w, h), [frame], pal),
        'trans_sub': gif((w + 4, h + 2), [dict(frame, rect=(2, 1, w, h), trans=3)], pal, bg=5),
        'interlaced_local': gif((w, h), [dict(frame, interlace=True, lpal=pal[::-1])]),
        'zero_width_frame': gif((w, h), [{'rect': (0, 0, 0, 0), 'idx': np.zeros((0, 0), np.uint8), 'data': _gif_data(full.ravel(), 8)}], pal),
        'zero_width_frame_y': gif((w, h), [{'rect': (0, 3, 0, 2), 'idx': np.zeros((0, 0), np.uint8), 'data': _gif_data(full.ravel(), 8)}], pal),
    }


def _gif_data(indices, min_code):
    from gen_pillow_gif_cases import lzw
    return lzw(indices, min_code)


def gif_descriptor(data):
    """Offset of the first image descriptor (0x2c) of a GIF, or None."""
    pos = 13
    if len(data) < 13:
        return None
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    while pos < len(data):
        t = data[pos]
        if t == 0x2c:
            return pos
        if t == 0x21 and pos + 2 < len(data):
            pos += 2
            while pos < len(data) and data[pos]:
                pos += data[pos] + 1
            pos += 1
        else:
            return None
    return None


def mutate_gif(rng, data):
    d = gif_descriptor(data)
    kind = rng.choice(['rect', 'rect', 'rect', 'flags', 'codesize', 'truncate', 'screen', 'random', 'random'])
    b = bytearray(data)
    if d is None or kind == 'random':
        return random_bytes(rng, data)
    if kind == 'rect':
        field = rng.randrange(4)
        v = rng.choice([0, 0, 1, 3, 7, 11, 20, 65535])
        b[d + 1 + 2 * field:d + 3 + 2 * field] = struct.pack('<H', v)
        return f'gif:rect:{"xywh"[field]}={v}', bytes(b)
    if kind == 'flags':
        b[d + 9] ^= rng.choice([0x80, 0x40, 0x07, 0x01])
        return 'gif:frame_flags', bytes(b)
    if kind == 'codesize':
        at = d + 10 + ((3 << ((b[d + 9] & 7) + 1)) if b[d + 9] & 0x80 else 0)
        if at < len(b):
            b[at] = rng.choice([0, 1, 2, 7, 9, 12, 13])
        return 'gif:lzw_code_size', bytes(b)
    if kind == 'screen':
        b[6 + 2 * rng.randrange(2):8 + 2 * rng.randrange(1)] = struct.pack('<H', rng.choice([0, 1, 5, 30]))
        return 'gif:screen', bytes(b)
    return 'gif:truncate', data[:rng.randrange(6, len(data))]



# ---------------------------------------------------------------------------------------------
# JPEG

def jpeg_seeds():
    im = base(23, 17)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        'baseline': pil_bytes(im, 'JPEG', quality=90),
        'progressive': pil_bytes(im, 'JPEG', quality=85, progressive=True),
        'grey': pil_bytes(im.convert('L'), 'JPEG', quality=90),
        'cmyk': pil_bytes(im.convert('CMYK'), 'JPEG', quality=90),
        'ss444': pil_bytes(im, 'JPEG', quality=95, subsampling=0),
        'restart': pil_bytes(base(40, 24), 'JPEG', quality=80, restart_marker_blocks=1),
        'exif_icc': pil_bytes(im, 'JPEG', quality=80, exif=exif.tobytes(), icc_profile=b'\0' * 200),
        'optimized': pil_bytes(im, 'JPEG', quality=75, optimize=True),
    }


def jpeg_segments(data):
    """[(marker, segment bytes)] up to and including SOS's header, then ('scan', rest)."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        m = data[pos + 1]
        n = struct.unpack('>H', data[pos + 2:pos + 4])[0]
        out.append((m, data[pos:pos + 2 + n]))
        pos += 2 + n
        if m == 0xDA:
            out.append(('scan', data[pos:]))
            return out
    return None


def mutate_jpeg(rng, data):
    segs = jpeg_segments(data)
    kind = rng.choice(['junk', 'junk', 'marker', 'marker', 'no_eoi', 'truncate', 'truncate_scan', 'sof', 'sof', 'dup_sof',
                       'segment_length', 'scan_bytes', 'eoi_early', 'random'])
    if segs is None or kind == 'random':
        return random_bytes(rng, data)
    heads = segs[:-1]
    scan = segs[-1][1]
    join = lambda hs, sc: b'\xff\xd8' + b''.join(x for _, x in hs) + sc
    i = rng.randrange(len(heads))
    if kind == 'junk':
        junk = rng.choice([b'\x00', b'\x00\x00\x00', b'\xff', b'\xff\xff\xff', b'\x12\x34', b'\xff\x00', b'\xff\x00\xff\x00', b'abc'])
        heads.insert(i, (0, junk))
        return f'jpeg:junk:{junk.hex()}', join(heads, scan)
    if kind == 'marker':
        m = rng.choice([0x01, 0x02, 0x4f, 0xbf, 0xc8, 0xf0, 0xf7, 0xfd, 0xdc, 0xdf, 0xde, 0xd0, 0xcc, 0xe9, 0xfe])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 6)))
        seg = b'\xff' + bytes([m]) + (struct.pack('>H', len(body) + 2) + body if m not in (0x01, 0xd0) else b'')
        heads.insert(i, (m, seg))
        return f'jpeg:marker:{m:02x}', join(heads, scan)
    if kind == 'no_eoi':
        return 'jpeg:no_eoi', join(heads, scan[:-2] if scan.endswith(b'\xff\xd9') else scan)
    if kind == 'truncate':
        return 'jpeg:truncate', data[:rng.randrange(2, len(data))]
    if kind == 'truncate_scan':
        cut = rng.choice([1, 2, 3, 4, 8, 20, len(scan) // 2])
        return f'jpeg:truncate_scan:{cut}', join(heads, scan[:max(0, len(scan) - cut)])
    if kind in ('sof', 'dup_sof'):
        j = next((k for k, (m, _) in enumerate(heads) if m in (0xC0, 0xC1, 0xC2)), None)
        if j is None:
            return random_bytes(rng, data)
        seg = bytearray(heads[j][1])
        if kind == 'dup_sof':
            other = bytearray(seg)
            other[7:9] = struct.pack('>H', rng.choice([1, 5, 40]))
            heads.insert(j + rng.choice([0, 1]), (0xC0, bytes(other)))
            return 'jpeg:dup_sof', join(heads, scan)
        field = rng.choice(['bits', 'height', 'width', 'components', 'marker', 'sampling'])
        if field == 'bits':
            seg[4] = rng.choice([0, 8, 12, 16])
        elif field == 'height':
            seg[5:7] = struct.pack('>H', rng.choice([0, 1, 16, 17, 18, 100]))
        elif field == 'width':
            seg[7:9] = struct.pack('>H', rng.choice([0, 1, 22, 24, 100]))
        elif field == 'components':
            seg[9] = rng.choice([0, 1, 2, 3, 4, 5])
        elif field == 'marker':
            seg[1] = rng.choice([0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCA, 0xCF])
        else:
            if len(seg) > 11:
                seg[11] = rng.choice([0x11, 0x21, 0x22, 0x44, 0x00, 0x13])
        heads[j] = (heads[j][0], bytes(seg))
        return f'jpeg:sof:{field}', join(heads, scan)
    if kind == 'segment_length':
        seg = bytearray(heads[i][1])
        if len(seg) >= 4:
            n = struct.unpack('>H', seg[2:4])[0]
            seg[2:4] = struct.pack('>H', max(0, min(65535, n + rng.choice([-3, -1, 1, 2, 200, -n]))))
        heads[i] = (heads[i][0], bytes(seg))
        return 'jpeg:segment_length', join(heads, scan)
    if kind == 'scan_bytes':
        sc = bytearray(scan)
        for _ in range(rng.randrange(1, 4)):
            k = rng.randrange(max(1, len(sc) - 2))
            sc[k] = rng.choice([0xFF, 0x00, rng.randrange(256)])
        return 'jpeg:scan_bytes', join(heads, bytes(sc))
    if kind == 'eoi_early':
        k = rng.randrange(len(scan))
        return 'jpeg:eoi_early', join(heads, scan[:k] + b'\xff\xd9')
    return random_bytes(rng, data)



# ---------------------------------------------------------------------------------------------
# WebP

def webp_seeds():
    im = base(23, 17)
    a = np.asarray(im)
    alpha = (np.arange(23 * 17).reshape(17, 23) * 37 % 256).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([a, alpha]), 'RGBA')
    return {
        'lossy': pil_bytes(im, 'WEBP', quality=80),
        'lossless': pil_bytes(im, 'WEBP', lossless=True),
        'alpha_lossy': pil_bytes(rgba, 'WEBP', quality=80),
        'alpha_lossless_exact': pil_bytes(rgba, 'WEBP', lossless=True, exact=True),
        'animated': pil_bytes(im, 'WEBP', save_all=True, append_images=[im.transpose(Image.FLIP_LEFT_RIGHT)], duration=100),
        'icc_exif': pil_bytes(im, 'WEBP', quality=80, icc_profile=b'\0' * 64, exif=b'Exif\0\0II*\0\x08\0\0\0\0\0'),
    }


def webp_chunks(data):
    out, pos = [], 12
    while pos + 8 <= len(data):
        n = struct.unpack('<I', data[pos + 4:pos + 8])[0]
        out.append([data[pos:pos + 4], data[pos + 8:pos + 8 + n]])
        pos += 8 + n + (n & 1)
    return out


def webp_join(chunks, riff_size=None):
    body = b'WEBP' + b''.join(c + struct.pack('<I', len(d)) + d + (b'\0' if len(d) & 1 else b'') for c, d in chunks)
    return b'RIFF' + struct.pack('<I', len(body) if riff_size is None else riff_size) + body


def mutate_webp(rng, data):
    chunks = webp_chunks(data)
    kind = rng.choice(['riff_size', 'chunk_size', 'truncate', 'drop', 'dup', 'vp8x_flags', 'body', 'body', 'order', 'random'])
    if not chunks or kind == 'random':
        return random_bytes(rng, data)
    i = rng.randrange(len(chunks))
    if kind == 'riff_size':
        return 'webp:riff_size', webp_join(chunks, rng.choice([0, 4, len(data) - 8 - 1, len(data) + 100, 0xFFFFFFFF]))
    if kind == 'chunk_size':
        b = bytearray(webp_join(chunks))
        pos = 12
        for _ in range(i):
            n = struct.unpack('<I', b[pos + 4:pos + 8])[0]
            pos += 8 + n + (n & 1)
        n = struct.unpack('<I', b[pos + 4:pos + 8])[0]
        b[pos + 4:pos + 8] = struct.pack('<I', max(0, n + rng.choice([-1, 1, -10, 100, -n])))
        return f'webp:chunk_size:{chunks[i][0].decode("latin-1")}', bytes(b)
    if kind == 'truncate':
        return 'webp:truncate', data[:rng.randrange(12, len(data))]
    if kind == 'drop' and len(chunks) > 1:
        c = chunks.pop(i)
        return f'webp:drop:{c[0].decode("latin-1")}', webp_join(chunks)
    if kind == 'dup':
        chunks.insert(i, list(chunks[i]))
        return f'webp:dup:{chunks[i][0].decode("latin-1")}', webp_join(chunks)
    if kind == 'vp8x_flags':
        j = next((k for k, c in enumerate(chunks) if c[0] == b'VP8X'), None)
        if j is None:
            return random_bytes(rng, data)
        d = bytearray(chunks[j][1])
        d[0] ^= rng.choice([0x02, 0x04, 0x08, 0x10, 0x20])
        chunks[j][1] = bytes(d)
        return 'webp:vp8x_flags', webp_join(chunks)
    if kind == 'body':
        d = bytearray(chunks[i][1])
        if d:
            for _ in range(rng.randrange(1, 4)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        chunks[i][1] = bytes(d)
        return f'webp:body:{chunks[i][0].decode("latin-1")}', webp_join(chunks)
    if kind == 'order' and len(chunks) > 1:
        rng.shuffle(chunks)
        return 'webp:order', webp_join(chunks)
    return random_bytes(rng, data)


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
    'tiff': (tiff_seeds, mutate_tiff),
    'gif': (gif_seeds, mutate_gif),
    'jpeg': (jpeg_seeds, mutate_jpeg),
    'webp': (webp_seeds, mutate_webp),
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
