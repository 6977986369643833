#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes PNG and APNG files that probe Pillow 9.4's PngImagePlugin rules (palette indices past
PLTE, missing or odd PLTE, CRCs before and after the image data, short or damaged image data,
repeated IHDR, unknown critical chunks, text and ICC size limits, APNG frame controls), plus what
Pillow does with each: test/fixtures/pillow_decode_cases/png/<file> and manifest.json (the sha256
of numpy.array(Image.open(file).convert('RGB')), size and mode, or the error Pillow raises).
test/image_png.test.ts checks src/image/png.ts against it.

Run with Debian bookworm's python3-pil (Pillow 9.4.0, the version of the golden fixtures):
  /usr/bin/python3 tools/gen_pillow_png_cases.py
"""
import os
import struct
import zlib

import numpy as np

from pillow_cases import case_writer, fresh_dir, write_manifest
from sweep_pillow import base, filter_rows, make_png, png_chunk, png_rows

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases', 'png')
MAGIC = b'\x89PNG\r\n\x1a\n'


def ihdr(w, h, bits, colour, interlace=0):
    return png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, bits, colour, 0, 0, interlace))


def main():
    fresh_dir(OUT)
    cases = {}

    add = case_writer(OUT, cases)

    im = base(17, 9)
    a = np.asarray(im)
    w, h = im.size
    ramp = (np.arange(w * h).reshape(h, w) * 7 % 256).astype(np.uint8)  # indices 0..255
    plte16 = bytes(np.asarray(im.convert('P', palette=1, colors=16).getpalette()[:48], np.uint8))

    # Palette indices past PLTE: Pillow's palette is the grey ramp there (libpng: black).
    add('indices_past_plte.png', make_png(ramp, 8, 3, plte=plte16), '16-entry PLTE, indices up to 255 (grey ramp past it)')
    add('indices_past_plte_4bit.png', make_png(ramp % 16, 4, 3, plte=plte16[:15]), '4-bit, 5-entry PLTE, indices up to 15')
    add('indices_past_plte_interlaced.png', make_png(ramp, 8, 3, plte=plte16[:30], interlace=True), 'interlaced, 10-entry PLTE')
    add('no_plte.png', make_png(ramp, 8, 3), 'palette image without PLTE (the grey ramp)')
    add('plte_49_bytes.png', make_png(ramp, 8, 3, plte=plte16 + b'\x01'), 'PLTE not a multiple of 3 (last byte ignored)')
    add('plte_771_bytes.png', make_png(ramp, 8, 3, plte=bytes(771)), 'PLTE of 257 entries (Pillow: invalid palette size)')
    add('no_plte_trns.png', make_png(ramp, 8, 3, extra=[(b'tRNS', b'\xff\x00')]),
        'no PLTE, one transparent index (Pillow: TypeError in convert)')

    # CRCs: checked before the first IDAT only.
    good = make_png(a, 8, 2, extra=[(b'tEXt', b'Comment\0hello')])
    bad = bytearray(good)
    idat = good.index(b'IDAT')
    n = struct.unpack('>I', good[idat - 4:idat])[0]
    bad[idat + 4 + n] ^= 0xFF  # IDAT's CRC
    add('bad_idat_crc.png', bytes(bad), 'bad IDAT CRC (never checked)')
    bad = bytearray(good)
    t = good.index(b'tEXt')
    bad[t + 4 + 13] ^= 0xFF
    add('bad_text_crc.png', bytes(bad), 'bad tEXt CRC before IDAT (Pillow: broken PNG file)')
    after = make_png(a, 8, 2, after=[(b'tEXt', b'Comment\0hello')])
    t = after.index(b'tEXt')
    bad = bytearray(after)
    bad[t + 4 + 13] ^= 0xFF
    add('bad_text_crc_after_idat.png', bytes(bad), 'bad tEXt CRC after IDAT (never checked)')

    # Image data shorter or longer than the rows.
    raw = filter_rows(png_rows(a, 8, 2), 3, (1, 2, 3, 4))
    row = w * 3 + 1

    def with_idat(*parts, chunks_after=b''):
        return (MAGIC + ihdr(w, h, 8, 2) + b''.join(png_chunk(b'IDAT', p) for p in parts) + chunks_after + png_chunk(b'IEND', b''))
    add('short_data_row_boundary.png', with_idat(zlib.compress(raw[:4 * row])),
        'zlib stream ends after 4 of 9 rows, in the same piece (Pillow: the other rows zero)')
    short = zlib.compress(raw[:4 * row])
    add('short_data_end_in_next_chunk.png', with_idat(short[:-2], short[-2:]),
        "the same stream split so that its end is read after the 4th row's call (Pillow: truncated)")
    add('short_data_mid_row.png', with_idat(zlib.compress(raw[:4 * row + 10])), 'stream ends inside a row (Pillow: truncated)')
    z = zlib.compress(raw)
    add('bad_adler.png', with_idat(z[:-4] + bytes(b ^ 0x55 for b in z[-4:])), 'bad zlib checksum right after the last row (Pillow: broken data stream)')
    add('bad_adler_next_chunk.png', with_idat(z[:-4], bytes(b ^ 0x55 for b in z[-4:])),
        'bad zlib checksum in the next IDAT (never read: Pillow decodes)')
    add('extra_rows.png', with_idat(zlib.compress(raw + raw[:3 * row])), 'more rows of data than the image (ignored)')
    bad_filter = bytearray(raw)
    bad_filter[5 * row] = 7
    add('bad_filter_type.png', with_idat(zlib.compress(bytes(bad_filter))), 'filter type 7 (Pillow: unrecognized data stream contents)')

    # Chunk structure.
    add('two_ihdr.png', MAGIC + ihdr(w, h, 8, 2) + ihdr(w, h - 2, 8, 0) + png_chunk(b'IDAT', zlib.compress(filter_rows(png_rows(a[:h - 2, :, 0], 8, 0), 1, (0,))))
        + png_chunk(b'IEND', b''), 'a second IHDR (grey, 2 rows fewer): its size and mode win')
    unknown = make_png(a, 8, 2, extra=[(b'ABCD', b'critical?')])
    add('unknown_critical_chunk.png', unknown, 'unknown critical chunk ABCD (skipped)')
    add('idat_before_ihdr.png', MAGIC + png_chunk(b'IDAT', zlib.compress(raw)) + ihdr(w, h, 8, 2) + png_chunk(b'IEND', b''),
        'IDAT before IHDR (skipped as unknown; then no image data)')
    add('bad_chunk_name.png', make_png(a, 8, 2, after=[(b'a b!', b'x')]), 'a chunk type that is not 4 letters after IDAT (ends load_end)')
    add('trailing_idat_truncated.png', with_idat(z)[:-12] + struct.pack('>I', 100) + b'IDAT' + b'abc',
        'a later IDAT cut short after the image is complete (Pillow: Truncated File Read in load_end)')

    # Text and ICC limits.
    big = zlib.compress(b'a' * (1024 * 1024 + 1), 9)
    exact = zlib.compress(b'a' * (1024 * 1024), 9)
    add('ztxt_over_1mib.png', make_png(a, 8, 2, extra=[(b'zTXt', b'k\0\0' + big)]), 'zTXt inflating past 1 MiB (Pillow: Decompressed Data Too Large)')
    add('ztxt_1mib.png', make_png(a, 8, 2, extra=[(b'zTXt', b'k\0\0' + exact)]), 'zTXt inflating to exactly 1 MiB (fine)')
    add('itxt_over_1mib.png', make_png(a, 8, 2, extra=[(b'iTXt', b'k\0\x01\0en\0\0' + big)]), 'compressed iTXt past 1 MiB')
    add('iccp_over_1mib.png', make_png(a, 8, 2, extra=[(b'iCCP', b'p\0\0' + big)]), 'iCCP past 1 MiB')
    add('text_over_64mib.png', make_png(a, 8, 2, extra=[(b'zTXt', b'k%d\0\0' % i + exact) for i in range(65)]),
        '65 zTXt chunks of 1 MiB (Pillow: Too much memory used in text chunks)')
    add('ztxt_over_1mib_after_idat.png', make_png(a, 8, 2, after=[(b'zTXt', b'k\0\0' + big)]), 'the same after IDAT (load_end raises it too)')

    # APNG frame controls.
    def apng(fw, fh, fx, fy, seq=0, n=2):
        actl = png_chunk(b'acTL', struct.pack('>II', n, 0))
        fctl = png_chunk(b'fcTL', struct.pack('>IIIIIHHBB', seq, fw, fh, fx, fy, 1, 10, 0, 0))
        frame = a[:fh, :fw] if fw and fh else a  # a 0-wide frame at x 0 is decoded as the whole image
        data = zlib.compress(filter_rows(png_rows(frame, 8, 2), 3, (1, 4)))
        return MAGIC + ihdr(w, h, 8, 2) + actl + fctl + png_chunk(b'IDAT', data) + png_chunk(b'IEND', b'')
    add('apng_first_frame_smaller.png', apng(w - 6, h - 4, 3, 2), 'APNG, first fcTL smaller than IHDR at (3, 2): the rest zero')
    add('apng_frame_zero_width.png', apng(0, h, 0, 0), 'APNG, first frame 0 wide at x 0 (decoded as the whole image)')
    add('apng_bad_sequence.png', apng(w, h, 0, 0, seq=1), 'APNG, first fcTL with sequence 1 (Pillow: frame sequence errors)')
    add('apng_frame_outside.png', apng(w, h, 2, 0), 'APNG, frame past the image (Pillow: invalid frames)')

    write_manifest(OUT, cases, 'gen_pillow_png_cases.py')


if __name__ == '__main__':
    main()
