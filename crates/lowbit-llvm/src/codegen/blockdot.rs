//! The block-dot kernel: `q4_0` (or `q8_0`) weights times activations
//! quantized per call to `i8` per 32-block (the IR's `quantize-activations` form, see
//! [`crate::spec::ActQuant`]), with an exact `i32` dot product per block
//! and an `f32` sum over blocks.
//!
//! Weights come in the W4A8 panel layout (`tile = 16x8, interleave = 8`,
//! `spec.rs`) as `u4` codes `w + 8` (`i8` weights: the W8A8 layout,
//! `tile = 16x4`, as `u8` codes `w + 128`, no unpacking), and one f16
//! scale per row and block
//! laid out `[panel, block, 16]` (`pack.rs`). Per 16-row panel and
//! 32-element block the tile loads the block's 256 code bytes (4 vectors),
//! splits low and high nibbles into 8 unsigned byte vectors (16 rows x one
//! 4-byte k-group each) and converts the 16 f16 scales. Then, per
//! activation column, `vpdpbusd` (unsigned weights x signed activation
//! bytes, each column's 4 bytes broadcast; two chains of 4, then an add)
//! sums the block into 16 `i32` lanes — one per output row — starting from the column's block
//! correction `-offset · Σ q_x` (which takes the `+8` or `+128` of the
//! codes back off), so the lane holds the exact `Σ q_x · q_w` (at most
//! 32·128·128 in magnitude, exact in `f32`).
//! It becomes `f32` exactly and is fused into the column's `f32`
//! accumulator as `acc += float(dot) · (s_w · s_x)`.
//!
//! The code stream is prefetched in software 2 KiB ahead (`PF_DIST`).
//!
//! Tiles: `T` columns (`T = min(n, 8)` for a static `n`, else 8; 8
//! accumulators, 8 weight vectors and the scales fit the 32 zmm registers)
//! and a 1-column tile for the remaining columns (compiled only where
//! some remain: a run-time n, or a static n not a multiple of `T`); panel
//! groups are the outer loop, so each group's weights (16 rows x all of k
//! per panel) are read from memory once for the first column tile and
//! from L2 for the others. Each tile call streams several panels, their
//! blocks one after the other in one k loop (`btile_TxP`): independent
//! code streams per thread keep more reads in flight than one. A static
//! `n = 1` runs 4 panels per call (`btile_1x4`; decode m = 4096,
//! k = 14336, 2 threads: 1.21 against 1.43 ms, `N1_PANELS`) and a
//! 1-panel tile for the last 1-3 panels of a row range; other n run 2
//! (`btile_8x2`, `NX_PANELS`), and a last group reaching past the row
//! range computes its last panel twice (no 1-panel tiles to compile).
//! With 2 panels the 16 accumulators no longer all fit in registers and
//! some are reloaded per block, which costs nothing measurable in cache,
//! while one thread reading the weights from DRAM took 2.86-2.95 against
//! 3.41-3.75 ms at n = 8 (i4; i8 4.24-4.25 against 5.07-6.15 ms;
//! `examples/blockdot_cpu_time.rs`, thread CPU time, 3 alternating rounds).
//!
//! Where the time goes at n = 8 (measured with that example, weights in
//! L2): about 66 cycles per panel and block at 3.5 GHz for 64 `vpdpbusd`
//! (ideal 32 at 2 per cycle) — the loop is bound by the two 512-bit ports
//! (p0, p5): besides the 64 dots each block takes 8 nibble splits and, per
//! column, the chain add, the conversion, the scale product and the FMA
//! (32 ops; without them a copy of the loop ran at 49 cycles, not 66).
//! The assembly has no spills at one panel per call and the broadcasts
//! are folded into the `vpdpbusd` memory operands. Tried and dropped
//! (same measurements): one chain of 8 per column (22.2 against 20.2 ns
//! per panel-block; the chain latency shows), the same with the 8
//! columns' chains interleaved per k-group (6 % slower), 2 panels x 4
//! columns sharing each activation broadcast (3 % faster in L2, 24 %
//! slower from DRAM), 3 panels x 8 columns (accumulators spilled: slower
//! than 2), 4 panels x 4 columns (slower), a prefetch distance of 1 or 4
//! KiB at n = 8 (1 KiB slower, 4 KiB equal), prefetching into L2 only
//! (`locality` 1 or 2: equal), prefetching the scale stream (equal), 6
//! or 8 panels per call at n = 1 (i4: 3 and 6 % slower than 4; i8
//! equal), short address displacements for the activation broadcasts
//! (a copy of the loop with 1-byte displacements ran 66 against 68
//! cycles: not the front end). BENCHMARKS.md has the figures.
//!
//! Around the kernel at decode n = 1 (m = 4096, k = 14336, 2 threads,
//! `lowbit bench`, medians of 5 alternating runs against main, shared
//! machine): the worker pool polls 100 us for the next job and for its
//! workers' end before sleeping (`pool.rs`: the two futex wake-ups per
//! call cost about 7 %), and the row chunks shrink towards the end of
//! the rows in whole 4-panel groups (`jit.rs` `row_chunks`): i4 1.12 ->
//! 1.06 ms, i8 2.10 -> 2.04 ms. Tried and dropped (equal within the
//! noise, or slower): the f16 scales 64-byte aligned and huge-page-advised like the
//! codes (1.11 against 1.10 ms), chunks of the rest over `4 · threads`
//! or `8 · threads` instead of `2 · threads` (1.10 and 1.12 against 1.08
//! ms), all chunks one 4-panel group (1.10 ms), chunks shrinking to 16
//! or 32 rows instead of 64 (1.12 against 1.09 ms), prefetching each
//! panel stream's first 2 KiB when a tile call starts (i4 1.109 against
//! 1.101 ms, i8 2.037 against 2.035 ms). The activation
//! quantization takes 5 us of the call (0.005).
//!
//! A call computes rows `row_begin..row_end`: panels overlapping them are
//! computed whole and only rows inside are stored.
//!
//! Buffers (the six kernel arguments): `x` = the quantized activation
//! codes `i8 [n, k_pad]` (0 after `k`), `w` = codes, `scales` = the packed
//! f16 weight scales, `zero_points` = the activation scales `f32 [n,
//! k_pad / 32]`, `bias` = the block corrections `i32 [n, k_pad / 32]`,
//! `y` = `f32 [n, m]`. `jit.rs` quantizes the activations before the call.
//!
//! Accuracy against the interpreter's result of the quantized graph
//! (`matmul(dequantize(q_x, s_x), dequantize(w, s_w))`, an f64 sum rounded
//! to f32): the block dot is exact; `s_w · s_x` and the product with it
//! are rounded once each, the interpreter's dequantized activation once,
//! and the kernel sums `k_pad / 32` terms in order per output, so
//! `|y - y_ref| <= (k_pad / 32 + 8) · 2^-24 · Σ_j |x̂_j · w_j|` with `x̂`
//! the dequantized activation (`spec.rs`, tested in
//! `tests/blockdot.rs`).
//!
//! Limits: `i4` or `i8` weights in groups of a multiple of 32 with f16 scales,
//! `f32` activations, no epilogue; without AVX-512 VNNI `vpdpbusd` is
//! emulated (exact, slower).

use super::{Gen, Params};
use crate::error::CpuError;
use crate::spec::{Dim, BLOCK, INT_PANEL};
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// Widest column tile: 8 `f32` accumulators of 16 rows.
const MAX_COLS: u32 = 8;

/// Software prefetch distance on the weight-code stream (bytes ahead of
/// the block being read: 8 blocks). Measured on the shared 2-core machine
/// under load 6-8 (alternating runs, `lowbit bench gemm --act-quant i8:32`,
/// n = 8): the median and best times with prefetching were below those
/// without in most rounds; 1, 2 and 4 KiB were indistinguishable.
const PF_DIST: u64 = 2048;

/// Panels per tile call at a static `n = 1`: independent code streams
/// per thread. Measured on the shared 2-core machine (decode m = 4096,
/// k = 14336, 2 threads, load 1.7-2.9, medians of 4 alternating rounds):
/// 1 panel 1.43 ms, 2 panels 1.26 ms, 3 panels 1.25 ms, 4 panels 1.21 ms;
/// with 4 panels a prefetch distance of 1, 2 or 4 KiB gave 1.19-1.21 ms,
/// 8 KiB (2 panels) was slower and none 1.31 ms.
const N1_PANELS: u32 = 4;

/// Panels per tile call at other `n` (static n > 1 and run-time n).
/// Two panels' code streams per thread overlap the memory reads with the
/// `vpdpbusd` work better than one; see the module docs for the figures.
const NX_PANELS: u32 = 2;

/// Lanes (output rows) per accumulator.
const PANEL: u32 = INT_PANEL as u32;

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// The exported entry point of the block-dot kernel.
    pub(super) fn emit_blockdot_kernel(&self) -> Result<(), CpuError> {
        let cols = match self.spec.n {
            Dim::Static(n) => (n as u32).clamp(1, MAX_COLS),
            Dim::Dynamic => MAX_COLS,
        };
        // Panels per tile call: `N1_PANELS` at a static n = 1, else
        // `NX_PANELS` (see both).
        let panels = match self.spec.n {
            Dim::Static(1) => N1_PANELS,
            _ => NX_PANELS,
        };
        // The one-column tiles take the columns after the last full tile;
        // a static n that is a multiple of the tile width needs none (not
        // compiled: JIT time).
        let ragged_cols = match self.spec.n {
            Dim::Static(n) => !(n as u64).is_multiple_of(cols.into()),
            Dim::Dynamic => true,
        };
        // At n = 1 the last 1 .. panels - 1 panels of a row range go to a
        // one-panel tile: a group repeating its last panel instead (below)
        // was about 2 % slower there (one thread, weights from DRAM,
        // medians of 6 alternating runs: 2.23 against 2.19 ms; the group's
        // panel bases are no longer one base plus constants). At other n
        // the repeat costs nothing measurable and saves compiling the
        // one-panel tiles (n = 8: 34 -> 23 ms of JIT CPU time).
        let repeat_last = cols > 1 || self.spec.n == Dim::Dynamic;
        let tiles =
            |p: u32| -> Result<(FunctionValue<'ctx>, Option<FunctionValue<'ctx>>), CpuError> {
                let wide = self.emit_blockdot_tile(cols, p, repeat_last)?;
                let one = if ragged_cols {
                    Some(self.emit_blockdot_tile(1, p, repeat_last)?)
                } else {
                    None
                };
                Ok((wide, one))
            };
        let group = tiles(panels)?;
        let single = if repeat_last { None } else { Some(tiles(1)?) };
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, lo, hi) = (ints[0], ints[1], ints[2]);
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        // All columns of the panel group from `pn` on: `cols`-wide tiles,
        // then one-column tiles for the rest.
        let columns =
            |pn: IntValue<'ctx>,
             (wide, one): (FunctionValue<'ctx>, Option<FunctionValue<'ctx>>)| {
                let c = self.emit_loop(
                    f,
                    self.i64c(0),
                    |c| self.fits(c, cols.into(), n),
                    cols.into(),
                    |c| self.call_tile(wide, &ptrs, &[pn, c, lo, hi]),
                )?;
                if let Some(one) = one {
                    self.emit_loop(
                        f,
                        c,
                        |c| Ok(self.b.build_int_compare(IntPredicate::SLT, c, n, "tc")?),
                        1,
                        |c| self.call_tile(one, &ptrs, &[pn, c, lo, hi]),
                    )?;
                }
                Ok(())
            };
        match single {
            // Groups from p0 on; a last group reaching past the range
            // repeats its last panel (see `emit_blockdot_tile`).
            None => {
                self.emit_loop(
                    f,
                    p0,
                    |pn| Ok(self.b.build_int_compare(IntPredicate::ULT, pn, p1, "pc")?),
                    panels.into(),
                    |pn| columns(pn, group),
                )?;
            }
            // Whole groups, then the panels left one at a time.
            Some(single) => self.sweep(
                f,
                p0,
                p1,
                panels.into(),
                |pn| columns(pn, group),
                |pn| columns(pn, single),
            )?,
        }
        self.b.build_return(None)?;
        Ok(())
    }

    /// Emits `btile_C(x, w, ws, xs, corr, y, panel, c0, lo, hi)` (or
    /// `btile_CxP` for `panels` > 1, its k loop reading the panels' blocks
    /// one after the other): `panels` consecutive weight panels
    /// from `panel` on by `cols` activation columns over all of k.
    fn emit_blockdot_tile(
        &self,
        cols: u32,
        panels: u32,
        repeat_last: bool,
    ) -> Result<FunctionValue<'ctx>, CpuError> {
        let spec = self.spec;
        let name = if panels == 1 {
            format!("btile_{cols}")
        } else {
            format!("btile_{cols}x{panels}")
        };
        let Params { ptrs, ints, f } = self.function(&name, 4, true)?;
        let (x, w, ws, xs, corr, y) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5]);
        let (panel0, c0, lo, hi) = (ints[0], ints[1], ints[2], ints[3]);
        let v16i = self.i32t.vec_type(PANEL);
        let v16f = self.f32t.vec_type(PANEL);
        let v16h = self.ctx.f16_type().vec_type(PANEL);
        let v64 = self.i8t.vec_type(64);
        let k_pad = spec.k_pad() as u64;
        let blocks = k_pad / BLOCK as u64;
        // accs[p * cols + c]: panel p, column c.
        let accs = self.zeroed_accs(v16f, cols * panels)?;
        // Code bytes of one panel and block: 16 rows x 32 k of 4 or 8 bits.
        let bytes = spec.weight.dtype.bits() == 8;
        let block_bytes = (PANEL * BLOCK as u32) as u64 * u64::from(spec.weight.dtype.bits()) / 8;
        // With `repeat_last`, panel p of the group is panel0 + p but at
        // most the last panel overlapping rows ..hi: a group reaching past
        // the row range recomputes that panel (bit-identical, the same rows
        // stored again) instead of needing a one-panel tile for the last
        // 1 .. panels - 1 panels.
        let mut panel_ids = self.indices(panel0, panels)?;
        if repeat_last && panels > 1 {
            let hi_up = self
                .b
                .build_int_add(hi, self.i64c(PANEL as u64 - 1), "hiu")?;
            let last = self.b.build_int_sub(
                self.b
                    .build_int_unsigned_div(hi_up, self.i64c(PANEL as u64), "pe")?,
                self.i64c(1),
                "pl",
            )?;
            panel_ids = panel_ids
                .into_iter()
                .map(|p| self.umin(p, last))
                .collect::<Result<Vec<_>, _>>()?;
        }
        // Panel bases: codes (16 rows x k_pad/2 bytes) and scales (16 f16
        // per block).
        let mut w_panels = Vec::with_capacity(panels as usize);
        let mut s_panels = Vec::with_capacity(panels as usize);
        for &panel in &panel_ids {
            w_panels.push(self.gep(
                w,
                self.b.build_int_mul(
                    panel,
                    self.i64c(INT_PANEL as u64 * spec.row_bytes() as u64),
                    "wp",
                )?,
            )?);
            s_panels.push(
                self.gep(
                    ws,
                    self.b
                        .build_int_mul(panel, self.i64c(blocks * PANEL as u64 * 2), "sp")?,
                )?,
            );
        }
        let columns: Vec<IntValue> = self.indices(c0, cols)?;
        let x_cols = columns
            .iter()
            .map(|&c| self.gep(x, self.b.build_int_mul(c, self.i64c(k_pad), "xo")?))
            .collect::<Result<Vec<_>, _>>()?;
        // Per-column block offsets (in elements) of the activation scales
        // and corrections.
        let c_blocks = columns
            .iter()
            .map(|&c| Ok(self.b.build_int_mul(c, self.i64c(blocks), "cb")?))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let prefetch = inkwell::intrinsics::Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(self.module, &[self.ptr.into()]))
            .ok_or_else(|| CpuError::Llvm("llvm.prefetch is not available".into()))?;
        let i32c = |v: u64| self.i32t.const_int(v, false);
        self.emit_range(f, self.i64c(0), self.i64c(blocks), |b| {
            let xb = self.b.build_int_mul(b, self.i64c(BLOCK as u64), "xb")?;
            for p in 0..panels as usize {
                let wb = self.gep(
                    w_panels[p],
                    self.b.build_int_mul(b, self.i64c(block_bytes), "wb")?,
                )?;
                // Prefetch the code lines PF_DIST ahead (one per 64 bytes of
                // this block's 256): the panel is one sequential stream, but
                // the hardware prefetchers alone left the loop waiting on
                // memory (see PF_DIST). Past the panel's end this touches the
                // next panel or, for the last one, at most PF_DIST bytes past
                // the buffer: a prefetch never faults.
                for line in 0..block_bytes / 64 {
                    // A plain (not inbounds) GEP: the address may lie past
                    // the buffer, which only a prefetch may do.
                    // SAFETY: the pointer is only prefetched, never loaded.
                    let pp = unsafe {
                        self.b
                            .build_gep(self.i8t, wb, &[self.i64c(PF_DIST + 64 * line)], "pf")?
                    };
                    // read, keep in all cache levels, data.
                    self.b.build_call(
                        prefetch,
                        &[pp.into(), i32c(0).into(), i32c(3).into(), i32c(1).into()],
                        "",
                    )?;
                }
                // 8 k-groups of 4: vector t holds k 8t..8t+4 in its low
                // nibbles and 8t+4..8t+8 in its high ones.
                // (`u8` codes: vector g holds k 4g..4g+4 as is.)
                let mut groups: Vec<(VectorValue, u64)> = Vec::with_capacity(8);
                for t in 0..block_bytes / 64 {
                    let raw = self
                        .load(v64, self.gep(wb, self.i64c(64 * t))?, 1)?
                        .into_vector_value();
                    if bytes {
                        groups.push((raw, 4 * t));
                    } else {
                        groups.push((self.nibbles(raw, false, false)?, 8 * t));
                        groups.push((self.nibbles(raw, true, false)?, 8 * t + 4));
                    }
                }
                let sp = self.gep(
                    s_panels[p],
                    self.b.build_int_mul(b, self.i64c(PANEL as u64 * 2), "so")?,
                )?;
                let wscale = self.load(v16h, sp, 2)?.into_vector_value();
                let wscale = self.b.build_float_ext(wscale, v16f, "ws")?;
                for c in 0..cols as usize {
                    // The column's block operands, loaded where they are
                    // used: hoisted above the panel loop, the 8 columns'
                    // splats stayed live across the weight loads and made
                    // n = 8 8-18 % slower. (With several panels at n = 1
                    // the panels repeat these two L1 loads.)
                    let cb = self.b.build_int_add(c_blocks[c], b, "cb")?;
                    let four = self.b.build_int_mul(cb, self.i64c(4), "c4")?;
                    let start = self.load(self.i32t, self.gep(corr, four)?, 4)?;
                    let start = self.splat_n_value(v16i, start.into_int_value())?;
                    let xrow = self.gep(x_cols[c], xb)?;
                    // Two dependency chains of 4 `vpdpbusd` (then one add)
                    // instead of one of 8: with 8 weights cached, L2-resident
                    // single-thread runs took 8 % less time (55 against 60 us
                    // for m = 256, k = 4096, n = 8); four chains of 2 were
                    // slower again (61 us).
                    let mut chains = [start, v16i.const_zero()];
                    for (g, &(wv, ko)) in groups.iter().enumerate() {
                        let xv = self.broadcast4(self.gep(xrow, self.i64c(ko))?)?;
                        let ch = g * 2 / groups.len();
                        chains[ch] = self.dot_u8s8(chains[ch], wv, xv)?;
                    }
                    let acc = self.b.build_int_add(chains[0], chains[1], "acc")?;
                    let dot = self.b.build_signed_int_to_float(acc, v16f, "dot")?;
                    let xsc = self.load(self.f32t, self.gep(xs, four)?, 4)?;
                    let xsc = self.splat_n_value(v16f, xsc.into_float_value())?;
                    let scale = self.b.build_float_mul(wscale, xsc, "sc")?;
                    let slot = accs[p * cols as usize + c];
                    let old = self.b.build_load(v16f, slot, "a")?.into_vector_value();
                    let new = self.fma(dot, scale, old)?;
                    self.b.build_store(slot, new)?;
                }
            }
            Ok(())
        })?;
        self.store_panel_accs(y, &panel_ids, &columns, &accs, lo, hi)?;
        self.b.build_return(None)?;
        Ok(f)
    }

    /// Stores the f32 accumulators `accs[p * columns.len() + c]` (16 rows
    /// of panel `panel_ids[p]`, output column `columns[c]`) into
    /// `y [n, m]`: only rows `max(lo, r)..min(hi, r + 16)` of each panel,
    /// so a call writes just the rows it was given.
    pub(super) fn store_panel_accs(
        &self,
        y: PointerValue<'ctx>,
        panel_ids: &[IntValue<'ctx>],
        columns: &[IntValue<'ctx>],
        accs: &[PointerValue<'ctx>],
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let v16i = self.i32t.vec_type(PANEL);
        let v16f = self.f32t.vec_type(PANEL);
        for (p, &panel) in panel_ids.iter().enumerate() {
            let r = self.b.build_int_mul(panel, self.i64c(PANEL as u64), "r")?;
            let mask = self.lane_mask(lo, hi, r)?;
            for (c, &col) in columns.iter().enumerate() {
                let yi = self
                    .b
                    .build_int_mul(col, self.i64c(self.spec.m as u64), "yi")?;
                let yi = self.b.build_int_add(yi, r, "yi")?;
                let yp = self.gep(y, self.b.build_int_mul(yi, self.i64c(4), "yo")?)?;
                let slot = accs[p * columns.len() + c];
                let v = self.b.build_load(v16f, slot, "a")?.into_vector_value();
                let bits = self.b.build_bit_cast(v, v16i, "bits")?.into_vector_value();
                self.masked_store(yp, bits, mask)?;
            }
        }
        Ok(())
    }

    /// `v` in every lane of a vector of type `ty`.
    pub(super) fn splat_n_value(
        &self,
        ty: inkwell::types::VectorType<'ctx>,
        v: impl inkwell::values::BasicValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let one = self
            .b
            .build_insert_element(ty.get_poison(), v, self.i32t.const_zero(), "one")?;
        let mask = self.i32t.vec_type(ty.get_size()).const_zero();
        Ok(self
            .b
            .build_shuffle_vector(one, ty.get_poison(), mask, "splat")?)
    }
}
