;; SGEMM for the wasm backend, running inside tfjs-backend-wasm's own memory (imported): it reads the
;; operands and writes the output tensors where tfjs keeps them. Assembled by `npm run build:kernels`
;; (tools/build_kernels.ts) into gemm_wasm.ts (f32x4.relaxed_madd: one FMA instruction where the CPU has
;; one) and gemm_muladd_wasm.ts (the same code with f32x4.mul + f32x4.add, for engines without relaxed
;; SIMD); a test checks both agree with this file. The design and its measurements: docs/performance.md.
;;
;; C (+)= A · B, all float32, addresses and strides in bytes:
;; - A is read in place, row-major (row i at a + i·lda): four rows at a time, each element broadcast
;;   with v128.load32_splat.
;; - B comes in panels of 8 columns (panel p at b + p·bpanel), one row of 8 per k, k rows `bk` bytes
;;   apart: packed panels (pack_t / pack_n below: bk = 32, bpanel = 32·K) or a row-major matrix read in
;;   place (bpanel = 32, bk = its row stride; N a multiple of 8).
;; - C element (i, j) at c + i·ldc + 4j, or with `trans` at c + j·ldc + 4i (Cᵀ is written).
;; The microkernel holds a 4×8 tile of C in 8 v128 accumulators: per k, two loads of B, four
;; broadcasts of A and eight multiply-adds, with enough independent accumulators to cover the FMA
;; latency on two ports and no spills in V8's TurboFan (read its code with `node --print-wasm-code`
;; before changing the tile). Cache blocking: KC rows of B by NC columns (a block stays in L2 while the
;; tiles of A stream through L1).
;;
;; Numerics: each element of C is one accumulator lane: within a block of KC, one multiply-add per k
;; in order; the blocks' sums are added to C in order of k (the first overwrites C unless `add`). No
;; other order exists, so the result is bit-identical from run to run, whatever M, N or the element's
;; position (edge tiles compute the same lanes and store only the valid ones).
(module
  (import "env" "memory" (memory 1 65536))

  (func (export "gemm")
    (param $a i32) (param $lda i32) (param $b i32) (param $bpanel i32) (param $bk i32)
    (param $c i32) (param $ldc i32) (param $trans i32)
    (param $m i32) (param $n i32) (param $k i32) (param $add i32)
    (param $kc i32) (param $nc i32) (param $scratch i32)
    (local $jc i32) (local $jend i32) (local $pc i32) (local $kb i32) (local $accumulate i32)
    (local $i i32) (local $mr i32) (local $row i32) (local $j i32) (local $nr i32)
    (local $p0 i32) (local $p1 i32) (local $p2 i32) (local $p3 i32) (local $pend i32) (local $bp i32) (local $cp i32)
    (local $b0 v128) (local $b1 v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (block $jc_done
      (loop $jc_loop
        (br_if $jc_done (i32.ge_u (local.get $jc) (local.get $n)))
        (local.set $jend (select (local.get $n) (i32.add (local.get $jc) (local.get $nc))
          (i32.gt_u (i32.add (local.get $jc) (local.get $nc)) (local.get $n))))
        (local.set $pc (i32.const 0))
        (block $pc_done
          (loop $pc_loop
            (br_if $pc_done (i32.ge_u (local.get $pc) (local.get $k)))
            (local.set $kb (select (i32.sub (local.get $k) (local.get $pc)) (local.get $kc)
              (i32.gt_u (i32.add (local.get $pc) (local.get $kc)) (local.get $k))))
            (local.set $accumulate (i32.or (local.get $add) (i32.ne (local.get $pc) (i32.const 0))))
            (local.set $i (i32.const 0))
            (block $i_done
              (loop $i_loop
                (br_if $i_done (i32.ge_u (local.get $i) (local.get $m)))
                (local.set $mr (select (i32.sub (local.get $m) (local.get $i)) (i32.const 4)
                  (i32.lt_u (i32.sub (local.get $m) (local.get $i)) (i32.const 4))))
                ;; Rows past M read row i again (valid memory; those lanes are never stored).
                (local.set $row (i32.add (local.get $a) (i32.add (i32.mul (local.get $i) (local.get $lda)) (i32.shl (local.get $pc) (i32.const 2)))))
                (local.set $j (local.get $jc))
                (block $j_done
                  (loop $j_loop
                    (br_if $j_done (i32.ge_u (local.get $j) (local.get $jend)))
                    (local.set $p0 (local.get $row))
                    (local.set $p1 (select (i32.add (local.get $row) (local.get $lda)) (local.get $row) (i32.gt_u (local.get $mr) (i32.const 1))))
                    (local.set $p2 (select (i32.add (local.get $row) (i32.shl (local.get $lda) (i32.const 1))) (local.get $row) (i32.gt_u (local.get $mr) (i32.const 2))))
                    (local.set $p3 (select (i32.add (local.get $row) (i32.mul (local.get $lda) (i32.const 3))) (local.get $row) (i32.gt_u (local.get $mr) (i32.const 3))))
                    (local.set $pend (i32.add (local.get $row) (i32.shl (local.get $kb) (i32.const 2))))
                    (local.set $bp (i32.add (local.get $b) (i32.add (i32.mul (i32.shr_u (local.get $j) (i32.const 3)) (local.get $bpanel)) (i32.mul (local.get $pc) (local.get $bk)))))
                    (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
                    (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
                    (local.set $c20 (v128.const i32x4 0 0 0 0)) (local.set $c21 (v128.const i32x4 0 0 0 0))
                    (local.set $c30 (v128.const i32x4 0 0 0 0)) (local.set $c31 (v128.const i32x4 0 0 0 0))
                    (loop $k_loop
                      (local.set $b0 (v128.load align=4 (local.get $bp)))
                      (local.set $b1 (v128.load offset=16 align=4 (local.get $bp)))
                      (local.set $a0 (v128.load32_splat (local.get $p0)))
                      (local.set $c00 (f32x4.relaxed_madd (local.get $a0) (local.get $b0) (local.get $c00)))
                      (local.set $c01 (f32x4.relaxed_madd (local.get $a0) (local.get $b1) (local.get $c01)))
                      (local.set $a1 (v128.load32_splat (local.get $p1)))
                      (local.set $c10 (f32x4.relaxed_madd (local.get $a1) (local.get $b0) (local.get $c10)))
                      (local.set $c11 (f32x4.relaxed_madd (local.get $a1) (local.get $b1) (local.get $c11)))
                      (local.set $a2 (v128.load32_splat (local.get $p2)))
                      (local.set $c20 (f32x4.relaxed_madd (local.get $a2) (local.get $b0) (local.get $c20)))
                      (local.set $c21 (f32x4.relaxed_madd (local.get $a2) (local.get $b1) (local.get $c21)))
                      (local.set $a3 (v128.load32_splat (local.get $p3)))
                      (local.set $c30 (f32x4.relaxed_madd (local.get $a3) (local.get $b0) (local.get $c30)))
                      (local.set $c31 (f32x4.relaxed_madd (local.get $a3) (local.get $b1) (local.get $c31)))
                      (local.set $p0 (i32.add (local.get $p0) (i32.const 4)))
                      (local.set $p1 (i32.add (local.get $p1) (i32.const 4)))
                      (local.set $p2 (i32.add (local.get $p2) (i32.const 4)))
                      (local.set $p3 (i32.add (local.get $p3) (i32.const 4)))
                      (local.set $bp (i32.add (local.get $bp) (local.get $bk)))
                      (br_if $k_loop (i32.lt_u (local.get $p0) (local.get $pend))))
                    (local.set $nr (select (i32.sub (local.get $n) (local.get $j)) (i32.const 8)
                      (i32.lt_u (i32.sub (local.get $n) (local.get $j)) (i32.const 8))))
                    (if (i32.and (i32.eq (local.get $mr) (i32.const 4)) (i32.eq (local.get $nr) (i32.const 8)))
                      (then
                        (if (local.get $trans)
                          (then
                            ;; Two 4x4 transposes: rows of the tile become the 4 features of each of 8 columns.
                            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c00) (local.get $c10)))
                            (local.set $t1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c00) (local.get $c10)))
                            (local.set $t2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c20) (local.get $c30)))
                            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c20) (local.get $c30)))
                            (local.set $c00 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t2)))
                            (local.set $c10 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t2)))
                            (local.set $c20 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t1) (local.get $t3)))
                            (local.set $c30 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t1) (local.get $t3)))
                            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c01) (local.get $c11)))
                            (local.set $t1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c01) (local.get $c11)))
                            (local.set $t2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c21) (local.get $c31)))
                            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c21) (local.get $c31)))
                            (local.set $c01 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t2)))
                            (local.set $c11 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t2)))
                            (local.set $c21 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t1) (local.get $t3)))
                            (local.set $c31 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t1) (local.get $t3)))
                            (local.set $cp (i32.add (local.get $c) (i32.add (i32.mul (local.get $j) (local.get $ldc)) (i32.shl (local.get $i) (i32.const 2)))))
                            (call $store4 (local.get $cp) (local.get $ldc) (local.get $accumulate) (local.get $c00) (local.get $c10) (local.get $c20) (local.get $c30))
                            (call $store4 (i32.add (local.get $cp) (i32.shl (local.get $ldc) (i32.const 2))) (local.get $ldc) (local.get $accumulate)
                              (local.get $c01) (local.get $c11) (local.get $c21) (local.get $c31)))
                          (else
                            (local.set $cp (i32.add (local.get $c) (i32.add (i32.mul (local.get $i) (local.get $ldc)) (i32.shl (local.get $j) (i32.const 2)))))
                            (call $store4 (local.get $cp) (local.get $ldc) (local.get $accumulate) (local.get $c00) (local.get $c10) (local.get $c20) (local.get $c30))
                            (call $store4 (i32.add (local.get $cp) (i32.const 16)) (local.get $ldc) (local.get $accumulate)
                              (local.get $c01) (local.get $c11) (local.get $c21) (local.get $c31)))))
                      (else
                        ;; An edge tile: through the scratch tile, only the valid elements.
                        (v128.store offset=0 (local.get $scratch) (local.get $c00))
                        (v128.store offset=16 (local.get $scratch) (local.get $c01))
                        (v128.store offset=32 (local.get $scratch) (local.get $c10))
                        (v128.store offset=48 (local.get $scratch) (local.get $c11))
                        (v128.store offset=64 (local.get $scratch) (local.get $c20))
                        (v128.store offset=80 (local.get $scratch) (local.get $c21))
                        (v128.store offset=96 (local.get $scratch) (local.get $c30))
                        (v128.store offset=112 (local.get $scratch) (local.get $c31))
                        (call $store_edge (local.get $scratch) (local.get $c) (local.get $ldc) (local.get $trans) (local.get $accumulate)
                          (local.get $i) (local.get $j) (local.get $mr) (local.get $nr))))
                    (local.set $j (i32.add (local.get $j) (i32.const 8)))
                    (br $j_loop)))
                (local.set $i (i32.add (local.get $i) (i32.const 4)))
                (br $i_loop)))
            (local.set $pc (i32.add (local.get $pc) (local.get $kc)))
            (br $pc_loop)))
        (local.set $jc (i32.add (local.get $jc) (local.get $nc)))
        (br $jc_loop))))

  ;; Four vectors to four rows `ld` bytes apart: stored, or added to what is there.
  (func $store4 (param $p i32) (param $ld i32) (param $add i32) (param $v0 v128) (param $v1 v128) (param $v2 v128) (param $v3 v128)
    (if (local.get $add)
      (then
        (local.set $v0 (f32x4.add (v128.load align=4 (local.get $p)) (local.get $v0)))
        (local.set $v1 (f32x4.add (v128.load align=4 (i32.add (local.get $p) (local.get $ld))) (local.get $v1)))
        (local.set $v2 (f32x4.add (v128.load align=4 (i32.add (local.get $p) (i32.shl (local.get $ld) (i32.const 1)))) (local.get $v2)))
        (local.set $v3 (f32x4.add (v128.load align=4 (i32.add (local.get $p) (i32.mul (local.get $ld) (i32.const 3)))) (local.get $v3)))))
    (v128.store align=4 (local.get $p) (local.get $v0))
    (v128.store align=4 (i32.add (local.get $p) (local.get $ld)) (local.get $v1))
    (v128.store align=4 (i32.add (local.get $p) (i32.shl (local.get $ld) (i32.const 1))) (local.get $v2))
    (v128.store align=4 (i32.add (local.get $p) (i32.mul (local.get $ld) (i32.const 3))) (local.get $v3)))

  ;; The valid mr×nr corner of the 4×8 tile at `scratch` (row-major) into C at (i, j).
  (func $store_edge (param $scratch i32) (param $c i32) (param $ldc i32) (param $trans i32) (param $add i32)
    (param $i i32) (param $j i32) (param $mr i32) (param $nr i32)
    (local $r i32) (local $col i32) (local $at i32) (local $v f32)
    (block $r_done
      (loop $r_loop
        (br_if $r_done (i32.ge_u (local.get $r) (local.get $mr)))
        (local.set $col (i32.const 0))
        (block $col_done
          (loop $col_loop
            (br_if $col_done (i32.ge_u (local.get $col) (local.get $nr)))
            (local.set $at (i32.add (local.get $c)
              (select
                (i32.add (i32.mul (i32.add (local.get $j) (local.get $col)) (local.get $ldc)) (i32.shl (i32.add (local.get $i) (local.get $r)) (i32.const 2)))
                (i32.add (i32.mul (i32.add (local.get $i) (local.get $r)) (local.get $ldc)) (i32.shl (i32.add (local.get $j) (local.get $col)) (i32.const 2)))
                (local.get $trans))))
            (local.set $v (f32.load (i32.add (local.get $scratch) (i32.shl (i32.add (i32.shl (local.get $r) (i32.const 3)) (local.get $col)) (i32.const 2)))))
            (if (local.get $add) (then (local.set $v (f32.add (f32.load (local.get $at)) (local.get $v)))))
            (f32.store (local.get $at) (local.get $v))
            (local.set $col (i32.add (local.get $col) (i32.const 1)))
            (br $col_loop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $r_loop))))

  ;; Packs rows of a row-major X (`rows` rows of `k` floats, `ldx` bytes apart) as the panels of B = Xᵀ:
  ;; panel p holds rows 8p..8p+7 of X, one group of 8 per k (dst + p·32k + 32k' + 4l = X[8p+l][k']);
  ;; rows past the end are zeros. Full panels move 4×4 blocks through registers.
  (func (export "pack_t") (param $x i32) (param $ldx i32) (param $rows i32) (param $k i32) (param $dst i32)
    (local $row i32) (local $d i32) (local $kk i32) (local $k4 i32) (local $l i32) (local $valid i32)
    (local $r0 i32) (local $r1 i32) (local $r2 i32) (local $r3 i32) (local $r4 i32) (local $r5 i32) (local $r6 i32) (local $r7 i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $k4 (i32.and (local.get $k) (i32.const -4)))
    (local.set $d (local.get $dst))
    (block $done
      (loop $panels
        (br_if $done (i32.ge_u (local.get $row) (local.get $rows)))
        (local.set $valid (i32.sub (local.get $rows) (local.get $row)))
        (if (i32.ge_u (local.get $valid) (i32.const 8))
          (then
            (local.set $r0 (i32.add (local.get $x) (i32.mul (local.get $row) (local.get $ldx))))
            (local.set $r1 (i32.add (local.get $r0) (local.get $ldx)))
            (local.set $r2 (i32.add (local.get $r1) (local.get $ldx)))
            (local.set $r3 (i32.add (local.get $r2) (local.get $ldx)))
            (local.set $r4 (i32.add (local.get $r3) (local.get $ldx)))
            (local.set $r5 (i32.add (local.get $r4) (local.get $ldx)))
            (local.set $r6 (i32.add (local.get $r5) (local.get $ldx)))
            (local.set $r7 (i32.add (local.get $r6) (local.get $ldx)))
            (local.set $kk (i32.const 0))
            (block $k4_done
              (loop $k4_loop
                (br_if $k4_done (i32.ge_u (local.get $kk) (local.get $k4)))
                (call $transpose_store (i32.add (local.get $d) (i32.shl (local.get $kk) (i32.const 5)))
                  (v128.load align=4 (i32.add (local.get $r0) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r1) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r2) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r3) (i32.shl (local.get $kk) (i32.const 2)))))
                (call $transpose_store (i32.add (i32.add (local.get $d) (i32.shl (local.get $kk) (i32.const 5))) (i32.const 16))
                  (v128.load align=4 (i32.add (local.get $r4) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r5) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r6) (i32.shl (local.get $kk) (i32.const 2))))
                  (v128.load align=4 (i32.add (local.get $r7) (i32.shl (local.get $kk) (i32.const 2)))))
                (local.set $kk (i32.add (local.get $kk) (i32.const 4)))
                (br $k4_loop)))
            (call $pack_t_scalar (local.get $x) (local.get $ldx) (local.get $row) (i32.const 8) (local.get $kk) (local.get $k) (local.get $d)))
          (else
            (call $pack_t_scalar (local.get $x) (local.get $ldx) (local.get $row) (local.get $valid) (i32.const 0) (local.get $k) (local.get $d))))
        (local.set $d (i32.add (local.get $d) (i32.shl (local.get $k) (i32.const 5))))
        (local.set $row (i32.add (local.get $row) (i32.const 8)))
        (br $panels))))

  ;; Columns k0..k-1 of one panel of pack_t, element by element; panel rows from `valid` on are zeros.
  (func $pack_t_scalar (param $x i32) (param $ldx i32) (param $row i32) (param $valid i32) (param $k0 i32) (param $k i32) (param $d i32)
    (local $kk i32) (local $l i32) (local $src i32)
    (local.set $kk (local.get $k0))
    (block $k_done
      (loop $k_loop
        (br_if $k_done (i32.ge_u (local.get $kk) (local.get $k)))
        (local.set $l (i32.const 0))
        (block $l_done
          (loop $l_loop
            (br_if $l_done (i32.ge_u (local.get $l) (i32.const 8)))
            (f32.store (i32.add (local.get $d) (i32.add (i32.shl (local.get $kk) (i32.const 5)) (i32.shl (local.get $l) (i32.const 2))))
              (if (result f32) (i32.lt_u (local.get $l) (local.get $valid))
                (then (f32.load (i32.add (i32.add (local.get $x) (i32.mul (i32.add (local.get $row) (local.get $l)) (local.get $ldx))) (i32.shl (local.get $kk) (i32.const 2)))))
                (else (f32.const 0))))
            (local.set $l (i32.add (local.get $l) (i32.const 1)))
            (br $l_loop)))
        (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
        (br $k_loop))))

  ;; Rows v0..v3 (4 floats each) transposed, column q stored at p + 32q.
  (func $transpose_store (param $p i32) (param $v0 v128) (param $v1 v128) (param $v2 v128) (param $v3 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v0) (local.get $v1)))
    (local.set $t1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v0) (local.get $v1)))
    (local.set $t2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v2) (local.get $v3)))
    (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v2) (local.get $v3)))
    (v128.store align=4 (local.get $p) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t2)))
    (v128.store offset=32 align=4 (local.get $p) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t2)))
    (v128.store offset=64 align=4 (local.get $p) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t1) (local.get $t3)))
    (v128.store offset=96 align=4 (local.get $p) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t1) (local.get $t3))))

  ;; Packs a row-major W (`k` rows of `n` floats, `ldw` bytes apart) as the panels of B = W: panel p
  ;; holds columns 8p..8p+7 (dst + p·32k + 32k' + 4l = W[k'][8p+l]); columns past the end are zeros.
  (func (export "pack_n") (param $w i32) (param $ldw i32) (param $k i32) (param $n i32) (param $dst i32)
    (local $col i32) (local $d i32) (local $kk i32) (local $src i32) (local $valid i32) (local $l i32)
    (local.set $d (local.get $dst))
    (block $done
      (loop $panels
        (br_if $done (i32.ge_u (local.get $col) (local.get $n)))
        (local.set $valid (i32.sub (local.get $n) (local.get $col)))
        (local.set $src (i32.add (local.get $w) (i32.shl (local.get $col) (i32.const 2))))
        (local.set $kk (i32.const 0))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $kk) (local.get $k)))
            (if (i32.ge_u (local.get $valid) (i32.const 8))
              (then
                (v128.store align=4 (local.get $d) (v128.load align=4 (local.get $src)))
                (v128.store offset=16 align=4 (local.get $d) (v128.load offset=16 align=4 (local.get $src))))
              (else
                (local.set $l (i32.const 0))
                (block $l_done
                  (loop $l_loop
                    (br_if $l_done (i32.ge_u (local.get $l) (i32.const 8)))
                    (f32.store (i32.add (local.get $d) (i32.shl (local.get $l) (i32.const 2)))
                      (if (result f32) (i32.lt_u (local.get $l) (local.get $valid))
                        (then (f32.load (i32.add (local.get $src) (i32.shl (local.get $l) (i32.const 2)))))
                        (else (f32.const 0))))
                    (local.set $l (i32.add (local.get $l) (i32.const 1)))
                    (br $l_loop)))))
            (local.set $d (i32.add (local.get $d) (i32.const 32)))
            (local.set $src (i32.add (local.get $src) (local.get $ldw)))
            (local.set $kk (i32.add (local.get $kk) (i32.const 1)))
            (br $k_loop)))
        (local.set $col (i32.add (local.get $col) (i32.const 8)))
        (br $panels))))
)
