#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes small images in modes the golden fixtures do not cover, plus what Pillow does with them:
test/fixtures/pillow_decode_cases/<file> and manifest.json with, per file, the sha256 of
numpy.array(Image.open(file).convert('RGB')) (LLaVA's loader) and Pillow's mode.
test/image_decode.test.ts checks src/image/decode.ts against it.

Run once with Debian bookworm's python3-pil (Pillow 9.4.0, libjpeg-turbo 2.1.5 = the versions
of the golden fixtures):  /usr/bin/python3 tools/gen_pillow_decode_cases.py
"""
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SRC = os.path.join(ROOT, 'test', 'fixtures', 'images', 'chelsea.png')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases')


# Files Pillow decodes but decode.ts refuses (an ImageError rather than pixels that differ): none.
REFUSED_HERE = set()


def main():
    os.makedirs(OUT, exist_ok=True)
    base = Image.open(SRC).convert('RGB').crop((200, 100, 223, 117))  # 23 x 17, odd sizes
    arr = np.asarray(base)
    w, h = base.size
    cases = {}

    def save(name, im, note, **kw):
        im.save(os.path.join(OUT, name), **kw)
        cases[name] = note

    save('rgb_444.jpg', base, 'JPEG 4:4:4', quality=90, subsampling=0)
    save('rgb_422.jpg', base, 'JPEG 4:2:2', quality=90, subsampling=1)
    save('rgb_420_progressive.jpg', base, 'progressive JPEG 4:2:0', quality=90, progressive=True)
    save('gray.jpg', base.convert('L'), 'greyscale JPEG', quality=90)
    save('cmyk.jpg', base.convert('CMYK'), 'Adobe CMYK JPEG (Pillow: naive CMYK->RGB, no ICC)', quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW; Image.open ignores it
    save('exif_orientation6.jpg', base, 'EXIF Orientation 6 (not applied)', quality=90, exif=exif.tobytes())
    save('la.png', base.convert('LA'), 'PNG LA (alpha dropped)')
    rgba = base.copy()
    rgba.putalpha(Image.fromarray((np.arange(w * h).reshape(h, w) * 7 % 256).astype(np.uint8)))
    save('rgba_varying_alpha.png', rgba, 'PNG RGBA, colour under alpha 0 kept')
    pal = base.convert('P', palette=Image.ADAPTIVE, colors=16)
    save('p_transparency.png', pal, 'PNG P with tRNS (transparency ignored)', transparency=3)
    save('bilevel.png', base.convert('1'), 'PNG 1-bit')
    # 16-bit: Pillow keeps the high byte of RGB(A) and grey+alpha (RGB;16B, LA;16B rawmodes), but
    # opens grey as mode I (PNG) / I;16 (TIFF), whose convert('RGB') clips at 255.
    rgb16 = (arr.astype(np.uint16) * 257 + np.arange(w)[None, :, None].astype(np.uint16)).astype('>u2')
    png16 = _png16(rgb16)
    open(os.path.join(OUT, 'rgb16.png'), 'wb').write(png16)
    cases['rgb16.png'] = 'PNG RGB 16-bit (Pillow: high byte)'
    g16 = (np.asarray(base.convert('L')).astype(np.uint16) * 257).astype('>u2')
    open(os.path.join(OUT, 'gray16.png'), 'wb').write(_png16(g16))
    cases['gray16.png'] = 'PNG grey 16-bit (Pillow mode I: convert clips at 255)'
    # Values from 0 to ~1100: below 256 they survive the clip, above they become 255.
    ramp16 = (np.asarray(base.convert('L')).astype(np.uint16) * 4 + np.arange(w)[None, :]).astype(np.uint16)
    alpha16 = (np.arange(w * h).reshape(h, w) * 2999 % 65536).astype(np.uint16)
    for name, data, note in [
        ('gray16_ramp.png', _png16(ramp16), 'PNG grey 16-bit, values 0..1100 (Pillow: clipped at 255)'),
        ('gray16_trns.png', _png16(ramp16, trns=struct.pack('>H', 300)), 'PNG grey 16-bit with tRNS (Pillow mode I: clipped)'),
        ('la16.png', _png16(np.stack([ramp16 * 50, alpha16], 2), colour=4), 'PNG grey+alpha 16-bit (Pillow mode RGBA: high byte)'),
        ('rgba16.png', _png16(np.concatenate([rgb16, alpha16[:, :, None]], 2), colour=6), 'PNG RGBA 16-bit (high byte)'),
        ('rgb16_trns.png', _png16(rgb16, trns=struct.pack('>HHH', *rgb16[0, 0])), 'PNG RGB 16-bit with tRNS (high byte)'),
        ('gray16_ramp.tif', _tiff16(ramp16), 'TIFF grey 16-bit little-endian (Pillow mode I;16: clipped)'),
        ('gray16_ramp_be.tif', _tiff16(ramp16, big_endian=True), 'TIFF grey 16-bit big-endian (Pillow mode I;16B: clipped)'),
        ('rgb16.tif', _tiff16(rgb16), 'TIFF RGB 16-bit (high byte)'),
        ('rgba16.tif', _tiff16(np.concatenate([rgb16, alpha16[:, :, None]], 2)), 'TIFF RGBA 16-bit (high byte)'),
        ('gray16_alpha.tif', _tiff16(np.stack([ramp16, alpha16], 2)), 'TIFF grey+alpha 16-bit (Pillow cannot open it)'),
        ('lab16.tif', _tiff16(rgb16, photometric=8), 'TIFF CIELab 16-bit (Pillow cannot open it; libvips would convert it)'),
    ]:
        open(os.path.join(OUT, name), 'wb').write(data)
        cases[name] = note
    Image.frombytes('I;16', (w, h), ramp16.astype('<u2').tobytes()).save(
        os.path.join(OUT, 'gray16_lzw.tif'), compression='tiff_lzw')
    cases['gray16_lzw.tif'] = 'TIFF grey 16-bit, LZW, written by Pillow (clipped)'

    # More PNG, TIFF and WebP variants (sharp decodes them; each checked against Pillow).
    grey = base.convert('L')
    for bits in (2, 4):
        save(f'gray{bits}bit.png', grey.point(lambda v, b=bits: (v >> (8 - b)) * (255 // (2 ** b - 1))),
             f'PNG grey {bits}-bit (scaled to 8 bits)', bits=bits)
    save('p4bit.png', base.convert('P', palette=Image.ADAPTIVE, colors=16), 'PNG palette 4-bit', bits=4)
    open(os.path.join(OUT, 'rgb_interlaced.png'), 'wb').write(_png8_adam7(arr))
    cases['rgb_interlaced.png'] = 'PNG RGB, Adam7 interlaced'
    save('gray_trns.png', grey, 'PNG grey with tRNS (transparency ignored)', transparency=100)
    save('rgb_trns.png', base, 'PNG RGB with tRNS (transparency ignored)', transparency=tuple(int(v) for v in arr[0, 0]))
    save('rgb_lzw.tif', base, 'TIFF RGB, LZW', compression='tiff_lzw')
    save('rgb_jpeg.tif', base, 'TIFF JPEG-compressed (YCbCr)', compression='jpeg')
    save('p_packbits.tif', pal, 'TIFF palette, PackBits', compression='packbits')
    save('cmyk.tif', base.convert('CMYK'), 'TIFF CMYK (naive CMYK->RGB)')
    save('la_deflate.tif', base.convert('LA'), 'TIFF grey+alpha, deflate', compression='tiff_adobe_deflate')
    save('rgba.tif', rgba, 'TIFF RGBA (alpha dropped)')
    save('bilevel.tif', base.convert('1'), 'TIFF 1-bit')
    save('two_pages.tif', base, 'TIFF with 2 pages (first page)', save_all=True, append_images=[base.transpose(Image.FLIP_LEFT_RIGHT)])
    fvals = np.linspace(-20.0, 300.0, w * h, dtype=np.float32).reshape(h, w)
    save('float32.tif', Image.fromarray(fvals, 'F'), 'TIFF float32 grey (Pillow mode F: truncated, clipped)')
    ivals = (np.arange(w * h, dtype=np.int32).reshape(h, w) * 7 - 300)
    save('int32.tif', Image.fromarray(ivals, 'I'), 'TIFF int32 grey (Pillow mode I: clipped)')
    open(os.path.join(OUT, 'rgb_bigtiff.tif'), 'wb').write(_bigtiff8(arr))
    cases['rgb_bigtiff.tif'] = 'BigTIFF RGB'
    save('lab.tif', base.convert('LAB'), 'TIFF CIELab (Pillow converts it with LittleCMS)')
    save('lossy.webp', base, 'WebP lossy', quality=80)
    save('lossless.webp', base, 'WebP lossless', lossless=True)
    save('alpha_lossy.webp', rgba, 'WebP lossy with alpha (alpha dropped)', quality=80)
    save('alpha_lossless.webp', rgba, 'WebP lossless with alpha, exact (colour under alpha 0 kept)', lossless=True, exact=True)
    save('animated.webp', base, 'animated WebP (first frame)', save_all=True,
         append_images=[base.transpose(Image.FLIP_LEFT_RIGHT)], duration=100)

    manifest = {
        '_note': 'generated by tools/gen_pillow_decode_cases.py with Pillow ' + PIL.__version__
        + '; rgb_u8_sha256 = sha256(numpy.array(Image.open(file).convert("RGB")).tobytes()); '
        + 'pillow_error = the exception Pillow raises instead; refused_here = decode.ts refuses it although Pillow reads it; '
        + 'high_byte_rgb_u8_sha256 (16-bit files) = sha256 of the RGB bytes when every 16-bit sample maps to v >> 8',
    }
    for name, note in cases.items():
        entry = {'note': note}
        try:
            im = Image.open(os.path.join(OUT, name))
            rgb = np.asarray(im.convert('RGB'))
            entry.update(mode=im.mode, size_wh=list(im.size), rgb_u8_sha256=hashlib.sha256(rgb.tobytes()).hexdigest())
        except Exception as e:  # noqa: BLE001 - what Pillow raises is the expectation
            entry['pillow_error'] = f'{type(e).__name__}: {e}'.replace(OUT + os.sep, '')
        if name in REFUSED_HERE:
            entry['refused_here'] = True
        if name == 'rgb16.png':
            entry['high_byte_rgb_u8_sha256'] = hashlib.sha256((rgb16.astype(np.uint16) >> 8).astype(np.uint8).tobytes()).hexdigest()
        if name in ('gray16.png', 'gray16_ramp.png', 'gray16_ramp.tif'):
            g = ((g16 if name == 'gray16.png' else ramp16).astype(np.uint16) >> 8).astype(np.uint8)
            entry['high_byte_rgb_u8_sha256'] = hashlib.sha256(np.repeat(g[:, :, None], 3, axis=2).tobytes()).hexdigest()
        manifest[name] = entry
    with open(os.path.join(OUT, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write('\n')


def _png16(a, colour=None, trns=None):
    """A 16-bit PNG (grey if 2-D, RGB if H x W x 3, or the given colour type) written by hand:
    Pillow cannot write RGB;16."""
    h, w = a.shape[:2]
    if colour is None:
        colour = 0 if a.ndim == 2 else 2
    raw = b''.join(b'\x00' + a[y].astype('>u2').tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, colour, 0, 0, 0))
            + (chunk(b'tRNS', trns) if trns else b'')
            + chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b''))


def _png8_adam7(a):
    """An 8-bit RGB Adam7-interlaced PNG written by hand: Pillow cannot write interlaced PNGs."""
    h, w = a.shape[:2]
    raw = b''
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = a[y0::dy, x0::dx]
        if sub.size:
            raw += b''.join(b'\x00' + row.tobytes() for row in sub)

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 1))
            + chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b''))


def _bigtiff8(a):
    """An uncompressed 8-bit RGB BigTIFF (64-bit offsets) written by hand."""
    h, w = a.shape[:2]
    pixels = a.astype(np.uint8).tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2), (273, 16, 1, None),
               (277, 3, 1, 3), (278, 3, 1, h), (279, 16, 1, len(pixels)), (284, 3, 1, 1)]
    ifd_size = 8 + 20 * len(entries) + 8
    data_offset = 16 + ifd_size
    out = b''
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack('<HHQHHHH', tag, typ, count, 8, 8, 8, 0)
            continue
        if tag == 273:
            value = data_offset
        out += struct.pack('<HHQQ', tag, typ, count, value)
    return b'II\x2b\x00' + struct.pack('<HHQ', 8, 0, 16) + struct.pack('<Q', len(entries)) + out + struct.pack('<Q', 0) + pixels


def _tiff16(a, big_endian=False, photometric=None):
    """An uncompressed 16-bit TIFF (grey, grey+alpha, RGB or RGBA by sample count; extra samples
    are unassociated alpha) written by hand: Pillow cannot write most of these."""
    h, w = a.shape[:2]
    spp = 1 if a.ndim == 2 else a.shape[2]
    e = '>' if big_endian else '<'
    pixels = a.astype(e + 'u2').tobytes()
    if photometric is None:
        photometric = 1 if spp <= 2 else 2
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, photometric),
               (273, 4, 1, 0), (277, 3, 1, spp), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    if spp in (2, 4):
        entries.append((338, 3, 1, 2))
    entries.sort()
    bps_offset = None
    if spp > 1:  # BitsPerSample needs spp values: stored after the IFD
        entries = [(t, ty, spp if t == 258 else c, v) for (t, ty, c, v) in entries]
    ifd_size = 2 + 12 * len(entries) + 4
    extra = 8 + ifd_size
    data_offset = extra + (2 * spp if spp > 2 else 0)
    out = b''
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_offset
        if tag == 258 and spp > 2:
            bps_offset = extra
            out += struct.pack(e + 'HHII', tag, typ, count, bps_offset)
        elif tag == 258 and spp == 2:
            out += struct.pack(e + 'HHIHH', tag, typ, count, 16, 16)
        elif typ == 3:
            out += struct.pack(e + 'HHIHH', tag, typ, count, value, 0)
        else:
            out += struct.pack(e + 'HHII', tag, typ, count, value)
    head = (b'MM\x00\x2a' if big_endian else b'II\x2a\x00') + struct.pack(e + 'I', 8)
    ifd = struct.pack(e + 'H', len(entries)) + out + struct.pack(e + 'I', 0)
    bps = struct.pack(e + 'H' * spp, *([16] * spp)) if spp > 2 else b''
    return head + ifd + bps + pixels


if __name__ == '__main__':
    main()
