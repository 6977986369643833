/**
 * Which JPEGs Pillow 9.4 refuses, for the libvips decoding of the others to stand for Pillow's.
 * libvips and Pillow both decode with libjpeg(-turbo), but Pillow first parses the markers up to
 * the first scan itself (JpegImagePlugin._open), and then drives libjpeg through the whole file
 * (jpeg_finish_decompress after the last row, every scan of a progressive file before the first
 * row), where libvips stops reading after the last row and treats libjpeg's warnings as harmless.
 * So Pillow also refuses:
 * - markers its parser does not know (FF01 TEM, FF02..FFBF), an SOF with a precision other than 8
 *   or a component count other than 1, 3, 4, a truncated marker segment, a short DQT, a short
 *   SOF component list or ICC segment;
 * - after the scan data: a marker libjpeg does not accept there (an unknown one, a second SOI or
 *   SOF, an SOS after a single-scan image, a malformed DHT/DQT/DRI/DAC/SOS), invalid progression
 *   parameters, a Huffman table a later scan uses but nobody defined;
 * - a multi-scan (progressive) file whose data ends before EOI ("image file is truncated").
 * And a progressive file whose scans leave coefficients unknown (an early EOI) decodes with
 * libjpeg's block smoothing, which differs between Pillow's libjpeg-turbo 2.1.5 and libvips'
 * mozjpeg: refused here, rather than different pixels.
 */

const SOF_SUPPORTED = new Set([0xc0, 0xc1, 0xc2, 0xc9, 0xca]);
const SOF_UNSUPPORTED = new Set([0xc3, 0xc5, 0xc6, 0xc7, 0xc8, 0xcb, 0xcd, 0xce, 0xcf]);

/** Pillow's MARKER table: the codes its parser knows (0xFFC0..0xFFFE). */
const pillowKnows = (m: number) => m >= 0xc0 && m <= 0xfe;
/** Pillow's handlers: markers with a length-prefixed segment it reads (the others have no parameters). */
const pillowReads = (m: number) => !((m >= 0xd0 && m <= 0xd9) || m === 0xc8 || (m >= 0xf0 && m <= 0xfd));

interface Frame {
  components: number[];
  progressive: boolean;
}

function u16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

/** Why Pillow 9.4 refuses this JPEG (a phrase), or null when it decodes it. */
export function jpegRefusal(file: Uint8Array): string | null {
  return pillowOpen(file) ?? libjpegAfterFirstScan(file);
}

/** JpegImageFile._open: Pillow's own walk over the markers up to the first SOS. */
function pillowOpen(file: Uint8Array): string | null {
  let pos = 3;
  let s: number[] = [0xff];
  let layers = 0;
  let width = 0;
  let height = 0;
  const icc: Uint8Array[] = [];
  const read1 = () => (pos < file.length ? [file[pos++]] : []);
  for (;;) {
    if (s.length === 0) return 'the file ends before the image data (Pillow: cannot identify image file)';
    let i = s[0];
    if (i === 0xff) {
      s = [...s, ...read1()];
      if (s.length < 2) return 'the file ends inside a marker (Pillow: cannot identify image file)';
      i = (s[0] << 8) | s[1];
    } else {
      s = read1();
      continue;
    }
    if (i >= 0xffc0 && pillowKnows(i & 0xff)) {
      const m = i & 0xff;
      if (pillowReads(m)) {
        if (pos + 2 > file.length) return 'a marker segment is cut short (Pillow: cannot identify image file)';
        const n = u16(file, pos) - 2;
        pos += 2;
        const start = pos;
        if (n > 0) {
          if (pos + n > file.length)
            return 'a marker segment runs past the end of the file (Pillow: Truncated File Read)';
          pos += n;
        }
        const seg = file.subarray(start, start + Math.max(0, n));
        if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
          // SOF (Pillow also counts DHP 0xDE as one)
          const why = pillowSof(seg, icc);
          if (typeof why === 'string') return why;
          [width, height, layers] = why;
          icc.length = 0;
        } else if (m === 0xde) {
          const why = pillowSof(seg, icc);
          if (typeof why === 'string') return why;
          [width, height, layers] = why;
          icc.length = 0;
        } else if (m === 0xdb) {
          let q = seg;
          while (q.length) {
            const qtLength = 1 + (q[0] >> 4 === 0 ? 1 : 2) * 64;
            if (q.length < qtLength) return 'bad quantization table marker (Pillow: cannot identify image file)';
            q = q.subarray(qtLength);
          }
        } else if (m === 0xe2 && String.fromCharCode(...seg.subarray(0, 12)) === 'ICC_PROFILE\0') {
          icc.push(seg);
        }
      }
      if (m === 0xda) {
        if (!layers || width <= 0 || height <= 0)
          return 'no image size before the scan (Pillow: cannot identify image file)';
        return null;
      }
      s = read1();
    } else if (i === 0xffff) {
      s = [0xff];
    } else if (i === 0xff00) {
      s = read1();
    } else {
      return `marker 0x${i.toString(16)} is not one Pillow knows (Pillow: no marker found)`;
    }
  }
}

/** Pillow's SOF handler: [width, height, layers], or why it raises. */
function pillowSof(seg: Uint8Array, icc: Uint8Array[]): [number, number, number] | string {
  if (seg.length < 5) return 'SOF segment too short (Pillow: cannot identify image file)';
  const height = u16(seg, 1);
  const width = u16(seg, 3);
  if (seg[0] !== 8) return `${seg[0]}-bit JPEG (Pillow: cannot handle ${seg[0]}-bit layers)`;
  if (seg.length < 6) return 'SOF segment too short (Pillow: cannot identify image file)';
  const layers = seg[5];
  if (layers !== 1 && layers !== 3 && layers !== 4)
    return `JPEG with ${layers} components (Pillow: cannot handle ${layers}-layer images)`;
  if (icc.length) {
    const sorted = [...icc].sort(compareBytes);
    if (sorted[0].length < 14) return 'ICC profile segment cut short (Pillow: cannot identify image file)';
  }
  if ((seg.length - 6) % 3 !== 0) return 'SOF component list cut short (Pillow: cannot identify image file)';
  return [width, height, layers];
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * libjpeg's reading from the start, as Pillow's decoder drives it: the header (whose errors libvips
 * meets too), then the scans and the markers after them to EOI.
 */
function libjpegAfterFirstScan(file: Uint8Array): string | null {
  let pos = 2; // after SOI
  let frame: Frame | null = null;
  let multiScan = false;
  let scans = 0;
  const dc = new Set<number>();
  const ac = new Set<number>();
  /** Per component and coefficient: whether a scan brought its last bit (Al = 0). */
  let known: boolean[][] = [];
  /** The next marker at or after `p` (libjpeg's next_marker: any bytes, FF fill, FF00 skipped). */
  const nextMarker = (p: number): [number, number] | null => {
    for (;;) {
      const f = file.indexOf(0xff, p);
      if (f < 0) return null;
      let q = f + 1;
      while (q < file.length && file[q] === 0xff) q++;
      if (q >= file.length) return null;
      if (file[q] !== 0) return [file[q], q + 1];
      p = q + 1;
    }
  };
  /** End of a scan's entropy data: the first marker that is not an RST. */
  const scanEnd = (p: number): [number, number] | null => {
    for (;;) {
      const m = nextMarker(p);
      if (!m) return null;
      if (m[0] >= 0xd0 && m[0] <= 0xd7) {
        p = m[1];
        continue;
      }
      return m;
    }
  };
  let inScanData = false;
  for (;;) {
    let found: [number, number] | null;
    if (inScanData) {
      found = scanEnd(pos);
      inScanData = false;
    } else {
      found = nextMarker(pos);
    }
    if (!found) {
      // Out of data before EOI: a single-scan image has all its rows (libjpeg then only looks for
      // EOI); a multi-scan one is read to EOI before any row.
      if (scans === 0) return null; // libvips meets the same truncation
      return multiScan
        ? 'the data ends before EOI in a multi-scan (progressive) JPEG (Pillow: image file is truncated)'
        : null;
    }
    const [m, after] = found;
    pos = after;
    // A segment cut short by the end of the file: libjpeg waits for more data. After the rows of a
    // single-scan image Pillow no longer cares; a multi-scan one never got its rows.
    const cut = () =>
      scans && multiScan
        ? 'the data ends inside a marker segment of a multi-scan (progressive) JPEG (Pillow: image file is truncated)'
        : null;
    const length = pos + 2 <= file.length ? u16(file, pos) : -1;
    if (m === 0xd9) break; // EOI
    if (m === 0xd8) {
      if (scans) return 'a second SOI after the image data (libjpeg: JERR_SOI_DUPLICATE)';
      continue;
    }
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) continue;
    if (SOF_SUPPORTED.has(m)) {
      if (frame) return scans ? 'a second SOF after the image data (libjpeg: JERR_SOF_DUPLICATE)' : null;
      if (length < 0 || pos + length > file.length) return null;
      const n = file[pos + 7];
      if (length !== n * 3 + 8) return null; // libvips meets it too
      frame = { components: [], progressive: m === 0xc2 || m === 0xca };
      for (let k = 0; k < n; k++) frame.components.push(file[pos + 8 + 3 * k]);
      known = frame.components.map(() => new Array<boolean>(64).fill(false));
      pos += length;
      continue;
    }
    if (SOF_UNSUPPORTED.has(m))
      return scans ? `unsupported SOF 0x${m.toString(16)} after the image data (libjpeg)` : null;
    // read_markers dispatches on the marker before reading its length: an unknown one fails at once.
    const withLength =
      m === 0xda ||
      m === 0xc4 ||
      m === 0xdb ||
      m === 0xdd ||
      m === 0xcc ||
      m === 0xfe ||
      m === 0xdc ||
      (m >= 0xe0 && m <= 0xef);
    if (!withLength)
      return scans ? `marker 0x${m.toString(16)} where libjpeg accepts none (libjpeg: JERR_UNKNOWN_MARKER)` : null;
    if (length < 0) return cut();
    // libjpeg reads a segment byte by byte, failing at the first bad value, waiting at the end of the data.
    let p = pos + 2;
    const have = (n: number) => p + n <= file.length;
    const why = (reason: string) => (scans ? reason : null); // before the first scan libvips meets the same error
    switch (m) {
      case 0xda: {
        if (!frame) return null;
        if (!have(1)) return cut();
        const n = file[p++];
        if (length !== n * 2 + 6 || n < 1 || n > 4) return why('a malformed SOS (libjpeg: JERR_BAD_LENGTH)');
        const comps: number[] = [];
        const tables: number[] = [];
        for (let k = 0; k < n; k++) {
          if (!have(2)) return cut();
          const id = file[p];
          const ci = frame.components.findIndex((c, idx) => c === id && idx < 4 && !comps.includes(idx));
          if (ci < 0) return why('an SOS naming an unknown or repeated component (libjpeg: JERR_BAD_COMPONENT_ID)');
          comps.push(ci);
          tables.push(file[p + 1]);
          p += 2;
        }
        if (!have(3)) return cut();
        const [ss, se, ah, al] = [file[p], file[p + 1], file[p + 2] >> 4, file[p + 2] & 15];
        if (scans === 0) {
          multiScan = frame.progressive || n < frame.components.length;
        } else {
          if (!multiScan) return 'another scan after a single-scan image (libjpeg: JERR_EOI_EXPECTED)';
          if (frame.progressive) {
            let bad = ss === 0 ? se !== 0 : ss > se || se >= 64 || n !== 1;
            if (ah !== 0 && al !== ah - 1) bad = true;
            if (al > 13) bad = true;
            if (bad) return 'invalid progressive scan parameters (libjpeg: JERR_BAD_PROGRESSION)';
          }
          // The scan's Huffman tables must exist (DC refinement scans use none).
          for (const t of tables) {
            const needDc = !frame.progressive || (ss === 0 && ah === 0);
            const needAc = !frame.progressive || ss !== 0;
            if ((needDc && !dc.has(t >> 4)) || (needAc && !ac.has(t & 15)))
              return 'a scan uses an undefined Huffman table (libjpeg: JERR_NO_HUFF_TABLE)';
          }
        }
        if (al === 0) {
          for (const ci of comps)
            for (let k = frame.progressive ? ss : 0; k <= (frame.progressive ? Math.min(se, 63) : 63); k++)
              known[ci][k] = true;
        }
        scans++;
        pos = p + 3;
        inScanData = true;
        break;
      }
      case 0xc4: {
        let left = length - 2;
        while (left > 16) {
          if (!have(17)) return cut();
          const index = file[p];
          let count = 0;
          for (let k = 1; k <= 16; k++) count += file[p + k];
          left -= 17;
          if (count > 256 || count > left) return why('a bad Huffman table (libjpeg: JERR_BAD_HUFF_TABLE)');
          if (!have(17 + count)) return cut();
          const t = index & 0x10 ? index - 0x10 : index;
          if (t < 0 || t >= 4) return why('a Huffman table index out of range (libjpeg: JERR_DHT_INDEX)');
          (index & 0x10 ? ac : dc).add(t);
          p += 17 + count;
          left -= count;
        }
        if (left !== 0) return why('a DHT of the wrong length (libjpeg: JERR_BAD_LENGTH)');
        pos = p;
        break;
      }
      case 0xdb: {
        let left = length - 2;
        while (left > 0) {
          if (!have(1)) return cut();
          const n = file[p];
          if ((n & 15) >= 4) return why('a quantization table index out of range (libjpeg: JERR_DQT_INDEX)');
          const size = 64 * (n >> 4 ? 2 : 1) + 1;
          if (!have(size)) return cut();
          left -= size;
          p += size;
        }
        if (left !== 0) return why('a DQT of the wrong length (libjpeg: JERR_BAD_LENGTH)');
        pos = p;
        break;
      }
      case 0xdd:
        if (length !== 4) return why('a DRI of the wrong length (libjpeg: JERR_BAD_LENGTH)');
        if (!have(2)) return cut();
        pos = p + 2;
        break;
      case 0xcc: {
        let left = length - 2;
        while (left > 0) {
          if (!have(2)) return cut();
          const [index, val] = [file[p], file[p + 1]];
          left -= 2;
          p += 2;
          if (index >= 32) return why('an arithmetic table index out of range (libjpeg: JERR_DAC_INDEX)');
          if (index < 16 && (val & 15) > val >> 4)
            return why('a bad arithmetic conditioning value (libjpeg: JERR_DAC_VALUE)');
        }
        if (left !== 0) return why('a DAC of the wrong length (libjpeg: JERR_BAD_LENGTH)');
        pos = p;
        break;
      }
      default:
        if ((m >= 0xe0 && m <= 0xef) || m === 0xfe || m === 0xdc) {
          // APPn, COM, DNL: skipped by their length
          if (pos + Math.max(2, length) > file.length) return cut();
          pos += Math.max(2, length);
          break;
        }
        return why(`marker 0x${m.toString(16)} where libjpeg accepts none (libjpeg: JERR_UNKNOWN_MARKER)`);
    }
  }
  if (frame?.progressive && known.some((coefs) => coefs.some((k) => !k))) {
    return 'progressive JPEG whose scans leave coefficients unknown: libjpeg-turbo 2.1.5 (Pillow) and mozjpeg (libvips) smooth them differently';
  }
  return null;
}
