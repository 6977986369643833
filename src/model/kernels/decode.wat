;; Checkpoint decoding kernels that run inside tfjs-backend-wasm's own memory (imported), so weights are
;; decoded and transposed straight into the tensors' heap memory. Assembled into decode_wasm.ts by
;; `npm run build:kernels` (tools/build_kernels.ts); a test checks the two agree.
(module
  (import "env" "memory" (memory 1 65536))

  ;; n IEEE halves at src -> n float32 at dst, exactly (subnormals, ±0, ±inf; NaN payloads kept).
  ;; Per lane: the half's exponent+mantissa bits moved to float32 positions and the value scaled by
  ;; 2^112 (re-biasing 15 -> 127; exact, subnormals included); exponent 31 (inf/NaN) is set directly.
  (func (export "f16_to_f32") (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $h v128) (local $end8 i32) (local $x i32)
    (local.set $end8 (i32.and (local.get $n) (i32.const -8)))
    (block $done
      (loop $simd
        (br_if $done (i32.ge_u (local.get $i) (local.get $end8)))
        (local.set $h (v128.load align=1 (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (v128.store align=1 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (call $half4 (i32x4.extend_low_i16x8_u (local.get $h))))
        (v128.store offset=16 align=1 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (call $half4 (i32x4.extend_high_i16x8_u (local.get $h))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $simd)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $x (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (i32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.extract_lane 0 (call $half4 (i32x4.splat (local.get $x)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail))))

  (func $half4 (param $x v128) (result v128)
    (local $em v128)
    (local.set $em (i32x4.shl (v128.and (local.get $x) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)) (i32.const 13)))
    (v128.or
      (i32x4.shl (v128.and (local.get $x) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16))
      (v128.bitselect
        (v128.or (local.get $em) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
        (f32x4.mul (local.get $em) (v128.const i32x4 0x77800000 0x77800000 0x77800000 0x77800000))
        (i32x4.ge_u (local.get $em) (v128.const i32x4 0x0f800000 0x0f800000 0x0f800000 0x0f800000)))))

  ;; n bfloat16 at src -> n float32 at dst: the top half of a float32, shifted back in place.
  (func (export "bf16_to_f32") (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $h v128) (local $end8 i32)
    (local.set $end8 (i32.and (local.get $n) (i32.const -8)))
    (block $done
      (loop $simd
        (br_if $done (i32.ge_u (local.get $i) (local.get $end8)))
        (local.set $h (v128.load align=1 (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (v128.store align=1 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $h)) (i32.const 16)))
        (v128.store offset=16 align=1 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $h)) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $simd)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32.shl (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail))))

  ;; The [nr, nc] block at (r0, c0) of a row-major matrix at src with `cols` columns, decoded to float32
  ;; and written transposed ([nc, nr]) at dst, in one pass. $kind: 0 float32, 1 float16, 2 bfloat16.
  ;; Tiled 32x32 (both sides stay in cache); inside a tile, 4x4 sub-blocks are transposed in registers
  ;; so every load and store moves 4 values.
  (func (export "transpose") (param $src i32) (param $kind i32) (param $cols i32) (param $r0 i32) (param $nr i32) (param $c0 i32) (param $nc i32) (param $dst i32)
    (local $rb i32) (local $cb i32) (local $rEnd i32) (local $cEnd i32) (local $r i32) (local $c i32)
    (local $s i32) (local $o i32) (local $shift i32) (local $rowBytes i32) (local $outRowBytes i32)
    (local $a v128) (local $b v128) (local $cc v128) (local $d v128) (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $shift (select (i32.const 2) (i32.const 1) (i32.eqz (local.get $kind))))
    (local.set $rowBytes (i32.shl (local.get $cols) (local.get $shift)))
    (local.set $outRowBytes (i32.shl (local.get $nr) (i32.const 2)))
    (local.set $rb (i32.const 0))
    (block $rb_done
      (loop $rb_loop
        (br_if $rb_done (i32.ge_u (local.get $rb) (local.get $nr)))
        (local.set $rEnd (select (i32.add (local.get $rb) (i32.const 32)) (local.get $nr)
          (i32.lt_u (i32.add (local.get $rb) (i32.const 32)) (local.get $nr))))
        (local.set $cb (i32.const 0))
        (block $cb_done
          (loop $cb_loop
            (br_if $cb_done (i32.ge_u (local.get $cb) (local.get $nc)))
            (local.set $cEnd (select (i32.add (local.get $cb) (i32.const 32)) (local.get $nc)
              (i32.lt_u (i32.add (local.get $cb) (i32.const 32)) (local.get $nc))))
            ;; 4x4 register blocks while both 4 rows and 4 columns remain
            (local.set $r (local.get $rb))
            (block $r4_done
              (loop $r4_loop
                (br_if $r4_done (i32.gt_u (i32.add (local.get $r) (i32.const 4)) (local.get $rEnd)))
                (local.set $c (local.get $cb))
                (block $c4_done
                  (loop $c4_loop
                    (br_if $c4_done (i32.gt_u (i32.add (local.get $c) (i32.const 4)) (local.get $cEnd)))
                    ;; s = src + ((r0 + r) * cols + c0 + c) << shift
                    (local.set $s (i32.add (local.get $src) (i32.shl
                      (i32.add (i32.mul (i32.add (local.get $r0) (local.get $r)) (local.get $cols)) (i32.add (local.get $c0) (local.get $c)))
                      (local.get $shift))))
                    (local.set $a (call $load4 (local.get $kind) (local.get $s)))
                    (local.set $b (call $load4 (local.get $kind) (i32.add (local.get $s) (local.get $rowBytes))))
                    (local.set $cc (call $load4 (local.get $kind) (i32.add (local.get $s) (i32.shl (local.get $rowBytes) (i32.const 1)))))
                    (local.set $d (call $load4 (local.get $kind) (i32.add (local.get $s) (i32.mul (local.get $rowBytes) (i32.const 3)))))
                    ;; t0 = a0 b0 a1 b1, t1 = c0 d0 c1 d1, t2 = a2 b2 a3 b3, t3 = c2 d2 c3 d3
                    (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a) (local.get $b)))
                    (local.set $t1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $cc) (local.get $d)))
                    (local.set $t2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a) (local.get $b)))
                    (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $cc) (local.get $d)))
                    ;; o = dst + (c * nr + r) * 4; out row c gets a0 b0 c0 d0, row c+1 a1 b1 c1 d1, ...
                    (local.set $o (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $nr)) (local.get $r)) (i32.const 2))))
                    (v128.store align=4 (local.get $o)
                      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t1)))
                    (v128.store align=4 (i32.add (local.get $o) (local.get $outRowBytes))
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t1)))
                    (v128.store align=4 (i32.add (local.get $o) (i32.shl (local.get $outRowBytes) (i32.const 1)))
                      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t2) (local.get $t3)))
                    (v128.store align=4 (i32.add (local.get $o) (i32.mul (local.get $outRowBytes) (i32.const 3)))
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t2) (local.get $t3)))
                    (local.set $c (i32.add (local.get $c) (i32.const 4)))
                    (br $c4_loop)))
                ;; leftover columns of these 4 rows
                (call $scalar (local.get $src) (local.get $kind) (local.get $shift) (local.get $cols) (local.get $r0) (local.get $c0) (local.get $nr) (local.get $dst)
                  (local.get $r) (i32.add (local.get $r) (i32.const 4)) (local.get $c) (local.get $cEnd))
                (local.set $r (i32.add (local.get $r) (i32.const 4)))
                (br $r4_loop)))
            ;; leftover rows of the tile
            (call $scalar (local.get $src) (local.get $kind) (local.get $shift) (local.get $cols) (local.get $r0) (local.get $c0) (local.get $nr) (local.get $dst)
              (local.get $r) (local.get $rEnd) (local.get $cb) (local.get $cEnd))
            (local.set $cb (i32.add (local.get $cb) (i32.const 32)))
            (br $cb_loop)))
        (local.set $rb (i32.add (local.get $rb) (i32.const 32)))
        (br $rb_loop))))

  ;; Four consecutive source values as float32 lanes.
  (func $load4 (param $kind i32) (param $addr i32) (result v128)
    (if (result v128) (i32.eqz (local.get $kind))
      (then (v128.load align=4 (local.get $addr)))
      (else
        (if (result v128) (i32.eq (local.get $kind) (i32.const 1))
          (then (call $half4 (v128.load16x4_u align=2 (local.get $addr))))
          (else (i32x4.shl (v128.load16x4_u align=2 (local.get $addr)) (i32.const 16)))))))

  ;; One source value as a float32.
  (func $load1 (param $kind i32) (param $addr i32) (result f32)
    (if (result f32) (i32.eqz (local.get $kind))
      (then (f32.load (local.get $addr)))
      (else
        (if (result f32) (i32.eq (local.get $kind) (i32.const 1))
          (then (f32x4.extract_lane 0 (call $half4 (i32x4.splat (i32.load16_u (local.get $addr))))))
          (else (f32.reinterpret_i32 (i32.shl (i32.load16_u (local.get $addr)) (i32.const 16))))))))

  ;; Rows [ra, rz) x columns [ca, cz) of the block, one element at a time.
  (func $scalar (param $src i32) (param $kind i32) (param $shift i32) (param $cols i32) (param $r0 i32) (param $c0 i32) (param $nr i32) (param $dst i32)
    (param $ra i32) (param $rz i32) (param $ca i32) (param $cz i32)
    (local $r i32) (local $c i32)
    (local.set $r (local.get $ra))
    (block $r_done
      (loop $r_loop
        (br_if $r_done (i32.ge_u (local.get $r) (local.get $rz)))
        (local.set $c (local.get $ca))
        (block $c_done
          (loop $c_loop
            (br_if $c_done (i32.ge_u (local.get $c) (local.get $cz)))
            (f32.store
              (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $nr)) (local.get $r)) (i32.const 2)))
              (call $load1 (local.get $kind) (i32.add (local.get $src) (i32.shl
                (i32.add (i32.mul (i32.add (local.get $r0) (local.get $r)) (local.get $cols)) (i32.add (local.get $c0) (local.get $c)))
                (local.get $shift)))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $c_loop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $r_loop))))
)
