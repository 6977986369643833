#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes GIF files, from Pillow's own writer and built byte by byte here (frames smaller than the
screen, transparency, local palettes, no palette, interlacing, LZW edge cases, broken streams),
plus what Pillow does with each: test/fixtures/pillow_decode_cases/gif/<file> and manifest.json
with, per file, the sha256 of numpy.array(Image.open(file).convert('RGB')) (LLaVA's loader), the
size and Pillow's mode, or the error Pillow raises. test/image_gif.test.ts checks
src/image/gif.ts against it.

Run with Debian bookworm's python3-pil (Pillow 9.4.0, the version of the golden fixtures):
  /usr/bin/python3 tools/gen_pillow_gif_cases.py
"""
import os
import struct

import numpy as np
from PIL import Image

from pillow_cases import fresh_dir, write_manifest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SRC = os.path.join(ROOT, 'test', 'fixtures', 'images', 'chelsea.png')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases', 'gif')


def lzw(indices, min_code, clear_when_full=True, eoi=True):
    """GIF LZW code stream (as sub-blocks, with the terminator). With clear_when_full=False the
    table stays full without a clear code (a "deferred clear", which decoders must handle)."""
    clear, end = 1 << min_code, (1 << min_code) + 1
    size, nxt = min_code + 1, end + 1
    table = {}
    codes = [(clear, size)]
    prefix = None
    for v in indices:
        v = int(v)
        if prefix is None:
            prefix = v
            continue
        key = (prefix, v)
        if key in table:
            prefix = table[key]
            continue
        codes.append((prefix, size))
        if nxt < 4096:
            table[key] = nxt
            nxt += 1
            if nxt > (1 << size) and size < 12:
                size += 1
        elif clear_when_full:
            codes.append((clear, size))
            table, size, nxt = {}, min_code + 1, end + 1
        prefix = v
    if prefix is not None:
        codes.append((prefix, size))
    if eoi:
        codes.append((end, size))
    bits = n = 0
    out = bytearray()
    for c, s in codes:
        bits |= c << n
        n += s
        while n >= 8:
            out.append(bits & 255)
            bits >>= 8
            n -= 8
    if n:
        out.append(bits & 255)
    blocks = b''.join(bytes([len(out[i:i + 255])]) + out[i:i + 255] for i in range(0, len(out), 255))
    return bytes([min_code]) + blocks + b'\0'


def colour_table(pal):
    bits = max(1, (len(pal) - 1).bit_length())
    return bits, b''.join(bytes(c) for c in pal) + b'\0' * 3 * ((1 << bits) - len(pal))


def gif(screen, frames, gpal=None, bg=0, pre=b'', version=b'GIF89a'):
    """frames: dicts with rect (x, y, w, h), idx (h x w), and optional trans, lpal, interlace,
    min_code, clear_when_full, eoi, data (raw image data replacing the LZW stream)."""
    flags, table = 0, b''
    if gpal is not None:
        bits, table = colour_table(gpal)
        flags = 0x80 | (bits - 1)
    out = version + struct.pack('<HHBBB', screen[0], screen[1], flags, bg, 0) + table + pre
    for f in frames:
        if f.get('trans') is not None:
            out += b'\x21\xf9\x04\x01' + struct.pack('<H', 10) + bytes([f['trans']]) + b'\0'
        lflags, ltable = 0, b''
        if f.get('lpal') is not None:
            bits, ltable = colour_table(f['lpal'])
            lflags = 0x80 | (bits - 1)
        if f.get('interlace'):
            lflags |= 0x40
        x, y, w, h = f['rect']
        idx = np.asarray(f['idx'])
        rows = list(range(h))
        if f.get('interlace'):
            rows = list(range(0, h, 8)) + list(range(4, h, 8)) + list(range(2, h, 4)) + list(range(1, h, 2))
        stream = idx[rows].ravel() if h else idx.ravel()
        min_code = f.get('min_code', 8)
        data = f.get('data') or lzw(stream, min_code, f.get('clear_when_full', True), f.get('eoi', True))
        out += b',' + struct.pack('<HHHHB', x, y, w, h, lflags) + ltable + data
    return out + b';'


def main():
    fresh_dir(OUT)
    cases = {}

    def add(name, data, note):
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(data)
        cases[name] = note

    def save(name, im, note, **kw):
        im.save(os.path.join(OUT, name), **kw)
        cases[name] = note

    base = Image.open(SRC).convert('RGB')
    small = base.crop((200, 100, 223, 117))
    big = base.crop((100, 80, 228, 176))  # 128 x 96: an LZW table that fills up
    save('pillow_p16.gif', small.convert('P', palette=Image.ADAPTIVE, colors=16), "Pillow's writer, 16 colours")
    save('pillow_transparency.gif', small.convert('P', palette=Image.ADAPTIVE, colors=16),
         "Pillow's writer, transparency index 3", transparency=3)
    save('pillow_grey.gif', small.convert('L'), "Pillow's writer, greyscale")
    save('pillow_interlaced_256.gif', big.convert('P', palette=Image.ADAPTIVE, colors=256),
         "Pillow's writer, 256 colours, 128x96, interlaced")
    save('pillow_animated.gif', small.convert('P', palette=Image.ADAPTIVE, colors=16), "Pillow's writer, 2 frames (first)",
         save_all=True, append_images=[small.transpose(Image.FLIP_LEFT_RIGHT)], duration=100, loop=0)

    pal = [(10 * i % 256, 37 * i % 256, 91 * i % 256) for i in range(16)]
    pal[0] = (200, 100, 50)
    w, h = 7, 5
    idx = (np.arange(w * h).reshape(h, w) * 3 % 16).astype(np.uint8)
    frame = {'rect': (0, 0, w, h), 'idx': idx}
    sub = {'rect': (2, 3, w, h), 'idx': idx}
    add('transparency.gif', gif((w, h), [dict(frame, trans=3)], pal), 'transparent pixels keep their palette colour')
    add('frame_inside_screen.gif', gif((11, 9), [sub], pal, bg=5), 'frame smaller than the screen: index 0 around it')
    add('frame_inside_screen_transparency.gif', gif((11, 9), [dict(sub, trans=3)], pal, bg=5),
        'frame smaller than the screen with transparency: the transparent colour around it')
    add('frame_past_screen.gif', gif((5, 4), [dict(sub, rect=(2, 1, w, h))], pal), 'frame past the screen: canvas enlarged')
    add('local_palette.gif', gif((11, 9), [dict(sub, trans=3, lpal=pal[::-1])], pal), 'local palette wins')
    add('local_palette_only.gif', gif((w, h), [dict(frame, lpal=pal)]), 'local palette, no global one')
    add('no_palette.gif', gif((w, h), [dict(frame, idx=idx * 16)]), 'no palette at all (Pillow mode L: index = grey)')
    add('indices_past_palette.gif', gif((w, h), [frame], pal[:4]), 'indices past a 4-colour palette (grey ramp)')
    add('identity_grey_palette.gif', gif((w, h), [frame], [(i, i, i) for i in range(16)]), 'identity grey palette (mode L)')
    add('identity_grey_local_palette.gif', gif((w, h), [dict(frame, lpal=[(i, i, i) for i in range(16)])], pal),
        'identity grey local palette over a colour global one (Pillow: mode L, the global palette applied)')
    add('identity_grey_local_palette_only.gif', gif((w, h), [dict(frame, lpal=[(i, i, i) for i in range(16)])]),
        'identity grey local palette, no global one (mode L)')
    add('second_frame_ignored.gif', gif((11, 9), [dict(sub, trans=3), {'rect': (0, 0, 11, 9), 'idx': np.full((9, 11), 4)}], pal),
        'a second frame is never read')
    add('interlaced_5_rows.gif', gif((w, h), [dict(frame, interlace=True)], pal), 'interlaced, 5 rows (short passes)')
    add('interlaced_1_row.gif', gif((w, 1), [dict(frame, rect=(0, 0, w, 1), idx=idx[:1], interlace=True)], pal),
        'interlaced, 1 row')
    add('interlaced_19_rows.gif', gif((w, 19), [dict(frame, rect=(0, 0, w, 19), idx=np.resize(idx, (19, w)), interlace=True)], pal),
        'interlaced, 19 rows')
    noisy = (np.arange(128 * 64).reshape(64, 128) * 2654435761 % 4093 % 256).astype(np.uint8)
    add('deferred_clear.gif', gif((128, 64), [{'rect': (0, 0, 128, 64), 'idx': noisy, 'clear_when_full': False}],
                                  [(i, 255 - i, (i * 7) % 256) for i in range(256)]), 'LZW table full, no clear code (deferred clear)')
    add('clear_when_full.gif', gif((128, 64), [{'rect': (0, 0, 128, 64), 'idx': noisy}],
                                   [(i, 255 - i, (i * 7) % 256) for i in range(256)]), 'LZW table full, clear code')
    add('min_code_2.gif', gif((w, h), [dict(frame, idx=idx % 4, min_code=2)], pal[:4]), 'LZW minimum code size 2')
    add('no_end_code.gif', gif((w, h), [dict(frame, eoi=False)], pal), 'no end code after the last pixel')
    gce_no_trans = b'\x21\xf9\x04\x00\x0a\x00\x03\x00'
    extensions = (b'\x21\xfe\x05hello\x03abc\x00' + b'\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00'
                  + b'\x21\x01\x0c' + b'\0' * 12 + b'\x02ab\x00' + b'\x00\x07' + gce_no_trans)
    add('extensions_and_junk.gif', gif((w, h), [frame], pal, pre=extensions),
        'comment, NETSCAPE, plain text extensions, stray bytes, GCE without transparency flag')
    add('gif87a.gif', gif((w, h), [frame], pal, version=b'GIF87a'), 'GIF87a')

    # A frame 0 pixels wide at x 0: decoder.setimage reads the box (0, y, 0, y + h) as the whole
    # image, so Pillow decodes a screen-sized frame from the data (when there is enough of it).
    screen = (np.arange(w * h).reshape(h, w) * 5 % 16).astype(np.uint8)
    add('zero_width_frame.gif', gif((w, h), [{'rect': (0, 0, 0, 0), 'idx': np.zeros((0, 0)), 'data': lzw(screen.ravel(), 8)}], pal),
        'first frame 0x0 at (0, 0) with a screen of data: decoded as the whole screen')
    add('zero_width_frame_lower.gif', gif((w, h), [{'rect': (0, 3, 0, 2), 'idx': np.zeros((0, 0)), 'data': lzw(screen.ravel(), 8)}], pal),
        'first frame 0 wide at (0, 3): also the whole screen, from the top')

    # Refused by Pillow
    add('end_code_early.gif', gif((w, h), [dict(frame, data=lzw(idx.ravel()[:20], 8))], pal),
        'end code before the last pixel (Pillow: truncated)')
    full = gif((w, h), [frame], pal)
    add('truncated.gif', full[:len(full) - 20], 'file cut inside the image data')
    add('no_image.gif', gif((w, h), [], pal), 'no image block')
    add('code_size_13.gif', gif((w, h), [dict(frame, data=b'\x0d\x02\x00\x00\x00')], pal), 'LZW code size 13 (Pillow: codec error)')
    add('bad_first_code.gif', gif((w, h), [dict(frame, data=b'\x02\x02\x0e\x00\x00')], pal[:4]),
        'first code after clear is a table code (Pillow: broken data stream)')
    add('zero_height_frame.gif', gif((w, h), [dict(frame, rect=(0, 0, w, 0), idx=np.zeros((0, w)))], pal), 'frame 0 rows high')
    add('zero_width_frame_at_x2.gif', gif((w, h), [{'rect': (2, 0, 0, h), 'idx': np.zeros((h, 0)), 'data': lzw(screen.ravel(), 8)}], pal),
        'frame 0 wide at x 2 (Pillow: tile cannot extend outside image)')
    add('zero_width_frame_no_data.gif', gif((w, h), [{'rect': (0, 0, 0, 0), 'idx': np.zeros((0, 0))}], pal),
        'frame 0x0 at (0, 0) without data for the screen (Pillow: image file is truncated)')
    add('bomb.gif', gif((40000, 40000), [frame], pal), '40000 x 40000 screen (Pillow: DecompressionBombError)')
    add('header_only.gif', b'GIF89a\x07\x00', 'file ends inside the header')

    write_manifest(OUT, cases, 'gen_pillow_gif_cases.py')

if __name__ == '__main__':
    main()
