//! The AMX-INT8 block-dot kernel: the block-dot GEMM of
//! `codegen/blockdot.rs` (`q4_0`/`q8_0` weights times activations
//! quantized per call to `i8` per 32-block) with each block's integer dot
//! products taken by one `tdpbsud` instead of `vpdpbusd` chains. The JIT
//! builds it for `n >= 2` (a static `n >= 2` or a run-time `n`) where the
//! host has AMX-INT8 and Linux grants the tile state (`jit.rs`); a static
//! `n = 1` and AOT objects keep the `vpdpbusd` kernel.
//!
//! Per tile call (`adtile_C`: [`PANELS`] 16-row weight panels by `C`
//! activation columns, `C <= 8`, over all of k) and 32-element block:
//! * A tile (`tmm0`, `C` rows x 32 bytes): the `C` columns' signed `i8`
//!   activation codes of the block, read straight from `x [n, k_pad]`
//!   (stride `k_pad`).
//! * B tile per panel (8 rows x 64 bytes): the block's weight codes in
//!   AMX's VNNI layout (row `g` = 16 weight rows x k `4g..4g+4`), which
//!   is the panel layout of the packed weights: `i8` weights (`u8`
//!   codes) are loaded straight from the weight stream (stride 64); `i4`
//!   weights are split into their low and high nibbles as in the
//!   `vpdpbusd` kernel and the 8 rows stored to a 512-byte stack buffer
//!   first (AMX has no nibble operand).
//! * C tile per panel (`C` rows x 16 `i32`): zeroed, one `tdpbsud`
//!   (signed activations x unsigned weight codes), stored to a stack
//!   buffer. Then, per column, exactly the `vpdpbusd` kernel's steps:
//!   the 16 lanes plus the column's block correction `-offset · Σ q_x`
//!   (exact integers: the same `i32` as the `vpdpbusd` chains), to `f32`,
//!   times `s_w · s_x`, fused into the column's accumulator. So the
//!   result is bit-identical to the `vpdpbusd` kernel's, and the accuracy
//!   bound of `codegen/blockdot.rs` holds unchanged.
//!
//! Two panels per call share each A tile and each column's correction
//! and scale; the second panel of the last pair of the matrix is the
//! last panel again (computed twice, stored with the same values). A call
//! stores only rows `row_begin..row_end`, like the `vpdpbusd` kernel.
//! Columns: with a static `n`, tiles of `min(n, 8)` columns and one of
//! `n % 8`; with a run-time `n`, tiles of 8 while 8 fit, then the last
//! 8 columns again (overlapping, recomputed bit-identically) if `n >= 8`,
//! else tiles of 4, 2 or 1 placed the same way. Each tile function loads
//! its own tile configuration (A and C tiles of `C` rows) and releases
//! the tile state at its end.
//!
//! Limits: `i4`/`i8` weights as the `vpdpbusd` kernel; x86-64 with
//! `amx-tile` and `amx-int8` in a process that has asked the kernel for
//! the AMX tile state (the JIT does); JIT only.

use super::{Gen, Params};
use crate::error::CpuError;
use crate::spec::{Dim, BLOCK, INT_PANEL};
use inkwell::values::{FunctionValue, IntValue, PointerValue};
use inkwell::IntPredicate;

/// Widest column tile: 8 columns x [`PANELS`] panels of `f32`
/// accumulators (16 zmm registers).
const MAX_COLS: u32 = 8;

/// Weight panels per tile call: they share each activation tile load and
/// each column's correction and scale.
const PANELS: u32 = 2;

/// Lanes (output rows) per panel.
const PANEL: u32 = INT_PANEL as u32;

/// Software prefetch distance on each panel's weight-code stream (bytes
/// ahead of the block being read), as in the `vpdpbusd` kernel.
const PF_DIST: u64 = 2048;

/// Bytes of one panel's B tile (8 rows of 64 bytes).
const B_BYTES: u64 = 512;

/// Tile registers: A (activations), then the panels' B tiles, then their
/// C tiles.
const TMM_A: u64 = 0;
const fn tmm_b(p: u64) -> u64 {
    1 + p
}
const fn tmm_c(p: u64) -> u64 {
    1 + PANELS as u64 + p
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// The exported entry point of the AMX block-dot kernel (see the
    /// module docs).
    pub(super) fn emit_amxdot_kernel(&self) -> Result<(), CpuError> {
        // Column tiles, widest first.
        let widths: Vec<u32> = match self.spec.n {
            Dim::Static(n) => {
                let wide = (n as u32).clamp(1, MAX_COLS);
                let rest = n as u32 % wide;
                if rest > 0 {
                    vec![wide, rest]
                } else {
                    vec![wide]
                }
            }
            Dim::Dynamic => vec![MAX_COLS, 4, 2, 1],
        };
        let tiles = widths
            .iter()
            .map(|&c| Ok((c, self.emit_amxdot_tile(c)?)))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, lo, hi) = (ints[0], ints[1], ints[2]);
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        let (wide_cols, wide) = tiles[0];
        let call = |tile: FunctionValue<'ctx>, pn: IntValue<'ctx>, c: IntValue<'ctx>| {
            self.call_tile(tile, &ptrs, &[pn, c, lo, hi])
        };
        self.emit_loop(
            f,
            p0,
            |p| Ok(self.b.build_int_compare(IntPredicate::ULT, p, p1, "pc")?),
            PANELS.into(),
            |pn| {
                // Whole wide tiles from column 0.
                self.emit_loop(
                    f,
                    self.i64c(0),
                    |c| self.fits(c, wide_cols.into(), n),
                    wide_cols.into(),
                    |c| call(wide, pn, c),
                )?;
                match self.spec.n {
                    Dim::Static(n) => {
                        if let Some(&(rest, tile)) = tiles.get(1) {
                            call(tile, pn, self.i64c(n as u64 - u64::from(rest)))?;
                        }
                        Ok(())
                    }
                    // The `n % 8` columns left: the widest tile that fits
                    // in n placed over the last columns (overlapping the
                    // ones before, recomputed bit-identically), after one
                    // at column 0 when n itself is below 8.
                    Dim::Dynamic => {
                        let left = self
                            .b
                            .build_and(n, self.i64c(MAX_COLS as u64 - 1), "left")?;
                        let any = self.b.build_int_compare(
                            IntPredicate::NE,
                            left,
                            self.i64c(0),
                            "any",
                        )?;
                        let at = |tile, c| call(tile, pn, c);
                        self.amx_if(f, any, || self.dynamic_rest(f, &tiles, n, &at), || Ok(()))
                    }
                }
            },
        )?;
        self.b.build_return(None)?;
        Ok(())
    }

    /// The last `n % 8 > 0` columns of a run-time `n` (see
    /// [`Gen::emit_amxdot_kernel`]): `tiles` are the 8-, 4-, 2- and
    /// 1-column tiles.
    fn dynamic_rest(
        &self,
        f: FunctionValue<'ctx>,
        tiles: &[(u32, FunctionValue<'ctx>)],
        n: IntValue<'ctx>,
        call: &impl Fn(FunctionValue<'ctx>, IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        let Some((&(cols, tile), narrower)) = tiles.split_first() else {
            return Ok(());
        };
        let fits =
            self.b
                .build_int_compare(IntPredicate::UGE, n, self.i64c(cols.into()), "fits")?;
        self.amx_if(
            f,
            fits,
            || {
                // A narrower tile runs only when n < 8 (`cols <= n < 2
                // cols`): once at column 0, once over the last columns
                // (the same call for the 1-column tile). The 8-column
                // tile has covered the columns before n % 8 otherwise.
                if cols < MAX_COLS {
                    call(tile, self.i64c(0))?;
                }
                if cols > 1 {
                    let last = self.b.build_int_sub(n, self.i64c(cols.into()), "last")?;
                    call(tile, last)?;
                }
                Ok(())
            },
            || self.dynamic_rest(f, narrower, n, call),
        )
    }

    /// A 64-byte aligned stack buffer of `bytes` bytes.
    fn aligned_buffer(&self, bytes: u64, name: &str) -> Result<PointerValue<'ctx>, CpuError> {
        let p = self
            .b
            .build_alloca(self.i8t.array_type(bytes as u32), name)?;
        if let Some(inst) = p.as_instruction() {
            inst.set_alignment(64)
                .map_err(|e| CpuError::Llvm(format!("{name} alignment: {e}")))?;
        }
        Ok(p)
    }

    /// Emits `adtile_C(x, w, ws, xs, corr, y, panel, c0, lo, hi)`:
    /// [`PANELS`] weight panels from `panel` on (the last panel repeated
    /// past the end) by `cols` activation columns from `c0` over all of
    /// k, storing rows `lo..hi`.
    fn emit_amxdot_tile(&self, cols: u32) -> Result<FunctionValue<'ctx>, CpuError> {
        let spec = self.spec;
        let Params { ptrs, ints, f } = self.function(&format!("adtile_{cols}"), 4, true)?;
        let (x, w, ws, xs, corr, y) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5]);
        let (panel0, c0, lo, hi) = (ints[0], ints[1], ints[2], ints[3]);
        let v16i = self.i32t.vec_type(PANEL);
        let v16f = self.f32t.vec_type(PANEL);
        let v16h = self.ctx.f16_type().vec_type(PANEL);
        let v64 = self.i8t.vec_type(64);
        let k_pad = spec.k_pad() as u64;
        let blocks = k_pad / BLOCK as u64;
        let panels = u64::from(PANELS);
        // Palette 1: A = cols rows x 32 bytes; B = 8 rows x 64 bytes; C =
        // cols rows x 64 bytes (16 i32).
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        let mut shape = |t: u64, rows: u32, bytes: u16| {
            let t = t as usize;
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&bytes.to_le_bytes());
            cfg[48 + t] = rows as u8;
        };
        shape(TMM_A, cols, BLOCK as u16);
        for p in 0..panels {
            shape(tmm_b(p), 8, 64);
            shape(tmm_c(p), cols, 64);
        }
        let cfg_p = self.aligned_buffer(64, "tilecfg")?;
        self.b.build_store(cfg_p, self.const_bytes(&cfg))?;
        self.amx("llvm.x86.ldtilecfg", &[cfg_p.into()])?;
        let accs = self.zeroed_accs(v16f, cols * PANELS)?;
        let nibbles = spec.weight.dtype.bits() == 4;
        let block_bytes = (PANEL * BLOCK as u32) as u64 * u64::from(spec.weight.dtype.bits()) / 8;
        let b_buf = self.aligned_buffer(panels * B_BYTES, "btiles")?;
        let c_buf = self.aligned_buffer(panels * u64::from(cols) * 64, "ctiles")?;
        // Panels `panel0 + p`, the last one repeated past the end.
        let last_panel = self.i64c((spec.m_pad() / INT_PANEL) as u64 - 1);
        let mut panel_ids = Vec::with_capacity(PANELS as usize);
        let mut w_panels = Vec::with_capacity(PANELS as usize);
        let mut s_panels = Vec::with_capacity(PANELS as usize);
        for p in 0..panels {
            let id = self.b.build_int_add(panel0, self.i64c(p), "pid")?;
            let id = self.umin(id, last_panel)?;
            panel_ids.push(id);
            let wo = self.i64c(INT_PANEL as u64 * spec.row_bytes() as u64);
            w_panels.push(self.gep(w, self.b.build_int_mul(id, wo, "wp")?)?);
            let so = self.i64c(blocks * PANEL as u64 * 2);
            s_panels.push(self.gep(ws, self.b.build_int_mul(id, so, "sp")?)?);
        }
        let x0 = self.gep(x, self.b.build_int_mul(c0, self.i64c(k_pad), "xo")?)?;
        let columns = self.indices(c0, cols)?;
        let c_blocks = columns
            .iter()
            .map(|&c| Ok(self.b.build_int_mul(c, self.i64c(blocks), "cb")?))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let stride64 = self.i64c(64).into();
        self.emit_range(f, self.i64c(0), self.i64c(blocks), |b| {
            let xb = self.b.build_int_mul(b, self.i64c(BLOCK as u64), "xb")?;
            self.amx(
                "llvm.x86.tileloadd64",
                &[
                    self.tmm(TMM_A),
                    self.gep(x0, xb)?.into(),
                    self.i64c(k_pad).into(),
                ],
            )?;
            for p in 0..panels {
                let wb = self.gep(
                    w_panels[p as usize],
                    self.b.build_int_mul(b, self.i64c(block_bytes), "wb")?,
                )?;
                // Past the weights' end this only prefetches, which
                // never faults.
                for line in 0..block_bytes / 64 {
                    self.prefetch(wb, PF_DIST + 64 * line)?;
                }
                let b_tile = if nibbles {
                    // Rows 2t and 2t + 1: the low and high nibbles of code
                    // vector t (k 8t..8t+4 and 8t+4..8t+8).
                    let dst = self.gep(b_buf, self.i64c(p * B_BYTES))?;
                    for t in 0..block_bytes / 64 {
                        let raw = self
                            .load(v64, self.gep(wb, self.i64c(64 * t))?, 1)?
                            .into_vector_value();
                        for (h, high) in [(0, false), (1, true)] {
                            let v = self.nibbles(raw, high, false)?;
                            let at = self.gep(dst, self.i64c(128 * t + 64 * h))?;
                            self.b
                                .build_store(at, v)?
                                .set_alignment(64)
                                .map_err(|e| CpuError::Llvm(format!("B row alignment: {e}")))?;
                        }
                    }
                    dst
                } else {
                    wb
                };
                self.amx(
                    "llvm.x86.tileloadd64",
                    &[self.tmm(tmm_b(p)), b_tile.into(), stride64],
                )?;
                self.amx("llvm.x86.tilezero", &[self.tmm(tmm_c(p))])?;
                self.amx(
                    "llvm.x86.tdpbsud",
                    &[self.tmm(tmm_c(p)), self.tmm(TMM_A), self.tmm(tmm_b(p))],
                )?;
                let c_tile = self.gep(c_buf, self.i64c(p * u64::from(cols) * 64))?;
                self.amx(
                    "llvm.x86.tilestored64",
                    &[self.tmm(tmm_c(p)), c_tile.into(), stride64],
                )?;
            }
            let mut wscales = Vec::with_capacity(PANELS as usize);
            for sp in &s_panels {
                let at = self.gep(
                    *sp,
                    self.b.build_int_mul(b, self.i64c(PANEL as u64 * 2), "so")?,
                )?;
                let s = self.load(v16h, at, 2)?.into_vector_value();
                wscales.push(self.b.build_float_ext(s, v16f, "ws")?);
            }
            for (c, &cb) in c_blocks.iter().enumerate() {
                let cb = self.b.build_int_add(cb, b, "cb")?;
                let four = self.b.build_int_mul(cb, self.i64c(4), "c4")?;
                let start = self.load(self.i32t, self.gep(corr, four)?, 4)?;
                let start = self.splat_n_value(v16i, start.into_int_value())?;
                let xsc = self.load(self.f32t, self.gep(xs, four)?, 4)?;
                let xsc = self.splat_n_value(v16f, xsc.into_float_value())?;
                for p in 0..panels {
                    let row = (p * u64::from(cols) + c as u64) * 64;
                    let dot = self
                        .load(v16i, self.gep(c_buf, self.i64c(row))?, 64)?
                        .into_vector_value();
                    // The `vpdpbusd` kernel's steps from here on: the same
                    // exact i32, converted, scaled and fused in the same
                    // order.
                    let dot = self.b.build_int_add(start, dot, "dot")?;
                    let dot = self.b.build_signed_int_to_float(dot, v16f, "dotf")?;
                    let scale = self.b.build_float_mul(wscales[p as usize], xsc, "sc")?;
                    let slot = accs[p as usize * cols as usize + c];
                    let old = self.b.build_load(v16f, slot, "a")?.into_vector_value();
                    let new = self.fma(dot, scale, old)?;
                    self.b.build_store(slot, new)?;
                }
            }
            Ok(())
        })?;
        self.amx("llvm.x86.tilerelease", &[])?;
        // Store rows max(lo, r)..min(hi, r + 16) of each panel and column.
        for (p, &panel) in panel_ids.iter().enumerate() {
            let r = self.b.build_int_mul(panel, self.i64c(PANEL as u64), "r")?;
            let mask = self.lane_mask(lo, hi, r)?;
            for (c, &col) in columns.iter().enumerate() {
                let yi = self.b.build_int_mul(col, self.i64c(spec.m as u64), "yi")?;
                let yi = self.b.build_int_add(yi, r, "yi")?;
                let yp = self.gep(y, self.b.build_int_mul(yi, self.i64c(4), "yo")?)?;
                let slot = accs[p * cols as usize + c];
                let v = self.b.build_load(v16f, slot, "a")?.into_vector_value();
                let bits = self.b.build_bit_cast(v, v16i, "bits")?.into_vector_value();
                self.masked_store(yp, bits, mask)?;
            }
        }
        self.b.build_return(None)?;
        Ok(f)
    }
}
