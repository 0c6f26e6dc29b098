//! The W8A8/W4A8 kernels: exact `i32` GEMM with `vpdpbusd` register tiles.
//!
//! Weights come packed in panels of 16 output rows (see `spec.rs`): one
//! 64-byte vector is 16 rows x one 4-byte k-group (`i8`), or 16 rows x two
//! k-groups as nibbles (`i4`/`u4`). A tile is `P` panels x `C` activation
//! columns with `P * C` accumulators of 16 `i32` lanes, lane `l` of panel
//! `p` being output row `16 p + l`. Per k-group it loads `P` weight vectors
//! and broadcasts each column's 4 activation bytes (`vpbroadcastd`), then
//! issues `P * C` `vpdpbusd` (u8 activations x s8 weights): no horizontal
//! reduction anywhere, and a column's 16 results are one contiguous store
//! in `y[n, m]`. Wide tiles: 4 panels x 6 columns for `i8` (24
//! accumulators + 4 weights + 1 broadcast of the 32 zmm registers), 2 x 11
//! for 4-bit weights (whose decoding competes with `vpdpbusd` for the
//! vector ports, so each decoded vector serves more columns).
//!
//! `i4` nibbles become signed bytes with one `vgf2p8affineqb` each where
//! the target's feature string has GFNI (a GF(2) bit matrix that copies
//! the nibble and replicates its sign bit), else with shifts; `u4` low
//! nibbles with a mask, high ones with `vgf2p8affineqb` or a shift and a
//! mask. They enter `vpdpbusd` as s8 weights, so no correction is needed.
//! `i8` activations are offset to `u8` by the caller (+128) and
//! `128 * rowsum(w)` comes off in the epilogue, as does an activation zero
//! point's share (both packed as one `i32` per row, `pack.rs`): all sums
//! wrap in `i32`, which is associative, so the result is the
//! interpreter's bit for bit.
//!
//! Passes: with `n >= 4` and no requantize, k is walked in passes of
//! 4096 (`i8`) or 2048 (`i4`/`u4`) elements and the whole panel/column
//! nest runs per pass: a wide tile's weight slice (256 or 128 KiB) stays in
//! L2 over all column tiles. The first pass stores, later ones add.
//! Decoding (`n < 4`) and requantizing take one pass. Weights must start
//! on a 64-byte boundary (`PackedWeights` does so) or every weight load
//! straddles two cache lines.
//!
//! Rows: a call computes rows `row_begin..row_end` (any bounds); panels
//! overlapping them are computed whole and only the rows inside are
//! stored (masked loads and stores, one lane mask per panel), so threads
//! write disjoint rows even when they share a panel. The epilogue has no
//! branches: a tile function is its k loop and one straight block, which
//! keeps LLVM's code generation short (the JIT compile time).
//!
//! Tiles: a dynamic `n` compiles four (wide and one-column, of the full
//! panel height and of one panel); a static `n` only those its column walk
//! calls: the wide ones where `n` reaches their width, and for the rest
//! `n % width` (all of `n` below the width) one tile exactly that wide,
//! called once per panel block, so every loaded or decoded weight vector
//! serves all of its columns (with one-column tiles for the rest, W4A8 at
//! n = 8 decoded each nibble vector 8 times: m = 4096, k = 14336, 2
//! threads, 4.0 ms against 1.85 ms now; BENCHMARKS.md "session 5
//! (lead)").
//!
//! Epilogue (`int_epilogue`): the row offset, then an optional `i32` bias
//! (`i32 [m]`, added with wrapping: into the first pass's start value, or
//! before the requantize), an optional ReLU (on the last pass, before the
//! `i32` store or the requantize), and the optional dyadic requantize to
//! `i8`, all 16 rows of a panel at once.
//!
//! Limits: without AVX-512 VNNI `vpdpbusd` is emulated by widening to
//! 32-bit lanes (exact, slower); no scales and no activation but ReLU
//! (weight zero points are folded into the packed codes by the caller,
//! activation zero points into the row offsets).

use super::{Gen, KPass, Params};
use crate::error::CpuError;
use crate::spec::{Dim, INT_BLOCK, INT_PANEL};
use inkwell::intrinsics::Intrinsic;
use inkwell::types::VectorType;
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;
use lowbit_ir::target::Int8Dot;

/// `(panels, columns)` of the wide tile for `i8` weights: 24 accumulators,
/// 4 weight vectors and a broadcast in the 32 zmm registers, 10 loads per
/// 24 `vpdpbusd`.
const TILE_I8: (u32, u32) = (4, 6);

/// The wide tile for 4-bit weights: each loaded vector takes two decoding
/// instructions (competing with `vpdpbusd` for the vector ports), so fewer
/// panels and more columns: 22 accumulators, 4 decoded weight vectors, 2
/// decoding matrices and a broadcast; 2 decodes per 22 `vpdpbusd`.
const TILE_I4: (u32, u32) = (2, 11);

/// Lanes (output rows) per accumulator.
const PANEL: u32 = INT_PANEL as u32;

/// The values a tile function receives, in order after the six buffers.
pub(super) struct TileCall<'ctx> {
    /// The six kernel buffers (x, w, requantize params, row sums, bias, y).
    pub(super) ptrs: Vec<PointerValue<'ctx>>,
    /// First panel.
    pub(super) panel: IntValue<'ctx>,
    /// First activation column.
    pub(super) c0: IntValue<'ctx>,
    /// First k block (of 64) of this pass.
    pub(super) kb0: IntValue<'ctx>,
    /// Nonzero on the first pass.
    pub(super) first: IntValue<'ctx>,
    /// Nonzero on the last pass.
    pub(super) last: IntValue<'ctx>,
    /// The rows this call may write: `lo..hi`.
    pub(super) lo: IntValue<'ctx>,
    /// See `lo`.
    pub(super) hi: IntValue<'ctx>,
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// k blocks (of 64) per pass when the kernel walks k in passes. Each
    /// pass re-reads and re-writes the `i32` outputs and runs every tile's
    /// epilogue once, so passes are long: 4096 `i8` elements (a wide
    /// tile's 256 KiB weight slice stays in L2 over the pass's column
    /// tiles) or 2048 nibble pairs. Measured at m = 4096, k = 14336,
    /// n = 512 (CPU time, 64-byte-aligned weights): 512-element passes
    /// (a 32 KiB slice for L1) reach 0.54-0.61 of the `vpdpbusd` peak,
    /// 2048 0.69, 4096 0.72-0.73, 7168 0.73; 4-bit weights 0.65-0.71 from
    /// 2048 to 14336 (noise).
    fn vnni_k_chunk(&self) -> u64 {
        if self.spec.weight.dtype.bits() == 8 {
            64
        } else {
            32
        }
    }

    /// The exported entry point of the W8A8/W4A8 kernel (see the module
    /// docs for the loop nest).
    pub(super) fn emit_vnni_kernel(&self) -> Result<(), CpuError> {
        let (tile_panels, tile_cols) = if self.spec.weight.dtype.bits() == 8 {
            TILE_I8
        } else {
            TILE_I4
        };
        // A static n needs the full-width tiles only when n >= tile_cols,
        // and for its remaining n % tile_cols columns (all of n below the
        // full width) one tile exactly that wide, called once: each
        // decoded or loaded weight vector then serves every column of the
        // rest (with one-column tiles W4A8 decoded its nibbles once per
        // column: n = 8 took 3.6 times as long as n = 1). The tiles a walk
        // never calls are not compiled (a shorter JIT compile), and a loop
        // that never runs calls the tile that is. A run-time n takes the
        // rest one column at a time.
        let (full, rest) = match self.spec.n {
            Dim::Static(n) => {
                let width = tile_cols as usize;
                // Below the full width the rest is all of n (at least one
                // column: n = 0 never calls a tile but needs one).
                let rest = if n < width { n.max(1) } else { n % width };
                (n >= width, rest as u32)
            }
            Dim::Dynamic => (true, 1),
        };
        let pair = |cols: u32| -> Result<_, CpuError> {
            Ok((
                self.emit_vnni_tile(tile_panels, cols)?,
                self.emit_vnni_tile(1, cols)?,
            ))
        };
        let (wide, narrow) = pair(if full { tile_cols } else { rest })?;
        let (wide1, narrow1) = if full && rest > 0 {
            pair(rest)?
        } else {
            (wide, narrow)
        };
        let rest_step = u64::from(rest.max(1));
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, lo, hi) = (ints[0], ints[1], ints[2]);
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        let units = (self.spec.k_pad() / INT_BLOCK) as u64;
        self.emit_k_passes(f, n, units, self.vnni_k_chunk(), |pass| {
            let KPass {
                k: kb0,
                first,
                last,
                ..
            } = pass;
            let call = |tile: FunctionValue<'ctx>, pn: IntValue<'ctx>, c: IntValue<'ctx>| {
                self.call_tile(tile, &ptrs, &[pn, c, kb0, first, last, lo, hi])
            };
            // Columns of one panel block: a wide tile's at a time, then
            // the rest (one call of the rest tile for a static n, one
            // column at a time for a run-time n).
            let columns =
                |pn: IntValue<'ctx>, wide: FunctionValue<'ctx>, rest: FunctionValue<'ctx>| {
                    self.sweep_by(
                        f,
                        self.i64c(0),
                        n,
                        (tile_cols as u64, rest_step),
                        |c| call(wide, pn, c),
                        |c| call(rest, pn, c),
                    )
                };
            self.sweep(
                f,
                p0,
                p1,
                tile_panels as u64,
                |pn| columns(pn, wide, wide1),
                |pn| columns(pn, narrow, narrow1),
            )?;
            Ok(())
        })?;
        self.b.build_return(None)?;
        Ok(())
    }

    /// Emits `vtile_PxC(x, w, params, rowsums, bias, y, panel, c0, kb0,
    /// first, last, lo, hi)`: `panels` weight panels by `cols` columns of
    /// `x` (`u8 [n, k_pad]`) over one k pass, then the epilogue.
    fn emit_vnni_tile(&self, panels: u32, cols: u32) -> Result<FunctionValue<'ctx>, CpuError> {
        let spec = self.spec;
        let Params { ptrs, ints, f } = self.function(&format!("vtile_{panels}x{cols}"), 7, true)?;
        let call = TileCall {
            ptrs,
            panel: ints[0],
            c0: ints[1],
            kb0: ints[2],
            first: ints[3],
            last: ints[4],
            lo: ints[5],
            hi: ints[6],
        };
        let (x, w) = (call.ptrs[0], call.ptrs[1]);
        let v16 = self.i32t.vec_type(PANEL);
        let v64 = self.i8t.vec_type(64);
        let accs = self.zeroed_accs(v16, panels * cols)?;
        let k_pad = spec.k_pad() as u64;
        let bits = spec.weight.dtype.bits() as u64;
        let panel_bytes = INT_PANEL as u64 * spec.row_bytes() as u64;
        // Weight bytes of one panel per 64-element k block.
        let block_bytes = (INT_PANEL * INT_BLOCK) as u64 * bits / 8;
        let w_panels: Vec<PointerValue> = (0..panels)
            .map(|pi| {
                let pn = self
                    .b
                    .build_int_add(call.panel, self.i64c(pi as u64), "pn")?;
                let off = self.b.build_int_mul(pn, self.i64c(panel_bytes), "wo")?;
                let kb = self
                    .b
                    .build_int_mul(call.kb0, self.i64c(block_bytes), "wk")?;
                let off = self.b.build_int_add(off, kb, "wo")?;
                self.gep(w, off)
            })
            .collect::<Result<_, _>>()?;
        let x_cols: Vec<PointerValue> = (0..cols)
            .map(|c| {
                let col = self.b.build_int_add(call.c0, self.i64c(c as u64), "c")?;
                let off = self.b.build_int_mul(col, self.i64c(k_pad), "xo")?;
                let kb = self
                    .b
                    .build_int_mul(call.kb0, self.i64c(INT_BLOCK as u64), "xk")?;
                let off = self.b.build_int_add(off, kb, "xo")?;
                self.gep(x, off)
            })
            .collect::<Result<_, _>>()?;
        // The last pass runs to the end (the only pass when decoding).
        let units = k_pad / INT_BLOCK as u64;
        let kb1 = self
            .b
            .build_int_add(call.kb0, self.i64c(self.vnni_k_chunk()), "kb1")?;
        let is_last =
            self.b
                .build_int_compare(IntPredicate::NE, call.last, self.i64c(0), "islast")?;
        let kb1 = self
            .b
            .build_select(is_last, self.i64c(units), kb1, "kb1")?
            .into_int_value();
        // One step = one 64-byte weight vector per panel: 4 k (i8) or 8 k
        // (two nibble k-groups).
        let k_per_step = 32 / bits;
        let steps = self.b.build_int_sub(kb1, call.kb0, "nb")?;
        let steps =
            self.b
                .build_int_mul(steps, self.i64c(INT_BLOCK as u64 / k_per_step), "steps")?;
        let signed_nibbles = spec.weight.dtype == crate::spec::I4;
        self.emit_loop(
            f,
            self.i64c(0),
            |s| {
                Ok(self
                    .b
                    .build_int_compare(IntPredicate::ULT, s, steps, "sc")?)
            },
            1,
            |s| {
                let woff = self.b.build_int_mul(s, self.i64c(64), "woff")?;
                let xoff = self.b.build_int_mul(s, self.i64c(k_per_step), "xoff")?;
                let raw: Vec<VectorValue> = w_panels
                    .iter()
                    .map(|&wp| Ok(self.load(v64, self.gep(wp, woff)?, 1)?.into_vector_value()))
                    .collect::<Result<_, CpuError>>()?;
                // (weight vectors, byte offset of their k-group in x).
                let groups: Vec<(Vec<VectorValue>, u64)> = if bits == 8 {
                    vec![(raw, 0)]
                } else {
                    let lo = raw
                        .iter()
                        .map(|&r| self.nibbles(r, false, signed_nibbles))
                        .collect::<Result<_, _>>()?;
                    let hi = raw
                        .iter()
                        .map(|&r| self.nibbles(r, true, signed_nibbles))
                        .collect::<Result<_, _>>()?;
                    vec![(lo, 0), (hi, 4)]
                };
                for (wv, xo) in groups {
                    let xo = self.b.build_int_add(xoff, self.i64c(xo), "xo")?;
                    for (c, &xc) in x_cols.iter().enumerate() {
                        let xb = self.broadcast4(self.gep(xc, xo)?)?;
                        for (pi, &wp) in wv.iter().enumerate() {
                            let ap = accs[pi * cols as usize + c];
                            let acc = self.b.build_load(v16, ap, "a")?.into_vector_value();
                            let acc = self.dot_u8s8(acc, xb, wp)?;
                            self.b.build_store(ap, acc)?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        for pi in 0..panels {
            let pn = self
                .b
                .build_int_add(call.panel, self.i64c(pi as u64), "pn")?;
            let r = self.b.build_int_mul(pn, self.i64c(PANEL as u64), "r")?;
            let mask = self.row_mask(&call, r)?;
            for c in 0..cols {
                let col = self.b.build_int_add(call.c0, self.i64c(c as u64), "col")?;
                let acc = self
                    .b
                    .build_load(v16, accs[(pi * cols + c) as usize], "a")?
                    .into_vector_value();
                self.int_epilogue(&call, mask, acc, r, col)?;
            }
        }
        self.b.build_return(None)?;
        Ok(f)
    }

    /// The low (`high = false`) or high nibbles of 64 packed bytes as bytes:
    /// sign-extended for `i4`, zero-extended for `u4`.
    pub(super) fn nibbles(
        &self,
        raw: VectorValue<'ctx>,
        high: bool,
        signed: bool,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        if self.target.kernel_paths().int8_dot == Int8Dot::Avx512Vnni
            && self.target.has("gfni")
            && (high || signed)
        {
            return self.gf2_nibbles(raw, high, signed, 0);
        }
        let four = self.splat_n(self.i8t, 64, 4);
        Ok(match (high, signed) {
            (false, true) => {
                let up = self.b.build_left_shift(raw, four, "nup")?;
                self.b.build_right_shift(up, four, true, "nlo")?
            }
            (true, true) => self.b.build_right_shift(raw, four, true, "nhi")?,
            (false, false) => self
                .b
                .build_and(raw, self.splat_n(self.i8t, 64, 15), "nlo")?,
            (true, false) => self.b.build_right_shift(raw, four, false, "nhi")?,
        })
    }

    /// The nibbles of `u4` codes `w + 8` (`high` as in [`Gen::nibbles`])
    /// as the signed bytes `w`: the code with its top bit flipped,
    /// sign-extended. With GFNI that is one affine map (the sign-extending
    /// one of `nibbles`, then bits 3..8 flipped by its constant `0xf8`),
    /// the same one instruction as the unsigned nibbles; otherwise the
    /// unsigned nibbles minus 8.
    pub(super) fn centered_nibbles(
        &self,
        raw: VectorValue<'ctx>,
        high: bool,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        if self.target.kernel_paths().int8_dot == Int8Dot::Avx512Vnni && self.target.has("gfni") {
            return self.gf2_nibbles(raw, high, true, 0xf8);
        }
        let u = self.nibbles(raw, high, false)?;
        Ok(self
            .b
            .build_int_sub(u, self.splat_n(self.i8t, 64, 8), "wc")?)
    }

    /// `vgf2p8affineqb(raw, matrix, xor)`: per byte, the low or high
    /// nibble (`high`) in bits 0..4 and, above them, its top bit
    /// (`signed`) or zeros, then XORed with `xor`.
    fn gf2_nibbles(
        &self,
        raw: VectorValue<'ctx>,
        high: bool,
        signed: bool,
        xor: u8,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        // One GF(2) affine map per byte (`vgf2p8affineqb`): output bit
        // i is the parity of (row i of the matrix AND the byte), row i
        // being byte 7 - i of the 64-bit matrix. Rows pick bit i of the
        // nibble for bits 0..4 and its top bit (signed) or nothing
        // (unsigned) for bits 4..8.
        let mut rows = [0u8; 8];
        for (i, row) in rows.iter_mut().enumerate() {
            let src = if i < 4 {
                Some(i)
            } else if signed {
                Some(3)
            } else {
                None
            };
            *row = src.map_or(0, |b| 1 << (b + if high { 4 } else { 0 }));
        }
        let matrix = u64::from_be_bytes(rows);
        let m = VectorType::const_vector(
            &(0..64)
                .map(|j| {
                    self.i8t
                        .const_int(u64::from(matrix.to_le_bytes()[j % 8]), false)
                })
                .collect::<Vec<_>>(),
        );
        Ok(self
            .call_intrinsic(
                "llvm.x86.vgf2p8affineqb.512",
                &[],
                &[
                    raw.into(),
                    m.into(),
                    self.i8t.const_int(u64::from(xor), false).into(),
                ],
            )?
            .into_vector_value())
    }

    /// 4 bytes at `p` repeated over 64 (one `vpbroadcastd`).
    pub(super) fn broadcast4(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let v16 = self.i32t.vec_type(PANEL);
        let d = self.load(self.i32t, p, 1)?.into_int_value();
        let one = self
            .b
            .build_insert_element(v16.get_poison(), d, self.i32t.const_zero(), "x1")?;
        let splat = self
            .b
            .build_shuffle_vector(one, v16.get_poison(), v16.const_zero(), "xb")?;
        Ok(self
            .b
            .build_bit_cast(splat, self.i8t.vec_type(64), "xb")?
            .into_vector_value())
    }

    /// `acc + dot4(x, w)` per 32-bit lane: 4 unsigned bytes of `x` times 4
    /// signed bytes of `w`, wrapping like `vpdpbusd` (which it is, with
    /// AVX-512 VNNI).
    pub(super) fn dot_u8s8(
        &self,
        acc: VectorValue<'ctx>,
        x: VectorValue<'ctx>,
        w: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        if self.target.kernel_paths().int8_dot == Int8Dot::Avx512Vnni {
            return Ok(self
                .call_intrinsic(
                    "llvm.x86.avx512.vpdpbusd.512",
                    &[],
                    &[acc.into(), x.into(), w.into()],
                )?
                .into_vector_value());
        }
        let v32 = self.i32t.vec_type(64);
        let xz = self.b.build_int_z_extend(x, v32, "xz")?;
        let wz = self.b.build_int_s_extend(w, v32, "wz")?;
        let prod = self.b.build_int_mul(xz, wz, "prod")?;
        let mut out = acc;
        for j in 0..4u64 {
            let part = self.b.build_shuffle_vector(
                prod,
                prod,
                self.shuffle_mask((0..16).map(|l| 4 * l + j)),
                "part",
            )?;
            out = self.b.build_int_add(out, part, "dp")?;
        }
        Ok(out)
    }

    /// The lanes of the panel at row `r` that this call writes, rows
    /// `lo..hi`, as a `<16 x i1>` mask: one per panel, shared by its
    /// columns.
    pub(super) fn row_mask(
        &self,
        call: &TileCall<'ctx>,
        r: IntValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        self.lane_mask(call.lo, call.hi, r)
    }

    /// The lanes of the 16-row panel at row `r` inside rows `lo..hi`, as a
    /// `<16 x i1>` mask.
    pub(super) fn lane_mask(
        &self,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        r: IntValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let v16 = self.i32t.vec_type(PANEL);
        // Lane l is row r + l: written when lo - r <= l < hi - r, the
        // bounds clamped to 0..=16 so that they fit the i32 lanes.
        let clamp = |v: IntValue<'ctx>| -> Result<VectorValue<'ctx>, CpuError> {
            let d = self.b.build_int_sub(v, r, "d")?;
            let neg = self
                .b
                .build_int_compare(IntPredicate::SLT, d, self.i64c(0), "neg")?;
            let d = self
                .b
                .build_select(neg, self.i64c(0), d, "d")?
                .into_int_value();
            let big =
                self.b
                    .build_int_compare(IntPredicate::SGT, d, self.i64c(PANEL as u64), "big")?;
            let d = self
                .b
                .build_select(big, self.i64c(PANEL as u64), d, "d")?
                .into_int_value();
            let d = self.b.build_int_truncate(d, self.i32t, "d32")?;
            let one =
                self.b
                    .build_insert_element(v16.get_poison(), d, self.i32t.const_zero(), "d1")?;
            Ok(self
                .b
                .build_shuffle_vector(one, v16.get_poison(), v16.const_zero(), "ds")?)
        };
        let (a, b) = (clamp(lo)?, clamp(hi)?);
        let lane = VectorType::const_vector(
            &(0..PANEL)
                .map(|l| self.i32t.const_int(u64::from(l), false))
                .collect::<Vec<_>>(),
        );
        let ge = self.b.build_int_compare(IntPredicate::SGE, lane, a, "ge")?;
        let lt = self.b.build_int_compare(IntPredicate::SLT, lane, b, "lt")?;
        Ok(self.b.build_and(ge, lt, "rows")?)
    }

    /// What happens to one accumulator (16 rows `r..r + 16` of column
    /// `col`) after a pass: the row offset (the `i8`-activation and zero
    /// point corrections) and the bias, then either ReLU and the dyadic
    /// requantize to `i8` (one pass) or the `i32` sum, started on the first
    /// pass and added to on later ones, with ReLU on the last. Only the
    /// lanes in `mask` (rows `lo..hi`, see `row_mask`) are read and
    /// written, by masked loads and stores: no branch, so a tile is one
    /// straight block after its k loop.
    pub(super) fn int_epilogue(
        &self,
        call: &TileCall<'ctx>,
        mask: VectorValue<'ctx>,
        acc: VectorValue<'ctx>,
        r: IntValue<'ctx>,
        col: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let (params, sums, bias, y) = (call.ptrs[2], call.ptrs[3], call.ptrs[4], call.ptrs[5]);
        let v16 = self.i32t.vec_type(PANEL);
        // The row offsets (`pack.rs`): -128 * rowsum(w) when i8
        // activations were offset by +128, minus an activation zero point's
        // share.
        let so = self.b.build_int_mul(r, self.i64c(4), "so")?;
        let offset = self.load(v16, self.gep(sums, so)?, 4)?.into_vector_value();
        let yi = self
            .b
            .build_int_mul(col, self.i64c(self.spec.m as u64), "yi")?;
        let yi = self.b.build_int_add(yi, r, "yi")?;
        if self.spec.epilogue.requantize {
            // One pass covers all of k here (see `emit_vnni_kernel`).
            let acc = self.b.build_int_add(acc, offset, "acc")?;
            let acc = self.int_relu(self.int_bias(acc, bias, r)?, None)?;
            let q = self.dyadic_requantize(acc, params, r)?;
            return self.masked_store(self.gep(y, yi)?, q, mask);
        }
        let yp = self.gep(y, self.b.build_int_mul(yi, self.i64c(4), "yo")?)?;
        // The first pass starts the sum (with the offset and the bias),
        // later ones add to it: wrapping i32 adds are associative and
        // commute, so it is exact. The ReLU waits for the last pass. The
        // first pass reads nothing (an all-false mask touches no memory).
        let start = self.int_bias(offset, bias, r)?;
        let is_first =
            self.b
                .build_int_compare(IntPredicate::NE, call.first, self.i64c(0), "isfirst")?;
        let read = self
            .b
            .build_select(is_first, mask.get_type().const_zero(), mask, "rmask")?
            .into_vector_value();
        let old = self
            .call_intrinsic(
                "llvm.masked.load",
                &[v16.into(), self.ptr.into()],
                // LLVM 22's form: no alignment operand (the pointer is only
                // assumed element-aligned, all x86 masked loads need).
                &[yp.into(), read.into(), v16.const_zero().into()],
            )?
            .into_vector_value();
        let base = self
            .b
            .build_select(is_first, start, old, "base")?
            .into_vector_value();
        let sum = self.b.build_int_add(acc, base, "sum")?;
        let sum = self.int_relu(sum, Some(call.last))?;
        self.masked_store(yp, sum, mask)
    }

    /// Stores the lanes of `v` selected by `mask` to `p[lane]`.
    pub(super) fn masked_store(
        &self,
        p: PointerValue<'ctx>,
        v: VectorValue<'ctx>,
        mask: VectorValue<'ctx>,
    ) -> Result<(), CpuError> {
        let f = Intrinsic::find("llvm.masked.store")
            .and_then(|i| i.get_declaration(self.module, &[v.get_type().into(), self.ptr.into()]))
            .ok_or_else(|| CpuError::Llvm("llvm.masked.store is not available".into()))?;
        // LLVM 22's form: (value, pointer, mask), no alignment operand.
        self.b
            .build_call(f, &[v.into(), p.into(), mask.into()], "")?;
        Ok(())
    }

    /// `clamp(round_half_even(acc * M / 2^shift) + zp, -128, 127)` as `i8`
    /// for the 16 rows `r..r + 16`, `(M, shift, zp)` read from the three
    /// `i32 [m_pad]` arrays in `params`; exact integer arithmetic in i64
    /// (the caller keeps shift in 0..=62).
    fn dyadic_requantize(
        &self,
        acc: VectorValue<'ctx>,
        params: PointerValue<'ctx>,
        r: IntValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let v16 = self.i32t.vec_type(PANEL);
        let w64 = self.i64t.vec_type(PANEL);
        let m_pad = self.spec.m_pad() as u64;
        let c64 = |v: i64| self.splat_n(self.i64t, PANEL, v as u64);
        let field = |i: u64| -> Result<VectorValue<'ctx>, CpuError> {
            let idx = self.b.build_int_add(r, self.i64c(i * m_pad), "pi")?;
            let off = self.b.build_int_mul(idx, self.i64c(4), "po")?;
            let v = self
                .load(v16, self.gep(params, off)?, 4)?
                .into_vector_value();
            Ok(self.b.build_int_s_extend(v, w64, "p")?)
        };
        let (mult, shift, zp) = (field(0)?, field(1)?, field(2)?);
        let t = self.b.build_int_s_extend(acc, w64, "t")?;
        let t = self.b.build_int_mul(t, mult, "t")?;
        let q = self.b.build_right_shift(t, shift, true, "q")?;
        let back = self.b.build_left_shift(q, shift, "back")?;
        let rem = self.b.build_int_sub(t, back, "rem")?;
        // half = 2^(shift-1); with shift = 0 the remainder is 0 and nothing
        // rounds.
        let zero_shift = self
            .b
            .build_int_compare(IntPredicate::EQ, shift, c64(0), "s0")?;
        let sm1 = self.b.build_int_sub(shift, c64(1), "sm1")?;
        let sm1 = self
            .b
            .build_select(zero_shift, c64(0), sm1, "sm1")?
            .into_vector_value();
        let half = self.b.build_left_shift(c64(1), sm1, "half")?;
        let above = self
            .b
            .build_int_compare(IntPredicate::UGT, rem, half, "above")?;
        let tie = self
            .b
            .build_int_compare(IntPredicate::EQ, rem, half, "tie")?;
        let odd = self.b.build_and(q, c64(1), "odd")?;
        let odd = self
            .b
            .build_int_compare(IntPredicate::NE, odd, c64(0), "odd")?;
        let tie_up = self.b.build_and(tie, odd, "tieup")?;
        let up = self.b.build_or(above, tie_up, "up")?;
        let nonzero = self.b.build_not(zero_shift, "nz")?;
        let up = self.b.build_and(up, nonzero, "up")?;
        let up = self.b.build_int_z_extend(up, w64, "up")?;
        let q = self.b.build_int_add(q, up, "q")?;
        let q = self.b.build_int_add(q, zp, "q")?;
        let below = self
            .b
            .build_int_compare(IntPredicate::SLT, q, c64(-128), "lo")?;
        let q = self
            .b
            .build_select(below, c64(-128), q, "q")?
            .into_vector_value();
        let over = self
            .b
            .build_int_compare(IntPredicate::SGT, q, c64(127), "hi")?;
        let q = self
            .b
            .build_select(over, c64(127), q, "q")?
            .into_vector_value();
        Ok(self
            .b
            .build_int_truncate(q, self.i8t.vec_type(PANEL), "y8")?)
    }
}
