#!/usr/bin/env python3
"""DEV-ONLY fixture generator (the project never needs Python at run/test time).

Writes JPEG files that Pillow 9.4 refuses although libjpeg only warns about them (or libvips
never reads that far), and some it opens: markers its own parser does not know, markers and scans
after the image data, progressive data without EOI, an early EOI in a progressive file; plus what
Pillow does with each: test/fixtures/pillow_decode_cases/jpeg/<file> and manifest.json.
test/image_jpeg.test.ts checks src/image/jpeg.ts (with libvips' decoding) against it.

Run with Debian bookworm's python3-pil (Pillow 9.4.0, libjpeg-turbo 2.1.5):
  /usr/bin/python3 tools/gen_pillow_jpeg_cases.py
"""
import os
import struct

from pillow_cases import case_writer, fresh_dir, write_manifest
from sweep_pillow import base, jpeg_segments, pil_bytes

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'pillow_decode_cases', 'jpeg')


def main():
    fresh_dir(OUT)
    cases = {}

    add = case_writer(OUT, cases)

    im = base(23, 17)
    baseline = pil_bytes(im, 'JPEG', quality=90)
    progressive = pil_bytes(im, 'JPEG', quality=90, progressive=True)
    segs = jpeg_segments(baseline)
    heads, scan = segs[:-1], segs[-1][1]
    join = lambda hs, sc: b'\xff\xd8' + b''.join(x for _, x in hs) + sc
    add('baseline.jpg', baseline, 'plain baseline JPEG')
    add('junk_between_markers.jpg', join(heads[:2] + [(0, b'abc\x00')] + heads[2:], scan), 'bytes between two markers (both skip them)')
    add('tem_marker.jpg', join(heads[:2] + [(1, b'\xff\x01')] + heads[2:], scan), 'TEM marker FF01 (libjpeg skips it; Pillow: no marker found)')
    add('marker_ff02.jpg', join(heads[:2] + [(2, b'\xff\x02\x00\x04ab')] + heads[2:], scan), 'marker FF02 (Pillow: no marker found)')
    eoi = scan[:-2]
    add('unknown_marker_after_scan.jpg', join(heads, eoi + b'\xff\x02\x00\x02\xff\xd9'), 'marker FF02 after the scan data (libjpeg: unknown marker)')
    sos = next(x for m, x in segs if m == 0xDA)
    add('second_sos_after_baseline.jpg', join(heads, eoi + sos + b'\x00' * 8 + b'\xff\xd9'),
        'another scan after a single-scan image (libjpeg: EOI expected)')
    add('comment_after_scan.jpg', join(heads, eoi + b'\xff\xfe\x00\x05abc\xff\xd9'), 'a comment after the scan data (fine)')
    add('no_eoi_baseline_garbage.jpg', join(heads, eoi + b'\xff\xd9' + b'trailing garbage'), 'data after EOI (fine)')
    psegs = jpeg_segments(progressive)
    pheads, pscan = psegs[:-1], psegs[-1][1]
    add('progressive.jpg', progressive, 'progressive JPEG')
    add('progressive_no_eoi.jpg', progressive[:-2], 'progressive JPEG without EOI (Pillow: image file is truncated)')
    last_sos = progressive.rindex(b'\xff\xda')
    add('progressive_early_eoi.jpg', progressive[:last_sos] + b'\xff\xd9',
        'progressive JPEG ending before its last scan: decodable, but block smoothing differs between libjpeg versions (refused here)')
    sof = next(i for i, (m, _) in enumerate(heads) if m == 0xC0)
    twelve = bytearray(heads[sof][1])
    twelve[4] = 12
    add('twelve_bit.jpg', join(heads[:sof] + [(0xC0, bytes(twelve))] + heads[sof + 1:], scan), '12-bit SOF (Pillow: cannot handle 12-bit layers)')
    write_manifest(OUT, cases, 'gen_pillow_jpeg_cases.py', refused_here={'progressive_early_eoi.jpg'})


if __name__ == '__main__':
    main()
