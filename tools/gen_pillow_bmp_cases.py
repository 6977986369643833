#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes BMP files in every variant Pillow 9.4's BmpImagePlugin handles (and some it refuses),
built byte by byte here because Pillow only writes 1/8/24/32-bit uncompressed BMPs, plus what
Pillow does with each: test/fixtures/pillow_decode_cases/bmp/<file> and manifest.json with, per
file, either the sha256 of numpy.array(Image.open(file).convert('RGB')) (LLaVA's loader), the
size and Pillow's mode, or the error Pillow raises (and, where Image.open of the bytes in memory
gives something else, that as from_bytes). test/image_bmp.test.ts checks
src/image/bmp.ts against it.

Run with Debian bookworm's python3-pil (Pillow 9.4.0, the version of the golden fixtures):
  /usr/bin/python3 tools/gen_pillow_bmp_cases.py
"""
import os
import struct

import numpy as np
from PIL import Image

from pillow_cases import fresh_dir, pack_bits, write_manifest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SRC = os.path.join(ROOT, 'test', 'fixtures', 'images', 'chelsea.png')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases', 'bmp')

W, H = 13, 7  # odd width: every row needs padding at every bit depth


def base_rgb():
    return Image.open(SRC).convert('RGB').crop((210, 120, 210 + W, 120 + H))


def quantize(colors):
    """(H x W indices, palette as [(r, g, b)]) with `colors` entries."""
    p = base_rgb().quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    pal = p.getpalette()[: 3 * colors]
    pal += [0] * (3 * colors - len(pal))
    return np.asarray(p), [tuple(pal[i * 3: i * 3 + 3]) for i in range(colors)]


def pack_rows(rows, bits, top_down=False):
    """Pixel rows (lists of ints: indices, or 16/24/32-bit words) to BMP rows, 4-byte aligned."""
    out = b''
    for row in (rows if top_down else rows[::-1]):
        b = pack_bits(row, bits) if bits < 8 else b''.join(int(v).to_bytes(bits // 8, 'little') for v in row)
        out += b + b'\0' * (-len(b) % 4)
    return out


def palette_bytes(pal, entry=4):
    return b''.join(bytes((b, g, r)) + (b'\0' if entry == 4 else b'') for (r, g, b) in pal)


def bmp(pixels, *, bits, width=W, height=H, header=40, compression=0, palette=b'', colors=None,
        masks=None, masks_after_header=False, offset=None, planes=1, extra_after_palette=b''):
    """A BMP file. `height` < 0 means top-down. `masks` go into the v4/v5 header, or after a
    40-byte header when masks_after_header (BI_BITFIELDS in a BITMAPINFOHEADER)."""
    if header == 12:
        info = struct.pack('<IHHHH', 12, width, height, planes, bits)
    else:
        info = struct.pack('<IiiHHIIiiII', header, width, height, planes, bits, compression,
                           len(pixels), 2835, 2835, colors if colors is not None else 0, 0)
        if header > 40:
            m = list(masks or (0, 0, 0, 0)) + [0] * 4
            info += struct.pack('<IIII', *m[:4])
            info += b'\0' * (header - len(info))
    after = b''
    if masks_after_header:
        after = struct.pack('<III', *masks[:3])
    head_len = 14 + len(info) + len(after) + len(palette) + len(extra_after_palette)
    off = head_len if offset is None else offset
    total = head_len + len(pixels)
    return (b'BM' + struct.pack('<IHHI', total, 0, 0, off) + info + after + palette
            + extra_after_palette + pixels)


def rgb_words(fn):
    a = np.asarray(base_rgb()).astype(np.uint32)
    return [[fn(*a[y, x]) for x in range(W)] for y in range(H)]


def rle8(rows, top_down=False):
    """Straightforward RLE8 stream: runs of equal pixels encoded, the rest absolute, EOL per row, EOB."""
    out = b''
    for row in (rows if top_down else rows[::-1]):
        i = 0
        while i < len(row):
            j = i
            while j < len(row) and row[j] == row[i] and j - i < 255:
                j += 1
            if j - i >= 2:
                out += bytes((j - i, row[i]))
                i = j
            else:
                k = i
                while k < len(row) and k - i < 255 and not (k + 1 < len(row) and row[k + 1] == row[k]):
                    k += 1
                n = max(k - i, 1)
                if n < 3:
                    for v in row[i:i + n]:
                        out += bytes((1, v))
                else:
                    out += bytes((0, n)) + bytes(row[i:i + n]) + (b'\0' if n % 2 else b'')
                i += n
        out += b'\0\0'
    return out[:-2] + b'\0\1'


def main():
    fresh_dir(OUT)
    cases = {}

    def add(name, data, note):
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(data)
        cases[name] = note

    idx2, pal2 = quantize(2)
    idx16, pal16 = quantize(16)
    idx200, pal200 = quantize(200)
    rows2 = idx2.tolist()
    rows16 = idx16.tolist()
    rows200 = idx200.tolist()
    grey = np.asarray(base_rgb().convert('L')).tolist()

    # ---- palette images
    add('p1.bmp', bmp(pack_rows(rows2, 1), bits=1, palette=palette_bytes(pal2)), '1-bit, 2-colour palette')
    add('p1_black_white.bmp', bmp(pack_rows(rows2, 1), bits=1, palette=palette_bytes([(0, 0, 0), (255, 255, 255)])),
        '1-bit black/white palette (Pillow mode 1)')
    add('p1_white_black.bmp', bmp(pack_rows(rows2, 1), bits=1, palette=palette_bytes([(255, 255, 255), (0, 0, 0)])),
        '1-bit white/black palette (Pillow mode P)')
    add('p4.bmp', bmp(pack_rows(rows16, 4), bits=4, palette=palette_bytes(pal16)), '4-bit, 16-colour palette')
    add('p4_colors5.bmp', bmp(pack_rows(rows16, 4), bits=4, palette=palette_bytes(pal16[:5]), colors=5),
        '4-bit, biClrUsed 5, indices up to 15 (Pillow: grey ramp past the palette)')
    add('p8.bmp', bmp(pack_rows(rows200, 8), bits=8, palette=palette_bytes(pal200), colors=200),
        '8-bit, 200-colour palette')
    add('p8_grey.bmp', bmp(pack_rows(grey, 8), bits=8, palette=palette_bytes([(i, i, i) for i in range(256)])),
        '8-bit, grey ramp palette (Pillow mode L)')
    add('p8_top_down.bmp', bmp(pack_rows(rows200, 8, top_down=True), bits=8, height=-H,
                               palette=palette_bytes(pal200), colors=200), '8-bit, top-down')
    add('p8_two_grey_colors.bmp',
        bmp(pack_rows([[v * 255 for v in r] for r in rows2], 8), bits=8, colors=2,
            palette=palette_bytes([(0, 0, 0), (255, 255, 255)])),
        '8-bit, biClrUsed 2 black/white (Pillow quirk: mode 1, reads the bytes as bits)')
    add('p4_grey_ramp.bmp', bmp(pack_rows(rows16, 4), bits=4, palette=palette_bytes([(i, i, i) for i in range(16)])),
        '4-bit, palette (i, i, i) (Pillow quirk: mode L, 8 bits per pixel: overlapping rows via mmap from a path, a decoder error from bytes)')
    add('p8_offset_at_palette.bmp',
        bmp(pack_rows(rows200, 8), bits=8, palette=palette_bytes(pal200), colors=200, offset=14 + 40),
        '8-bit, bfOffBits pointing at the palette (Pillow skips 4 x colours bytes)')
    add('p8_offset_zero.bmp', bmp(pack_rows(rows200, 8), bits=8, palette=palette_bytes(pal200), colors=200, offset=0),
        '8-bit, bfOffBits 0 (Pillow: pixels right after the palette)')
    add('p8_gap.bmp', bmp(pack_rows(rows200, 8), bits=8, palette=palette_bytes(pal200), colors=200,
                          extra_after_palette=b'\x55' * 10), '8-bit, 10 bytes between palette and pixels')
    add('p8_colors300.bmp', bmp(pack_rows(rows200, 8), bits=8, palette=palette_bytes(pal200 + [(1, 2, 3)] * 100),
                                colors=300), '8-bit, biClrUsed 300 (Pillow: palette too large)')
    add('p8_palette_v5.bmp', bmp(pack_rows(rows200, 8), bits=8, header=124, palette=palette_bytes(pal200), colors=200),
        '8-bit, BITMAPV5HEADER')

    add('p8_palette_truncated.bmp', bmp(b'', bits=8, palette=palette_bytes(pal200)[:300], colors=200),
        '8-bit, file ends inside the palette')
    narrow = [[(x + y) % 2 for x in range(3)] for y in range(H)]
    add('p1_one_colour.bmp', bmp(pack_rows(narrow, 1), bits=1, width=3, colors=1, palette=palette_bytes([(0, 0, 0)])),
        '1-bit, 3 wide, one black palette entry (Pillow quirk: mode L, reads whole bytes)')

    # ---- direct colour
    add('rgb24.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24), '24-bit, bottom-up')
    add('rgb24_top_down.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24, top_down=True),
                                  bits=24, height=-H), '24-bit, top-down (negative height)')
    add('rgb24_v4.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24, header=108),
        '24-bit, BITMAPV4HEADER')
    add('rgb24_os2v2.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24, header=64),
        '24-bit, OS/2 v2 header (64 bytes)')
    add('rgb24_trailing.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24) + b'junk' * 5, bits=24),
        '24-bit, trailing bytes after the pixels')
    full = bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24)
    add('rgb24_no_last_padding.bmp', full[:-(-(W * 3) % 4)], '24-bit, last row without its padding')
    add('rgb24_truncated.bmp', full[:-50], '24-bit, pixel data cut short (Pillow: truncated)')
    xw = rgb_words(lambda r, g, b: (r * 7 + g) & 255 << 24 | r << 16 | g << 8 | b)
    add('rgb32.bmp', bmp(pack_rows(xw, 32), bits=32), '32-bit BI_RGB, non-zero 4th byte (ignored)')
    add('rgb32_v5_alpha.bmp', bmp(pack_rows(xw, 32), bits=32, header=124, compression=0,
                                  masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)),
        '32-bit BI_RGB in a v5 header with an alpha mask (Pillow: BGRX, alpha ignored)')
    w555 = [[(r >> 3) << 10 | (g >> 3) << 5 | (b >> 3) | ((x & 1) << 15) for x, (r, g, b) in enumerate(np.asarray(base_rgb())[y].tolist())]
            for y in range(H)]
    add('rgb16_555.bmp', bmp(pack_rows(w555, 16), bits=16), '16-bit BI_RGB (5-5-5, top bit set in some pixels)')
    every555 = [[(v & 31) << 10 | ((v * 7) & 31) << 5 | ((v * 13) & 31) for v in range(32)]] * 2
    add('rgb16_555_all.bmp', bmp(pack_rows(every555, 16), bits=16, width=32, height=2), '16-bit 5-5-5, every level')
    every565 = [[((v * 3) & 31) << 11 | (v & 63) << 5 | ((v * 5) & 31) for v in range(64)]] * 2
    add('rgb16_565_all.bmp', bmp(pack_rows(every565, 16), bits=16, width=64, height=2, compression=3,
                                 masks=(0xF800, 0x7E0, 0x1F), masks_after_header=True),
        '16-bit BI_BITFIELDS 5-6-5 (v3 header + masks), every level')
    add('rgb16_555_bitfields.bmp', bmp(pack_rows(w555, 16), bits=16, compression=3,
                                       masks=(0x7C00, 0x3E0, 0x1F), masks_after_header=True),
        '16-bit BI_BITFIELDS 5-5-5')
    w565 = [[(r >> 3) << 11 | (g >> 2) << 5 | (b >> 3) for (r, g, b) in np.asarray(base_rgb())[y].tolist()] for y in range(H)]
    add('rgb16_565_v4.bmp', bmp(pack_rows(w565, 16), bits=16, header=108, compression=3, masks=(0xF800, 0x7E0, 0x1F, 0)),
        '16-bit BI_BITFIELDS 5-6-5 in a v4 header')
    add('rgb16_444_bitfields.bmp', bmp(pack_rows(w565, 16), bits=16, compression=3,
                                       masks=(0xF00, 0xF0, 0xF), masks_after_header=True),
        '16-bit BI_BITFIELDS 4-4-4 (Pillow: unsupported layout)')
    add('rgb32_bitfields_bgrx.bmp', bmp(pack_rows(xw, 32), bits=32, compression=3,
                                        masks=(0xFF0000, 0xFF00, 0xFF), masks_after_header=True),
        '32-bit BI_BITFIELDS BGRX (v3 header + masks)')
    aw = rgb_words(lambda r, g, b: ((r * 3 + b) & 255) << 24 | r << 16 | g << 8 | b)
    add('rgb32_bgra_v4.bmp', bmp(pack_rows(aw, 32), bits=32, header=108, compression=3,
                                 masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)), '32-bit BITFIELDS BGRA, varying alpha (dropped)')
    xbgr = rgb_words(lambda r, g, b: r << 24 | g << 16 | b << 8 | ((r + g) & 255))
    add('rgb32_xbgr_v4.bmp', bmp(pack_rows(xbgr, 32), bits=32, header=108, compression=3,
                                 masks=(0xFF000000, 0xFF0000, 0xFF00, 0)), '32-bit BITFIELDS XBGR')
    add('rgb32_abgr_v5.bmp', bmp(pack_rows(xbgr, 32), bits=32, header=124, compression=3,
                                 masks=(0xFF000000, 0xFF0000, 0xFF00, 0xFF)), '32-bit BITFIELDS ABGR')
    rgba = rgb_words(lambda r, g, b: ((g * 5) & 255) << 24 | b << 16 | g << 8 | r)
    add('rgb32_rgba_v5.bmp', bmp(pack_rows(rgba, 32), bits=32, header=124, compression=3,
                                 masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000)), '32-bit BITFIELDS RGBA')
    add('rgb32_zero_masks_v4.bmp', bmp(pack_rows(aw, 32), bits=32, header=108, compression=3, masks=(0, 0, 0, 0)),
        '32-bit BITFIELDS with all-zero masks (Pillow: BGRA)')
    add('rgb32_odd_masks.bmp', bmp(pack_rows(aw, 32), bits=32, header=108, compression=3,
                                   masks=(0x3FF00000, 0xFFC00, 0x3FF, 0)), '32-bit BITFIELDS 10-10-10 (Pillow: unsupported)')
    add('rgb24_bitfields.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24, compression=3,
                                   masks=(0xFF0000, 0xFF00, 0xFF), masks_after_header=True), '24-bit BI_BITFIELDS BGR')
    add('p8_bitfields.bmp', bmp(pack_rows(rows200, 8), bits=8, compression=3, palette=palette_bytes(pal200), colors=200,
                                masks=(0xFF0000, 0xFF00, 0xFF), masks_after_header=True),
        '8-bit with BI_BITFIELDS (Pillow: unsupported)')

    # ---- OS/2 v1 (12-byte header, 3-byte palette entries)
    add('os2_rgb24.bmp', bmp(pack_rows(rgb_words(lambda r, g, b: r << 16 | g << 8 | b), 24), bits=24, header=12),
        'OS/2 v1, 24-bit')
    add('os2_p8.bmp', bmp(pack_rows(rows16, 8), bits=8, header=12, palette=palette_bytes(pal16 + [(9, 9, 9)] * 240, 3)),
        'OS/2 v1, 8-bit, 3-byte palette entries')
    add('os2_p1.bmp', bmp(pack_rows(rows2, 1), bits=1, header=12, palette=palette_bytes(pal2, 3)), 'OS/2 v1, 1-bit')

    add('os2_p8_offset_at_palette.bmp',
        bmp(b'\0' * (4 * 256 - 3 * 256) + pack_rows(rows16, 8), bits=8, header=12,
            palette=palette_bytes(pal16 + [(9, 9, 9)] * 240, 3), offset=14 + 12),
        'OS/2 v1, 8-bit, bfOffBits at the palette (Pillow skips 4 x colours bytes, not 3 x)')

    # ---- RLE
    add('rle8.bmp', bmp(rle8(rows200), bits=8, compression=1, palette=palette_bytes(pal200), colors=200),
        'RLE8: encoded and absolute runs, end of line, end of bitmap')
    add('rle8_top_down.bmp', bmp(rle8(rows200, top_down=True), bits=8, height=-H, compression=1,
                                 palette=palette_bytes(pal200), colors=200), 'RLE8, top-down')
    add('rle8_grey.bmp', bmp(rle8(grey), bits=8, compression=1, palette=palette_bytes([(i, i, i) for i in range(256)])),
        'RLE8, grey palette (Pillow mode L)')
    add('rle8_short_eob.bmp', bmp(rle8(rows200)[:40] + b'\0\1', bits=8, compression=1,
                                  palette=palette_bytes(pal200), colors=200),
        'RLE8 ending (end of bitmap) before the last row (Pillow: not enough image data)')
    # Hand-written stream: an encoded run longer than the row (clipped), a delta (Pillow 9.4 reads
    # 4 bytes for it and uses the last 2), an absolute run that wraps onto the next row (odd: one
    # padding byte), a run clipped to nothing because of the wrap, end of line in mid row.
    s = bytes((20, 5)) + b'\0\0'
    s += bytes((3, 7)) + b'\0\2' + bytes((2, 1)) + bytes((2, 1))
    s += b'\0\x0f' + bytes(range(40, 55)) + b'\0'
    s += bytes((2, 3)) + b'\0\0'
    s += (bytes((13, 11)) + b'\0\0') * 3 + b'\0\1'
    add('rle8_delta_wrap.bmp', bmp(s, bits=8, compression=1, palette=palette_bytes(pal200), colors=200),
        'RLE8: delta (Pillow 9.4 reads 4 bytes for it), clipped and wrapping runs, mid-row EOL')
    s4 = b''
    for r in rows16[::-1]:
        s4 += bytes((5, r[0] << 4 | r[1]))               # encoded: alternating pair
        s4 += b'\0\x07' + bytes((r[5] << 4 | r[6], r[7] << 4 | r[8], r[9] << 4 | r[10], r[11] << 4)) # odd absolute
        s4 += bytes((1, r[12] << 4)) + b'\0\0'
    add('rle4.bmp', bmp(s4 + b'\0\1', bits=4, compression=2, palette=palette_bytes(pal16)),
        'RLE4: encoded pairs, odd absolute run (Pillow 9.4 drops its last pixel), EOL, EOB')
    add('rle4_last_eol_missing.bmp', bmp(s4[:-2] + b'\0\1', bits=4, compression=2, palette=palette_bytes(pal16)),
        'RLE4 whose last row ends with EOB (Pillow 9.4: one pixel short, not enough image data)')
    s4e = b''
    for r in rows16[::-1]:
        s4e += b'\0\x0c' + bytes(r[i] << 4 | r[i + 1] for i in range(0, 12, 2)) + bytes((1, r[12] << 4)) + b'\0\0'
    add('rle4_even.bmp', bmp(s4e + b'\0\1', bits=4, compression=2, palette=palette_bytes(pal16)),
        'RLE4: even absolute runs, EOL, EOB')
    add('rle8_odd_offset.bmp', bmp(rle8(rows200), bits=8, compression=1, palette=palette_bytes(pal200), colors=200,
                                  extra_after_palette=b'\0'),
        'RLE8 starting at an odd file offset (Pillow aligns absolute runs by file position)')
    add('rle8_in_4bit.bmp', bmp(rle8(rows16), bits=4, compression=1, palette=palette_bytes(pal16)),
        'RLE8 stream in a 4-bit BMP (Pillow decodes it as RLE8)')
    add('rle8_24bit.bmp', bmp(rle8(rows16), bits=24, compression=1), 'RLE8 in a 24-bit BMP (Pillow: error)')
    add('rle4_bw.bmp', bmp(s4, bits=4, compression=2, palette=palette_bytes([(0, 0, 0), (255, 255, 255)]), colors=2),
        'RLE4 with a black/white 2-colour palette (Pillow mode 1)')
    big = bytes((255, 1)) * 10 + b'\0\2\0\0' + bytes((255, 255)) + b'\0\1'
    add('rle8_huge_delta.bmp', bmp(big, bits=8, compression=1, width=5000, height=5000,
                                   palette=palette_bytes(pal16)), 'RLE8 5000x5000 from 30 bytes: deltas do not cover it')

    # ---- refused headers / layouts
    add('bits2.bmp', bmp(pack_rows(rows2, 2), bits=2, palette=palette_bytes(pal2 + pal2)), '2-bit (Pillow: unsupported depth)')
    add('jpeg_compression.bmp', bmp(b'\xff\xd8\xff' + b'\0' * 50, bits=24, compression=4), 'BI_JPEG (Pillow: unsupported)')
    add('header20.bmp', bmp(b'\0' * 300, bits=24, header=40)[:14] + struct.pack('<I', 20) + b'\0' * 300,
        'header size 20 (Pillow: unsupported)')
    add('huge.bmp', bmp(b'\0' * 64, bits=24, width=10000, height=10000), '10000x10000 24-bit declared, 64 bytes of pixels')
    add('bomb.bmp', bmp(b'\0' * 64, bits=1, width=20000, height=9000, palette=palette_bytes(pal2)),
        '20000x9000 > 2 x MAX_IMAGE_PIXELS (Pillow: DecompressionBombError)')
    add('zero_width.bmp', bmp(b'', bits=24, width=0), 'width 0')
    add('header_truncated.bmp', bmp(b'', bits=24)[:30], 'file ends inside the header')

    write_manifest(OUT, cases, 'gen_pillow_bmp_cases.py')

if __name__ == '__main__':
    main()
