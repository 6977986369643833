#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes TIFF files that probe Pillow 9.4's TiffImagePlugin: the Orientation tag (every value,
every compression, tiles, planes, several pages), repeated tags (Pillow keeps the last, libtiff
the first), CIELab, Pillow's own uncompressed YCbCr, the headers Pillow accepts; plus what Pillow
does with each: test/fixtures/pillow_decode_cases/tiff/<file> and manifest.json (the sha256 of
numpy.array(Image.open(file).convert('RGB')), size and mode, or the error; from_bytes where
Image.open of the bytes in memory differs). test/image_tiff.test.ts checks src/image/tiff.ts.

Tiles and planes are written by libtiff's tiffcp (Debian's libtiff-tools), if installed.
Run with Debian bookworm's python3-pil (Pillow 9.4.0, the version of the golden fixtures):
  /usr/bin/python3 tools/gen_pillow_tiff_cases.py
"""
import os
import struct

import numpy as np
from PIL import Image

from pillow_cases import case_writer, fresh_dir, write_manifest
from sweep_pillow import base, pil_bytes, raw_tiff, tiff_ifd, tiff_value, tiff_with_ifd, tiffcp

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases', 'tiff')


def with_tag(data, tag, typ, values, replace=True, at_end=False):
    """The file with a tag set (replacing it, or as a second entry when replace is False)."""
    e, big, entries, nxt = tiff_ifd(data)
    if replace:
        entries = [x for x in entries if x[0] != tag]
    entry = [tag, typ, len(values), tiff_value(e, typ, values)]
    if at_end:
        entries.append(entry)
    else:
        entries.append(entry)
        entries.sort(key=lambda x: x[0])
    return tiff_with_ifd(data, e, big, entries, nxt)


def main():
    fresh_dir(OUT)
    cases = {}

    add = case_writer(OUT, cases)

    im = base(13, 7, (190, 95))  # not square: a turn changes the size
    a = np.asarray(im)

    # Orientation: every value, every compression Pillow writes, tiles and planes (tiffcp).
    sources = {
        'raw': pil_bytes(im, 'TIFF'),
        'lzw': pil_bytes(im, 'TIFF', compression='tiff_lzw'),
        'deflate': pil_bytes(im, 'TIFF', compression='tiff_adobe_deflate'),
        'packbits': pil_bytes(im, 'TIFF', compression='packbits'),
        'jpeg': pil_bytes(im, 'TIFF', compression='jpeg'),
        'group4': pil_bytes(im.convert('1'), 'TIFF', compression='group4'),
        'raw_strips': raw_tiff(a, 2, 8, rows_per_strip=2),
        'lzw_tiles': tiffcp(pil_bytes(im, 'TIFF'), '-c', 'lzw:2', '-t', '-w', '16', '-l', '16'),
        'raw_planes': tiffcp(pil_bytes(im, 'TIFF'), '-c', 'none', '-p', 'separate'),
    }
    for comp, data in sources.items():
        if data is None:
            continue
        for o in range(1, 9):
            if comp not in ('raw', 'lzw') and o not in (3, 6, 8):
                continue
            add(f'orientation{o}_{comp}.tif', with_tag(data, 274, 3, [o]), f'Orientation {o}, {comp}')
    for o in (0, 9, 65535):
        add(f'orientation{o}_lzw.tif', with_tag(sources['lzw'], 274, 3, [o]), f'Orientation {o} (no such value: not turned)')
    pages = pil_bytes(im, 'TIFF', save_all=True, append_images=[im.transpose(Image.FLIP_LEFT_RIGHT)])
    add('orientation6_two_pages.tif', with_tag(pages, 274, 3, [6]), 'Orientation 6 on the first of two pages (first page)')
    add('orientation_long_type.tif', with_tag(sources['raw'], 274, 4, [8]), 'Orientation 8 stored as LONG')
    add('orientation_repeated.tif', with_tag(with_tag(sources['lzw'], 274, 3, [3]), 274, 3, [6], replace=False, at_end=True),
        'Orientation 3 then 6: Pillow turns by the last (6)')

    # Repeated tags: Pillow keeps the last value, libtiff (so libvips) the first.
    red = np.zeros((7, 13, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((7, 13, 3), np.uint8)
    blue[..., 2] = 200
    two = raw_tiff(np.concatenate([red, blue]), 2, 8)  # 14 rows: red then blue
    e, big, entries, nxt = tiff_ifd(two)
    offset = tiff_num_first(e, entries, 273)
    entries = [x for x in entries if x[0] not in (257, 278, 279)]
    entries += [[257, 4, 1, struct.pack(e + 'I', 7)], [278, 4, 1, struct.pack(e + 'I', 7)], [279, 4, 1, struct.pack(e + 'I', 7 * 13 * 3)]]
    entries = [x for x in entries if x[0] != 273] + [[273, 4, 1, struct.pack(e + 'I', offset)], [273, 4, 1, struct.pack(e + 'I', offset + 7 * 13 * 3)]]
    entries.sort(key=lambda x: x[0])
    add('two_strip_offsets.tif', tiff_with_ifd(two, e, big, entries, nxt), 'two StripOffsets, red then blue: Pillow shows the blue')
    add('two_widths_raw.tif', with_tag(sources['raw'], 256, 3, [11], replace=False, at_end=True),
        'ImageWidth 13 then 11, uncompressed: Pillow reads 11 pixels a row')
    add('two_widths_lzw.tif', with_tag(sources['lzw'], 256, 3, [11], replace=False, at_end=True),
        "ImageWidth 13 then 11, LZW: Pillow's size disagrees with libtiff's (Pillow: error)")
    add('two_photometrics_lzw.tif', with_tag(pil_bytes(im.convert('L'), 'TIFF', compression='tiff_lzw'), 262, 3, [0], replace=False, at_end=True),
        'Photometric MinIsBlack then MinIsWhite, LZW: Pillow inverts libtiff\'s samples')

    # Colour spaces.
    add('lab.tif', pil_bytes(im.convert('LAB'), 'TIFF'), 'CIELab 8-bit, uncompressed (LittleCMS to sRGB)')
    add('lab_lzw.tif', pil_bytes(im.convert('LAB'), 'TIFF', compression='tiff_lzw'), 'CIELab 8-bit, LZW')
    add('lab_planes.tif', tiffcp(pil_bytes(im.convert('LAB'), 'TIFF'), '-c', 'none', '-p', 'separate'), 'CIELab in planes')
    add('ycbcr_pillow.tif', pil_bytes(im.convert('YCbCr'), 'TIFF'), "Pillow's own uncompressed YCbCr (Pillow cannot read it back)")
    add('ycbcr_pillow_padded.tif', pil_bytes(im.convert('YCbCr'), 'TIFF') + bytes(200),
        "the same with data after it (Pillow reads 4 bytes a pixel: garbage, not refused)")
    add('rgba_associated_lzw.tif', tiffcp(raw_tiff(np.dstack([a // 2, np.full((7, 13), 128, np.uint8)]), 2, 8, extra=(1,)), '-c', 'lzw'),
        'RGBA with associated alpha, LZW (Pillow unpremultiplies in integers)')

    # Headers Pillow accepts.
    be = raw_tiff(a, 2, 8, e='>')
    add('header_invalid_mm.tif', b'MM\x2a\x00' + be[4:], 'big-endian with the bytes of 42 swapped (Pillow accepts the header)')
    be_lzw = tiffcp(be, '-c', 'lzw')
    add('header_invalid_mm_lzw.tif', be_lzw and b'MM\x2a\x00' + be_lzw[4:], 'the same, LZW: libtiff cannot open it (Pillow: error)')
    add('bigtiff_big_endian.tif', tiffcp(be, '-8', '-B'), 'big-endian BigTIFF (Pillow 9.4 reads the header as a classic one)')

    write_manifest(OUT, cases, 'gen_pillow_tiff_cases.py')


def tiff_num_first(e, entries, tag):
    t, typ, count, value = next(x for x in entries if x[0] == tag)
    return struct.unpack(e + ('I' if typ == 4 else 'H'), value[:4 if typ == 4 else 2])[0]


if __name__ == '__main__':
    main()
