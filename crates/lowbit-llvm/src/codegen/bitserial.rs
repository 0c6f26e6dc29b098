//! The bit-serial integer kernel (WxAy): `x`-bit weights times `y`-bit
//! activations, `x, y` in 1..=8 (or `b1` weights), as sums of
//! AND-popcounts over bit-planes — the CPU form of the IR's
//! `matmul_int {schedule = bit_serial}`.
//!
//! With `W = Σ_i c_i 2^i W_i` and `A = Σ_j c_j 2^j A_j` (`W_i`, `A_j` the
//! 0/1 bit-planes, `c = -1` for the sign plane of a signed type, else 1),
//! `Σ_k A·W = Σ_ij c_i c_j 2^(i+j) popcount(A_j and W_i)`. Both operands
//! are stored per 512-element block as their planes of 64 bytes
//! (`tile = 1x512, bitplanes`), so one step is `vpandq` + `vpopcntq` +
//! `vpaddq` on 512-bit vectors with AVX-512 VPOPCNTDQ; elsewhere LLVM
//! lowers `llvm.ctpop` on `<8 x i64>` to the target's vector popcount
//! (`vpshufb` nibble tables on AVX2, `cnt` + pairwise adds on NEON).
//!
//! Register tiles of `R` weight rows by `C` activation columns keep one
//! `<8 x i64>` accumulator per row, column and plane pair when
//! `R·C·x·y <= 24` (so the plane weights are applied once per tile, after
//! the k loop); wider pairs (e.g. W8A8) shift each popcount by `i + j`
//! and add or subtract it into one accumulator per row and column. W2A2
//! takes 2x2 tiles, W1A8 2x1, W4A4 1x1.
//!
//! k runs in passes of whole plane blocks (one pass when `n < 4`); within
//! a pass the operand a tile loads more planes of per block stays in L1
//! (outer loop) and the other streams (inner loop): rows outer when
//! `R·x >= C·y` (W2A2), columns outer otherwise (W1A8, where the weights'
//! single plane streams past 8 activation planes).
//!
//! Corrections, applied once per output (first k pass): `b1` weights are
//! `2b - 1`, so `Σ a·w = 2·Σ a·b - Σ a`; per-tensor zero points give
//! `Σ (a - za)(w - zw) = Σ a·w - zw·Σa - za·Σw + k·za·zw`, with the weight
//! row sums `Σw` taken at pack time and the activation column sums `Σa`
//! when the activations are packed. Sums are exact in `i64` lanes and the
//! result wraps to `i32` like the interpreter's `matmul_int` with
//! `overflow = wrap` (every correction is a ring operation mod 2^32).
//!
//! Kernel arguments (the shared `lowbit_gemm` signature): `x` packed
//! activation planes `[n, k_pad/512, y, 64 bytes]`, `w` packed weight
//! planes, `scales` the activation column sums (`i32 [n]`), `zero_points`
//! the weight row sums (`i32 [m]`), `bias` the zero points `i32 [za, zw]`
//! (read only when the spec has them), `y` the `i32 [n, m]` output.
//!
//! W1A1 (`b1` weights times `b1` activations, the direct schedule) lives
//! here too: `itile_RxC` tiles XOR the packed sign bits of a weight row
//! and an activation row and count the disagreements per 32-bit lane
//! (`vpopcntd`), `Σ x·w = k - 2·disagreements`; `x` and `w` are plain
//! packed bits (`[n, k_pad / 8]` bytes), the other three buffers are not
//! read, and the loop nest is the float path's (`Gen::emit_kernel`), k in
//! passes of `INT_K_CHUNK` blocks when `n >= 4`.
//!
//! Limits: no epilogue; zero points are per tensor (as in the IR).

use super::{Gen, KPass, Params};
use crate::error::CpuError;
use crate::spec::{INT_BLOCK, PLANE_BLOCK};
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;
use lowbit_numerics::ElemType;

/// Blocks of k per pass of the W1A1 kernel (64 blocks of 512 bits = 4 KiB
/// per row): a 4x4 tile's weight and activation slices then stay in L1,
/// and all activation slices of a pass in L2.
pub(super) const INT_K_CHUNK: u64 = 64;

/// Bytes of one 512-bit plane word.
const PLANE_BYTES: u64 = (PLANE_BLOCK / 8) as u64;

/// Accumulators a tile may keep per plane pair before switching to the
/// shift-and-add form (32 zmm registers: the rest hold the loaded planes).
const ACC_BUDGET: usize = 24;

/// Activation bytes per column per k pass (`4096 / 64 / y` plane blocks:
/// 32 for W2A2, 8 for W1A8): long enough that the per-pass tile epilogue
/// (plane weights, reduction, `y` update) costs little, short enough that
/// a thread's slice of the streamed operand stays in L2 (2 MiB at
/// n = 512). On the shared 2-core machine 2 to 16 KiB measured alike
/// within its noise; 1 KiB (2 blocks of W1A8) was visibly slower.
const PASS_BYTES: u64 = 4096;

/// The register tile `(rows, cols)` and whether it keeps one accumulator
/// per plane pair, for `x`-bit weights and `y`-bit activations.
pub(super) fn tile_shape(x: usize, y: usize) -> (u32, u32, bool) {
    for (r, c) in [(4u32, 4u32), (4, 2), (2, 2), (4, 1), (2, 1), (1, 1)] {
        if (r * c) as usize * x * y <= ACC_BUDGET {
            return (r, c, true);
        }
    }
    (2, 2, false)
}

/// Sign of bit-plane `i` of `elem` (`-1` for the two's-complement sign
/// plane).
fn plane_negative(elem: ElemType, i: usize) -> bool {
    matches!(elem, ElemType::Int { signed: true, bits } if i + 1 == bits as usize)
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// Per-lane popcount of `v` (`vpopcntd`/`vpopcntq` with AVX-512
    /// VPOPCNTDQ).
    fn ctpop(&self, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        Ok(self.call_unary("llvm.ctpop", v)?.into_vector_value())
    }

    /// The wrapping sum of the lanes of integer vector `v`.
    fn reduce_lanes(&self, v: VectorValue<'ctx>) -> Result<IntValue<'ctx>, CpuError> {
        Ok(self
            .call_unary("llvm.vector.reduce.add", v)?
            .into_int_value())
    }

    fn splat_i64(&self, v: u64) -> VectorValue<'ctx> {
        inkwell::types::VectorType::const_vector(&[self.i64c(v); 8])
    }

    /// `acc + popcount(x xor w)` per 32-bit lane: the number of positions
    /// where two rows of `b1` codes disagree (`vpopcntd` with AVX-512
    /// VPOPCNTDQ).
    fn popcount_xor(
        &self,
        acc: VectorValue<'ctx>,
        x: VectorValue<'ctx>,
        w: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let v16 = self.i32t.vec_type(16);
        let xi = self.b.build_bit_cast(x, v16, "xi")?.into_vector_value();
        let wi = self.b.build_bit_cast(w, v16, "wi")?.into_vector_value();
        let d = self.b.build_xor(xi, wi, "d")?;
        let p = self.ctpop(d)?;
        Ok(self.b.build_int_add(acc, p, "acc")?)
    }

    /// Emits `itile_RxC(x, w, _, _, _, y, r0, c0, kb0, first, last)` of
    /// the W1A1 path (`b1` weights times `b1` activations, XOR-popcount
    /// on whole bytes of packed signs): `x` is `[n, k_pad]` packed bits,
    /// `y` is `i32 [n, m]`; blocks `kb0..kb0 + INT_K_CHUNK` (to the end on
    /// the `last` pass), storing on the `first` pass and adding after.
    pub(super) fn emit_int_tile(
        &self,
        rows: u32,
        cols: u32,
    ) -> Result<FunctionValue<'ctx>, CpuError> {
        let spec = self.spec;
        let Params { f, ptrs, ints } = self.function(&format!("itile_{rows}x{cols}"), 5, true)?;
        let (x, w, y) = (ptrs[0], ptrs[1], ptrs[5]);
        let (r0, c0, kb0, first, last) = (ints[0], ints[1], ints[2], ints[3], ints[4]);
        let v16 = self.i32t.vec_type(16);
        let accs = self.zeroed_accs(v16, rows * cols)?;
        // Bytes per row of weights and of activations (bits on W1A1).
        let k_pad = spec.row_bytes() as u64;
        let kb = k_pad / INT_BLOCK as u64;
        let rows_idx = self.indices(r0, rows)?;
        let x_rows = self.strided_ptrs(x, c0, cols, k_pad)?;
        let w_rows = self.row_ptrs(w, &rows_idx, k_pad)?;
        // The last pass runs to the end (the only pass when decoding).
        let kb1 = self.b.build_int_add(kb0, self.i64c(INT_K_CHUNK), "kb1")?;
        let is_last = self
            .b
            .build_int_compare(IntPredicate::NE, last, self.i64c(0), "last")?;
        let kb1 = self
            .b
            .build_select(is_last, self.i64c(kb), kb1, "kb1")?
            .into_int_value();
        self.emit_range(f, kb0, kb1, |b| {
            let off = self.b.build_int_mul(b, self.i64c(INT_BLOCK as u64), "o")?;
            let v64 = self.i8t.vec_type(INT_BLOCK as u32);
            let xs: Vec<VectorValue> = x_rows
                .iter()
                .map(|&xr| Ok(self.load(v64, self.gep(xr, off)?, 1)?.into_vector_value()))
                .collect::<Result<_, CpuError>>()?;
            for r in 0..rows as usize {
                let wv = self
                    .load(v64, self.gep(w_rows[r], off)?, 1)?
                    .into_vector_value();
                for (c, &xv) in xs.iter().enumerate() {
                    let ap = accs[r * cols as usize + c];
                    let acc = self.b.build_load(v16, ap, "a")?.into_vector_value();
                    let acc = self.popcount_xor(acc, xv, wv)?;
                    self.b.build_store(ap, acc)?;
                }
            }
            Ok(())
        })?;
        let is_first = self
            .b
            .build_int_compare(IntPredicate::NE, first, self.i64c(0), "first")?;
        for r in 0..rows as usize {
            for c in 0..cols as usize {
                let v = self
                    .b
                    .build_load(v16, accs[r * cols as usize + c], "a")?
                    .into_vector_value();
                let mut dot = self.reduce_tree(v)?.into_int_value();
                let col = self.b.build_int_add(c0, self.i64c(c as u64), "c")?;
                let yp = self.y_ptr(y, col, rows_idx[r])?;
                // The first k chunk starts the sum; later chunks add to it.
                // Wrapping i32 adds are associative, so the chunked sum is
                // the exact one. The lanes counted disagreeing signs, and
                // sum(x * w) = k - 2 * disagreements.
                dot =
                    self.b
                        .build_int_mul(dot, self.i32t.const_int((-2i64) as u64, true), "dot")?;
                let start = self.i32t.const_int(spec.k as u64, false);
                let old = self.load(self.i32t, yp, 4)?.into_int_value();
                let base = self
                    .b
                    .build_select(is_first, start, old, "base")?
                    .into_int_value();
                dot = self.b.build_int_add(dot, base, "dot")?;
                self.b.build_store(yp, dot)?;
            }
        }
        self.b.build_return(None)?;
        Ok(f)
    }

    /// Emits `bstile_RxC(x, w, colsums, rowsums, zps, y, r0, c0, kb0, kb1,
    /// first)`: rows `r0..r0+R` by columns `c0..c0+C` over plane blocks
    /// `kb0..kb1`, storing (`first`) or adding to `y`.
    fn emit_bs_tile(&self, rows: u32, cols: u32) -> Result<FunctionValue<'ctx>, CpuError> {
        let name = format!("bstile_{rows}x{cols}");
        if let Some(f) = self.module.get_function(&name) {
            return Ok(f);
        }
        let spec = self.spec;
        let (xp, yp) = (spec.weight_planes(), spec.act_planes());
        let pair = tile_shape(xp, yp).2;
        let Params { f, ptrs, ints } = self.function(&name, 5, true)?;
        let [x, w, colsums, rowsums, zps, y] = ptrs[..] else {
            return Err(CpuError::Llvm("tile function without six buffers".into()));
        };
        let (r0, c0, kb0, kb1, first) = (ints[0], ints[1], ints[2], ints[3], ints[4]);
        let v8 = self.i64t.vec_type(8);
        let (r_n, c_n) = (rows as usize, cols as usize);
        let per_rc = if pair { xp * yp } else { 1 };
        let accs = self.zeroed_accs(v8, rows * cols * per_rc as u32)?;
        let acc_at = |r: usize, c: usize, i: usize, j: usize| {
            let base = (r * c_n + c) * per_rc;
            if pair {
                accs[base + i * yp + j]
            } else {
                accs[base]
            }
        };
        let w_block = PLANE_BYTES * xp as u64;
        let x_block = PLANE_BYTES * yp as u64;
        let w_row_bytes = spec.row_bytes() as u64;
        let x_row_bytes = spec.k_pad() as u64 / 8 * yp as u64;
        let rows_idx = self.indices(r0, rows)?;
        let cols_idx = self.indices(c0, cols)?;
        let w_rows = self.row_ptrs(w, &rows_idx, w_row_bytes)?;
        let x_cols = self.row_ptrs(x, &cols_idx, x_row_bytes)?;
        let neg = |i: usize, j: usize| {
            plane_negative(spec.weight.dtype, i) != plane_negative(spec.act, j)
        };
        self.emit_range(f, kb0, kb1, |b| {
            let wo = self.b.build_int_mul(b, self.i64c(w_block), "wo")?;
            let xo = self.b.build_int_mul(b, self.i64c(x_block), "xo")?;
            // All weight planes of the tile's rows stay in registers
            // while each activation plane streams past them.
            let mut wv = Vec::with_capacity(r_n * xp);
            for &wr in &w_rows {
                let blk = self.gep(wr, wo)?;
                for i in 0..xp {
                    let pp = self.gep(blk, self.i64c(i as u64 * PLANE_BYTES))?;
                    wv.push(self.load(v8, pp, 1)?.into_vector_value());
                }
            }
            for (c, &xc) in x_cols.iter().enumerate() {
                let blk = self.gep(xc, xo)?;
                for j in 0..yp {
                    let pp = self.gep(blk, self.i64c(j as u64 * PLANE_BYTES))?;
                    let xv = self.load(v8, pp, 1)?.into_vector_value();
                    for r in 0..r_n {
                        for i in 0..xp {
                            let both = self.b.build_and(wv[r * xp + i], xv, "and")?;
                            let pc = self.ctpop(both)?;
                            let ap = acc_at(r, c, i, j);
                            let acc = self.b.build_load(v8, ap, "a")?.into_vector_value();
                            let acc = if pair {
                                self.b.build_int_add(acc, pc, "acc")?
                            } else {
                                let sh = self.splat_i64((i + j) as u64);
                                let t = self.b.build_left_shift(pc, sh, "t")?;
                                if neg(i, j) {
                                    self.b.build_int_sub(acc, t, "acc")?
                                } else {
                                    self.b.build_int_add(acc, t, "acc")?
                                }
                            };
                            self.b.build_store(ap, acc)?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        let i32t = self.i32t;
        let load_i32 = |base: PointerValue<'ctx>, idx: IntValue<'ctx>| {
            let off = self.b.build_int_mul(idx, self.i64c(4), "o")?;
            Ok::<_, CpuError>(self.load(i32t, self.gep(base, off)?, 4)?.into_int_value())
        };
        let bipolar = spec.weight.dtype == ElemType::Bipolar;
        let zp = if spec.weight.zero_point {
            let za = load_i32(zps, self.i64c(0))?;
            let zw = load_i32(zps, self.i64c(1))?;
            let kc = i32t.const_int(spec.k as u64, false);
            let kzz = self
                .b
                .build_int_mul(self.b.build_int_mul(kc, za, "kz")?, zw, "kzz")?;
            Some((za, zw, kzz))
        } else {
            None
        };
        let is_first = self
            .b
            .build_int_compare(IntPredicate::NE, first, self.i64c(0), "first")?;
        for (c, &col) in cols_idx.iter().enumerate() {
            let colsum = if bipolar || zp.is_some() {
                Some(load_i32(colsums, col)?)
            } else {
                None
            };
            for (r, &row) in rows_idx.iter().enumerate() {
                let total = if pair {
                    let mut t = v8.const_zero();
                    for i in 0..xp {
                        for j in 0..yp {
                            let a = self
                                .b
                                .build_load(v8, acc_at(r, c, i, j), "a")?
                                .into_vector_value();
                            let s =
                                self.b
                                    .build_left_shift(a, self.splat_i64((i + j) as u64), "s")?;
                            t = if neg(i, j) {
                                self.b.build_int_sub(t, s, "t")?
                            } else {
                                self.b.build_int_add(t, s, "t")?
                            };
                        }
                    }
                    t
                } else {
                    self.b
                        .build_load(v8, acc_at(r, c, 0, 0), "a")?
                        .into_vector_value()
                };
                let dot = self.reduce_lanes(total)?;
                let mut dot = self.b.build_int_truncate(dot, i32t, "dot")?;
                // Corrections that belong to the whole sum, taken once.
                let mut corr = i32t.const_zero();
                if bipolar {
                    dot = self
                        .b
                        .build_left_shift(dot, i32t.const_int(1, false), "d2")?;
                    if let Some(cs) = colsum {
                        corr = self.b.build_int_sub(corr, cs, "corr")?;
                    }
                }
                if let (Some((za, zw, kzz)), Some(cs)) = (zp, colsum) {
                    let rs = load_i32(rowsums, row)?;
                    let a = self.b.build_int_mul(zw, cs, "zwa")?;
                    let b = self.b.build_int_mul(za, rs, "zaw")?;
                    corr = self.b.build_int_sub(corr, a, "corr")?;
                    corr = self.b.build_int_sub(corr, b, "corr")?;
                    corr = self.b.build_int_add(corr, kzz, "corr")?;
                }
                let ypp = self.y_ptr(y, col, row)?;
                let old = self.load(i32t, ypp, 4)?.into_int_value();
                let base = self
                    .b
                    .build_select(is_first, corr, old, "base")?
                    .into_int_value();
                let v = self.b.build_int_add(dot, base, "y")?;
                self.b.build_store(ypp, v)?;
            }
        }
        self.b.build_return(None)?;
        Ok(f)
    }

    /// Emits `lowbit_gemm` for a bit-serial spec: k passes of whole plane
    /// blocks (one pass when `n < 4`), each running rows in tiles of `R`
    /// and columns in tiles of `C`, then single columns, then single rows.
    pub(super) fn emit_bit_serial_kernel(&self) -> Result<(), CpuError> {
        let spec = self.spec;
        let (xp, yp) = (spec.weight_planes(), spec.act_planes());
        let (rt, ct, _) = tile_shape(xp, yp);
        // RxC, Rx1, 1xC, 1x1 (the same function where shapes coincide).
        let tiles = [
            self.emit_bs_tile(rt, ct)?,
            self.emit_bs_tile(rt, 1)?,
            self.emit_bs_tile(1, ct)?,
            self.emit_bs_tile(1, 1)?,
        ];
        // Stream the operand that a tile loads fewer planes of per block.
        let rows_inner = (rt as usize * xp) < (ct as usize * yp);
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, row_begin, row_end) = (ints[0], ints[1], ints[2]);
        let units = (spec.k_pad() / PLANE_BLOCK) as u64;
        let chunk = (PASS_BYTES / PLANE_BYTES / spec.act_planes() as u64).max(2);
        self.emit_k_passes(f, n, units, chunk, |pass| {
            let KPass {
                k: kb0, end, first, ..
            } = pass;
            let past =
                self.b
                    .build_int_compare(IntPredicate::UGT, end, self.i64c(units), "past")?;
            let kb1 = self
                .b
                .build_select(past, self.i64c(units), end, "kb1")?
                .into_int_value();
            let call = |tile: FunctionValue<'ctx>, r: IntValue<'ctx>, c: IntValue<'ctx>| {
                self.call_tile(tile, &ptrs, &[r, c, kb0, kb1, first])
            };
            let (r64, c64, zero) = (rt as u64, ct as u64, self.i64c(0));
            if rows_inner {
                // Columns outer: a column tile's activation planes stay
                // in L1 while the rows' weight planes (the operand
                // with fewer planes per tile) stream from L2.
                self.sweep(
                    f,
                    zero,
                    n,
                    c64,
                    |c| {
                        self.sweep(
                            f,
                            row_begin,
                            row_end,
                            r64,
                            |r| call(tiles[0], r, c),
                            |r| call(tiles[2], r, c),
                        )
                    },
                    |c| {
                        self.sweep(
                            f,
                            row_begin,
                            row_end,
                            r64,
                            |r| call(tiles[1], r, c),
                            |r| call(tiles[3], r, c),
                        )
                    },
                )?;
            } else {
                // Rows outer: the row tile's weight planes stay in L1
                // while the columns' activation planes stream.
                self.sweep(
                    f,
                    row_begin,
                    row_end,
                    r64,
                    |r| {
                        self.sweep(
                            f,
                            zero,
                            n,
                            c64,
                            |c| call(tiles[0], r, c),
                            |c| call(tiles[1], r, c),
                        )
                    },
                    |r| {
                        self.sweep(
                            f,
                            zero,
                            n,
                            c64,
                            |c| call(tiles[2], r, c),
                            |c| call(tiles[3], r, c),
                        )
                    },
                )?;
            }
            Ok(())
        })?;
        self.b.build_return(None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::tile_shape;

    /// Every tile keeps its per-pair accumulators within the budget, and
    /// the common shapes get the tiles the module docs promise.
    #[test]
    fn tiles_fit_the_register_budget() {
        for x in 1..=8 {
            for y in 1..=8 {
                let (r, c, pair) = tile_shape(x, y);
                if pair {
                    assert!((r * c) as usize * x * y <= super::ACC_BUDGET, "{x}x{y}");
                } else {
                    assert!(x * y > super::ACC_BUDGET, "{x}x{y}");
                }
            }
        }
        assert_eq!(tile_shape(2, 2), (2, 2, true));
        assert_eq!(tile_shape(1, 8), (2, 1, true));
        assert_eq!(tile_shape(8, 8), (2, 2, false));
    }
}
