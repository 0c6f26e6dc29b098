//! The AMX-INT8 block-dot kernel: the block-dot GEMM of
//! `codegen/blockdot.rs` (`q4_0`/`q8_0` weights times activations
//! quantized per call to `i8` per 32-block) with each block's integer dot
//! products taken by `tdpbssd` (`i4`) or `tdpbsud` (`i8`) instead of
//! `vpdpbusd` chains. The JIT builds it for a static `n >= 8` (`i4`) or
//! `n >= 9` (`i8`, [`min_cols`]) where the host has
//! AMX-INT8 and Linux grants the tile state (`jit.rs`), and `lowbit
//! compile` for the same shapes on an AMX-INT8 target (`aot.rs`
//! `blockdot_on_amx`; the model's driver asks for the tile state); fewer
//! columns and a run-time `n` keep the `vpdpbusd` kernel.
//!
//! Per tile call (`adtile_C`: `C` activation columns, `C <= 16`, by one
//! or two 16-row weight panels, `tile_panels`, over all of k) and
//! 32-element block:
//! * A tile (`C` rows x 32 bytes): the columns' signed `i8` activation
//!   codes of the block, read straight from `x [n, k_pad]` (stride
//!   `k_pad`).
//! * B tile per panel (8 rows x 64 bytes): the block's weight codes in
//!   AMX's VNNI layout (row `g` = 16 weight rows x k `4g..4g+4`), which
//!   is the panel layout of the packed weights. `i8` weights (`u8`
//!   codes) are tile-loaded straight from the weight stream (512
//!   contiguous bytes per panel and block; staging them through vector
//!   loads into a stack ring, as an earlier version did, took 2 - 4 %
//!   longer at n = 8 from DRAM). `i4` weights are staged through vector
//!   registers into a stack ring, split into their low and high nibbles
//!   (AMX has no nibble operand) and centred on the way, `u4` code
//!   `w + 8` to the signed byte `w` (`centered_nibbles`: with GFNI one
//!   affine map per nibble vector, the one instruction the unsigned
//!   split took).
//! * C tile per panel (`C` rows x 16 `i32`): zeroed, one dot (`i4`:
//!   `tdpbssd`, signed activations x signed weights; `i8`: `tdpbsud`,
//!   signed activations x unsigned codes `w + 128`), stored to a stack
//!   ring. Then, per column, exactly the `vpdpbusd` kernel's steps from
//!   the same exact `i32` `Σ q_x · w` (for `i8` the 16 lanes plus the
//!   column's block correction `-128 · Σ q_x`; the `i4` lanes are that
//!   sum already): to `f32`, times `s_w · s_x`, fused into the column's
//!   accumulator. So the result is bit-identical to the `vpdpbusd`
//!   kernel's, and the accuracy bound of `codegen/blockdot.rs` holds
//!   unchanged. (Centring the `i4` codes dropped 16 vector adds and 8
//!   broadcast loads per block and panel pair: n = 8, 2 threads, q4_0
//!   1.35 against 1.42 - 1.47 ms, BENCHMARKS.md "pf helper"; for `i8`
//!   centring would cost an XOR per 64 codes, as many ops as it saves,
//!   and measured equal.)
//!
//! The three stages are software-pipelined over the blocks in one loop
//! with guarded stages (one copy of each stage's code, which keeps the
//! JIT time that of the `vpdpbusd` kernel; a loop per pipeline phase with
//! blocks in pairs took about twice as long to compile): block `b`'s
//! `f32` steps run after block `b + AHEAD`'s tile instructions are issued
//! and block `b + 2 AHEAD`'s codes are prefetched and (`i4`) staged,
//! through rings of
//! `RING` slots, so no tile load reads a just-stored vector and no
//! vector load a just-stored tile. The entry point walks the panel pairs
//! overlapping `row_begin..row_end` and, per pair, the column tiles (16
//! columns at a time, then one tile for the rest); a tile of one panel
//! is called twice. The second panel of the last pair of the matrix is the last
//! panel again (computed twice, stored with the same values); only rows
//! `row_begin..row_end` are stored. Each tile function loads its own tile
//! configuration and releases the tile state at its end.
//!
//! Measured (BENCHMARKS.md, "AMX block-dot"): the tile instructions
//! (loads, `tdpbsud`, stores) cost about the same whatever the number of
//! A rows and dominate the kernel's compute time, so it gains over
//! `vpdpbusd` only from about 8 columns on; with weights in L2 it is
//! about as fast as `vpdpbusd` at n = 8 and 16 and 10 - 15 % faster at
//! n = 32 (one thread); at DRAM sizes (m = 4096, k = 14336, 2 threads, a
//! busy machine) it took 0.64 - 0.91 of the `vpdpbusd` kernel's time.
//! Two blocks per `tdpbsud` (a block-diagonal A tile of 16 rows x 64
//! bytes, half zeros) took 1.08 - 1.15 times as long at n = 8: the zero
//! halves double the multiply work, and the tile rows loaded and stored
//! stay the same (BENCHMARKS.md, "two blocks per tile dot").
//!
//! Where the time goes at n = 8 from DRAM (BENCHMARKS.md, "pf helper";
//! m = 4096, k = 14336): the memory side alone is at the roofline — a
//! timing-only build that only stages the codes (no dots, no `f32`
//! steps) read q8_0 at 1.05 of the 2-thread DRAM probe (1.84 ms) and
//! 1.09 of the 1-thread one — but the full kernel takes about the
//! memory time plus half its in-cache compute time (1 thread q8_0: 3.6
//! ms staging only, 4.6 ms in all, against about 2 ms of compute),
//! and that holds for the pure vector `f32` steps as much as for the
//! tile instructions. With weights in L2 (i4, m = 128, one thread) the
//! tile instructions take about 57 of the kernel's 70 us; left out one
//! kind at a time, the C tile stores save 20 us, the dots 10 us, and A
//! and B loads and `tilezero` little (the rest is in their overlap). Tried and dropped on the memory side
//! (alternating runs, medians; none beyond the noise, some slower):
//! prefetch distances 1, 4, 8 and 16 KiB (`PF_DIST`), locality 1 and 2
//! (equal), `prefetchnta` (twice the time), no software prefetch (q8_0
//! 2.69 against 2.41 ms), one prefetch per 128 or 256 bytes (slower:
//! each line needs its own), a second prefetch 8 - 32 KiB ahead into
//! L2, prefetching the scale stream, the next panel pair's first lines
//! at the end of a call or each stream's first 2 KiB at its start, 3
//! or 4 panels (code streams) per tile call (equal from DRAM, 10 %
//! slower in cache), equal row chunks of 32 - 2048 rows instead of the
//! shrinking ones (`jit.rs`; equal or up to 5 % slower), a pipeline
//! distance of 3, centred `i8` codes (equal), and tile registers
//! alternating between even and odd blocks (A and B, A and C, B or C
//! alone: equal in cache, so the tiles' reuse does not serialize the
//! blocks).
//!
//! Limits: `i4`/`i8` weights as the `vpdpbusd` kernel, a static `n`;
//! x86-64 with `amx-tile` and `amx-int8` in a process that has asked the
//! kernel for the AMX tile state (the JIT does, and a compiled model's
//! driver).

use super::{Gen, Params};
use crate::error::CpuError;
use crate::spec::{Dim, BLOCK, INT_PANEL};
use inkwell::values::{FunctionValue, IntValue, PointerValue};
use inkwell::IntPredicate;

/// The least static `n` this kernel is built for, by weight width
/// (`bits`): 8 for `i4`, 9 for `i8`.
///
/// With fewer columns the tile instructions (whose cost hardly depends on
/// the number of A rows) cost more than the `vpdpbusd` chains they
/// replace (an earlier version of this kernel, m = 128, k = 14336, one
/// thread, weights in L2/L3, CPU time less the activation quantization:
/// n = 2 48 - 50 against 26 - 33 us, n = 4 55 against 40 - 49 us, n = 8
/// 65 against 74 us; BENCHMARKS.md, "AMX block-dot"). At n = 8 from DRAM
/// (m = 4096, k = 14336, 2 threads, `lowbit bench gemm`, alternating with
/// `LOWBIT_BLOCKDOT_AMX=0`, session 5) `i4` is faster on AMX (1.29 - 1.33
/// against 1.43 - 1.45 ms), but `i8` is faster on `vpdpbusd` (2.05 - 2.24
/// against 2.25 - 2.30 ms: one 8-column tile reads its codes once and
/// needs no nibble split, so its compute hides under the memory time
/// better than the tile stores). From 9 columns `vpdpbusd` needs a second
/// column tile and AMX is ahead or equal (`i8` n = 9 2.57 - 2.82 against
/// 2.75 - 2.83 ms, n = 12 2.94 - 2.97 against 3.24 - 3.36 ms, n = 16 3.28
/// - 3.45 against 3.47 - 3.57 ms).
pub(crate) const fn min_cols(bits: u32) -> usize {
    if bits == 8 {
        9
    } else {
        8
    }
}

/// Widest column tile: 16 columns (A and C tiles of 16 rows: a whole
/// `tdpbsud`) of one panel.
const MAX_COLS: u64 = 16;

/// Weight panels per call of a `cols`-column tile: two up to 8 columns
/// (they share each A tile load and each column's correction and scale;
/// 16 accumulators), one above. Measured at n = 16 (m = 128, k = 14336,
/// one thread, an earlier version): one 16-column tile 107 us, two
/// 8-column tiles of two panels 122 us, `vpdpbusd` 149 us; three panels
/// of 8 columns (24 accumulators) were slower than two at n = 8.
const fn tile_panels(cols: u32) -> u64 {
    if cols <= 8 {
        2
    } else {
        1
    }
}

/// Lanes (output rows) per panel.
const PANEL: u32 = INT_PANEL as u32;

/// Software prefetch distance on each panel's weight-code stream (bytes
/// ahead of the block being read: 4 `i8` or 8 `i4` blocks), one
/// `prefetcht0` per 64-byte line. Measured at n = 8 from DRAM (m = 4096,
/// k = 14336, `i8`, alternating runs): 1, 2, 4 and 8 KiB equal, 16 KiB
/// 4 % slower, none 12 % slower; locality 1 or 2 equal, 0 twice the
/// time (BENCHMARKS.md, "pf helper").
const PF_DIST: u64 = 2048;

/// Bytes of one panel's B tile (8 rows of 64 bytes).
const B_BYTES: u64 = 512;

/// How many blocks ahead of the `f32` steps the block dots run (and the
/// staging of the codes twice as far): so that the tile unit's work on later
/// blocks overlaps the vector work on this one, no vector load waits on
/// a just-stored C tile and no tile load on just-stored B rows. (Without
/// the distance, storing the nibbles and loading them as a tile right
/// away, the `i4` kernel took 1.7 - 4.7 times as long.)
const AHEAD: u64 = 2;

/// Slots of the B-row and C-tile rings (more than `AHEAD` blocks are in
/// flight in each; a power of two).
const RING: u64 = 4;

/// Tile registers: the A tile (activations), then each panel's B tile
/// (weights), then each panel's C tile (block dots). (Separate C tiles
/// for even and odd blocks made no measurable difference.)
const TMM_A: u64 = 0;
const fn tmm_b(p: u64) -> u64 {
    1 + p
}
const fn tmm_c(panels: u64, p: u64) -> u64 {
    1 + panels + p
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// The exported entry point of the AMX block-dot kernel (see the
    /// module docs); the spec has a static `n >= min_cols(bits)`.
    pub(super) fn emit_amxdot_kernel(&self) -> Result<(), CpuError> {
        let Dim::Static(n) = self.spec.n else {
            return Err(CpuError::Llvm(
                "the AMX block-dot kernel takes a static n".into(),
            ));
        };
        let n = n as u64;
        // Column tiles as (first column, columns): 16 at a time, then the
        // rest in one tile.
        let wide = n.clamp(1, MAX_COLS);
        let mut col_tiles: Vec<(u64, u64)> = (0..n / wide).map(|i| (i * wide, wide)).collect();
        if !n.is_multiple_of(wide) {
            col_tiles.push((n / wide * wide, n % wide));
        }
        let mut funcs: Vec<(u64, FunctionValue<'ctx>)> = Vec::new();
        for &(_, cols) in &col_tiles {
            if !funcs.iter().any(|&(c, _)| c == cols) {
                funcs.push((cols, self.emit_amxdot_tile(cols as u32)?));
            }
        }
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (lo, hi) = (ints[1], ints[2]);
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        // Panel pairs; each column tile takes both panels of the pair in
        // one call or in two (see `tile_panels`).
        self.emit_loop(
            f,
            p0,
            |p| Ok(self.b.build_int_compare(IntPredicate::ULT, p, p1, "pc")?),
            2,
            |pn| {
                for &(c0, cols) in &col_tiles {
                    let Some(&(_, tile)) = funcs.iter().find(|&&(c, _)| c == cols) else {
                        continue;
                    };
                    let c0 = self.i64c(c0);
                    for h in (0..2).step_by(tile_panels(cols as u32) as usize) {
                        let p = self.b.build_int_add(pn, self.i64c(h), "ph")?;
                        self.call_tile(tile, &ptrs, &[p, c0, lo, hi])?;
                    }
                }
                Ok(())
            },
        )?;
        self.b.build_return(None)?;
        Ok(())
    }

    /// A 64-byte aligned stack buffer of `bytes` bytes.
    pub(super) fn aligned_buffer(
        &self,
        bytes: u64,
        name: &str,
    ) -> Result<PointerValue<'ctx>, CpuError> {
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
    /// `tile_panels` weight panels from `panel` on (the last panel repeated
    /// past the end) by `cols` activation columns from `c0` over all of
    /// k, storing rows `lo..hi`, the stages pipelined (see the module
    /// docs).
    fn emit_amxdot_tile(&self, cols: u32) -> Result<FunctionValue<'ctx>, CpuError> {
        let spec = self.spec;
        let Params { ptrs, ints, f } = self.function(&format!("adtile_{cols}"), 4, true)?;
        let (w, ws, y) = (ptrs[1], ptrs[2], ptrs[5]);
        let (panel0, c0, lo, hi) = (ints[0], ints[1], ints[2], ints[3]);
        let v16f = self.f32t.vec_type(PANEL);
        let blocks = spec.k_pad() as u64 / BLOCK as u64;
        let panels = tile_panels(cols);
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
            shape(tmm_c(panels, p), cols, 64);
        }
        let cfg_p = self.aligned_buffer(64, "tilecfg")?;
        self.b.build_store(cfg_p, self.const_bytes(&cfg))?;
        self.amx("llvm.x86.ldtilecfg", &[cfg_p.into()])?;
        let accs = self.zeroed_accs(v16f, cols * panels as u32)?;
        let b_buf = if self.amxdot_signed_codes() {
            Some(self.aligned_buffer(RING * panels * B_BYTES, "brows")?)
        } else {
            None
        };
        let c_buf = self.aligned_buffer(RING * panels * u64::from(cols) * 64, "ctiles")?;
        // Panels `panel0 + p`, the last one repeated past the end.
        let last_panel = self.i64c((spec.m_pad() / INT_PANEL) as u64 - 1);
        let mut panel_ids = Vec::with_capacity(panels as usize);
        let mut w_panels = Vec::with_capacity(panels as usize);
        let mut s_panels = Vec::with_capacity(panels as usize);
        for p in 0..panels {
            let id = self.b.build_int_add(panel0, self.i64c(p), "pid")?;
            let id = self.umin(id, last_panel)?;
            panel_ids.push(id);
            let wo = self.i64c(INT_PANEL as u64 * spec.row_bytes() as u64);
            w_panels.push(self.gep(w, self.b.build_int_mul(id, wo, "wp")?)?);
            let so = self.i64c(blocks * PANEL as u64 * 2);
            s_panels.push(self.gep(ws, self.b.build_int_mul(id, so, "sp")?)?);
        }
        let columns = self.indices(c0, cols)?;
        let t = Tile {
            ptrs: &ptrs,
            cols,
            w_panels,
            s_panels,
            accs,
            b_buf,
            c_buf,
            c_blocks: columns
                .iter()
                .map(|&c| Ok(self.b.build_int_mul(c, self.i64c(blocks), "cb")?))
                .collect::<Result<Vec<_>, CpuError>>()?,
            x0: self.gep(
                ptrs[0],
                self.b
                    .build_int_mul(c0, self.i64c(spec.k_pad() as u64), "xo")?,
            )?,
        };
        // The pipeline over blocks, one loop with guarded stages (one copy
        // of each stage's code: the JIT time): iteration `i` stages the
        // codes of block `i`, issues the block dots of block `i - AHEAD`
        // and runs the f32 steps of block `i - 2 AHEAD`.
        let blocks_v = self.i64c(blocks);
        self.emit_range(f, self.i64c(0), self.i64c(blocks + 2 * AHEAD), |i| {
            let live = self
                .b
                .build_int_compare(IntPredicate::ULT, i, blocks_v, "un")?;
            self.amx_if(f, live, || self.amxdot_stage(&t, i), || Ok(()))?;
            // Unsigned: below `AHEAD` the index wraps past `blocks`.
            let j = self.b.build_int_sub(i, self.i64c(AHEAD), "j")?;
            let live = self
                .b
                .build_int_compare(IntPredicate::ULT, j, blocks_v, "dl")?;
            self.amx_if(f, live, || self.amxdot_dots(&t, j), || Ok(()))?;
            let live =
                self.b
                    .build_int_compare(IntPredicate::UGE, i, self.i64c(2 * AHEAD), "fl")?;
            let b = self.b.build_int_sub(i, self.i64c(2 * AHEAD), "b")?;
            self.amx_if(f, live, || self.amxdot_f32(&t, b), || Ok(()))
        })?;
        self.amx("llvm.x86.tilerelease", &[])?;
        self.store_panel_accs(y, &panel_ids, &columns, &t.accs, lo, hi)?;
        self.b.build_return(None)?;
        Ok(f)
    }

    /// `(j mod RING) · bytes`: the offset of block `j`'s ring slot.
    fn ring_slot(&self, j: IntValue<'ctx>, bytes: u64) -> Result<IntValue<'ctx>, CpuError> {
        let slot = self.b.build_and(j, self.i64c(RING - 1), "slot")?;
        Ok(self.b.build_int_mul(slot, self.i64c(bytes), "so")?)
    }

    /// The code bytes of panel `p`'s block `j`.
    fn amxdot_codes(
        &self,
        t: &Tile<'_, 'ctx>,
        p: u64,
        j: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>, CpuError> {
        let block_bytes = self.amxdot_block_bytes();
        self.gep(
            t.w_panels[p as usize],
            self.b.build_int_mul(j, self.i64c(block_bytes), "wb")?,
        )
    }

    /// Whether the B tiles hold the signed weights (`i4`: the staged
    /// nibbles are centred for free, `centered_nibbles`, and `tdpbssd`
    /// needs no block correction) rather than the unsigned codes (`i8`:
    /// `tdpbsud` on the codes as loaded, then the correction; centring
    /// them would cost one more op per 64 codes, as many as the
    /// corrections it saves).
    fn amxdot_signed_codes(&self) -> bool {
        self.spec.weight.dtype.bits() == 4
    }

    /// Code bytes of one panel and block: 16 rows x 32 k of 4 or 8 bits.
    fn amxdot_block_bytes(&self) -> u64 {
        (PANEL * BLOCK as u32) as u64 * u64::from(self.spec.weight.dtype.bits()) / 8
    }

    /// Prefetches the code stream of block `j` and, for `u4` codes, stages
    /// the block into its B-row ring slot: rows 2i and 2i + 1 of a
    /// panel's B tile are the centred low and high nibbles of code vector
    /// i (k 8i..8i+4 and 8i+4..8i+8). (`u8` codes are the B tiles as they
    /// are: `amxdot_dots` loads them from the stream.)
    fn amxdot_stage(&self, t: &Tile<'_, 'ctx>, j: IntValue<'ctx>) -> Result<(), CpuError> {
        let v64 = self.i8t.vec_type(64);
        let panels = t.w_panels.len() as u64;
        let slot = match t.b_buf {
            Some(b) => Some(self.gep(b, self.ring_slot(j, panels * B_BYTES)?)?),
            None => None,
        };
        for p in 0..panels {
            let wb = self.amxdot_codes(t, p, j)?;
            self.prefetch_codes(wb)?;
            // `i8` codes: tile-loaded straight from the stream.
            let Some(slot) = slot else { continue };
            let dst = self.gep(slot, self.i64c(p * B_BYTES))?;
            for i in 0..self.amxdot_block_bytes() / 64 {
                let raw = self
                    .load(v64, self.gep(wb, self.i64c(64 * i))?, 1)?
                    .into_vector_value();
                let rows = [
                    (self.centered_nibbles(raw, false)?, 128 * i),
                    (self.centered_nibbles(raw, true)?, 128 * i + 64),
                ];
                for (v, at) in rows {
                    self.b
                        .build_store(self.gep(dst, self.i64c(at))?, v)?
                        .set_alignment(64)
                        .map_err(|e| CpuError::Llvm(format!("B row alignment: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Prefetches the code lines `PF_DIST` past `wb` (one per 64 bytes
    /// of a block); past the weights' end this only prefetches, which
    /// never faults.
    fn prefetch_codes(&self, wb: PointerValue<'ctx>) -> Result<(), CpuError> {
        for line in 0..self.amxdot_block_bytes() / 64 {
            self.prefetch(wb, PF_DIST + 64 * line)?;
        }
        Ok(())
    }

    /// The block dots of block `j` into its C ring slot: the A tile, then
    /// per panel the B tile, a zeroed C tile, `tdpbsud` and the store.
    fn amxdot_dots(&self, t: &Tile<'_, 'ctx>, j: IntValue<'ctx>) -> Result<(), CpuError> {
        let panels = t.w_panels.len() as u64;
        let cols = u64::from(t.cols);
        let stride64 = self.i64c(64).into();
        let xb = self.b.build_int_mul(j, self.i64c(BLOCK as u64), "xb")?;
        self.amx(
            "llvm.x86.tileloadd64",
            &[
                self.tmm(TMM_A),
                self.gep(t.x0, xb)?.into(),
                self.i64c(self.spec.k_pad() as u64).into(),
            ],
        )?;
        let b_slot = match t.b_buf {
            Some(b) => Some(self.gep(b, self.ring_slot(j, panels * B_BYTES)?)?),
            None => None,
        };
        let c_slot = self.gep(t.c_buf, self.ring_slot(j, panels * cols * 64)?)?;
        for p in 0..panels {
            let b_tile = match b_slot {
                Some(slot) => self.gep(slot, self.i64c(p * B_BYTES))?,
                None => self.amxdot_codes(t, p, j)?,
            };
            self.amx(
                "llvm.x86.tileloadd64",
                &[self.tmm(tmm_b(p)), b_tile.into(), stride64],
            )?;
            let c = self.tmm(tmm_c(panels, p));
            self.amx("llvm.x86.tilezero", &[c])?;
            let dot = if self.amxdot_signed_codes() {
                "llvm.x86.tdpbssd"
            } else {
                "llvm.x86.tdpbsud"
            };
            self.amx(dot, &[c, self.tmm(TMM_A), self.tmm(tmm_b(p))])?;
            let c_tile = self.gep(c_slot, self.i64c(p * cols * 64))?;
            self.amx("llvm.x86.tilestored64", &[c, c_tile.into(), stride64])?;
        }
        Ok(())
    }

    /// The `f32` steps of block `b` from its C ring slot.
    fn amxdot_f32(&self, t: &Tile<'_, 'ctx>, b: IntValue<'ctx>) -> Result<(), CpuError> {
        let v16i = self.i32t.vec_type(PANEL);
        let v16f = self.f32t.vec_type(PANEL);
        let v16h = self.ctx.f16_type().vec_type(PANEL);
        let panels = t.w_panels.len() as u64;
        let cols = u64::from(t.cols);
        let (xs, corr) = (t.ptrs[3], t.ptrs[4]);
        let mut wscales = Vec::with_capacity(panels as usize);
        for sp in &t.s_panels {
            let at = self.gep(
                *sp,
                self.b.build_int_mul(b, self.i64c(PANEL as u64 * 2), "so")?,
            )?;
            let s = self.load(v16h, at, 2)?.into_vector_value();
            wscales.push(self.b.build_float_ext(s, v16f, "ws")?);
        }
        let c_slot = self.gep(t.c_buf, self.ring_slot(b, panels * cols * 64)?)?;
        for (c, &cb) in t.c_blocks.iter().enumerate() {
            let cb = self.b.build_int_add(cb, b, "cb")?;
            let four = self.b.build_int_mul(cb, self.i64c(4), "c4")?;
            // Unsigned codes: the dots start from the block correction.
            let start = if self.amxdot_signed_codes() {
                None
            } else {
                let s = self.load(self.i32t, self.gep(corr, four)?, 4)?;
                Some(self.splat_n_value(v16i, s.into_int_value())?)
            };
            let xsc = self.load(self.f32t, self.gep(xs, four)?, 4)?;
            let xsc = self.splat_n_value(v16f, xsc.into_float_value())?;
            for p in 0..panels {
                let row = (p * cols + c as u64) * 64;
                let dot = self
                    .load(v16i, self.gep(c_slot, self.i64c(row))?, 64)?
                    .into_vector_value();
                // The `vpdpbusd` kernel's steps from here on: the same
                // exact i32, converted, scaled and fused in the same
                // order.
                let dot = match start {
                    Some(start) => self.b.build_int_add(start, dot, "dot")?,
                    None => dot,
                };
                let dot = self.b.build_signed_int_to_float(dot, v16f, "dotf")?;
                let scale = self.b.build_float_mul(wscales[p as usize], xsc, "sc")?;
                let slot = t.accs[p as usize * t.cols as usize + c];
                let old = self.b.build_load(v16f, slot, "a")?.into_vector_value();
                let new = self.fma(dot, scale, old)?;
                self.b.build_store(slot, new)?;
            }
        }
        Ok(())
    }
}

/// What the pipeline stages of one tile function share.
struct Tile<'p, 'ctx> {
    /// The six kernel buffers.
    ptrs: &'p [PointerValue<'ctx>],
    /// Activation columns.
    cols: u32,
    /// Each panel's first code byte and first scale.
    w_panels: Vec<PointerValue<'ctx>>,
    s_panels: Vec<PointerValue<'ctx>>,
    /// `f32` accumulators, `[panel][column]`.
    accs: Vec<PointerValue<'ctx>>,
    /// Staged B tiles `[RING][panels][512]` of the centred `i4` weights;
    /// `None` for `i8`, whose code stream is the B tiles as it is.
    b_buf: Option<PointerValue<'ctx>>,
    /// Block dots `[RING][panels][cols][16 i32]`.
    c_buf: PointerValue<'ctx>,
    /// Each column's first block (index into the activation scales and
    /// corrections).
    c_blocks: Vec<IntValue<'ctx>>,
    /// The first column's activation codes.
    x0: PointerValue<'ctx>,
}
