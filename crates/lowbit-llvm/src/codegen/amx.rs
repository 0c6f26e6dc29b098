//! The AMX-INT8 W8A8 and W4A8 kernel: an opt-in schedule
//! ([`crate::GemmKernel::compile_amx`]) with `tdpbusd` on 16x16 `i32`
//! accumulator tiles.
//!
//! Operands: the W8A8 panel layout (16 rows x 4 k per 64 bytes, see
//! `vnni.rs`) is AMX's B-tile layout, so 16 consecutive vectors of a panel
//! (64 k) are one 1 KiB B tile at stride 64, read straight from the packed
//! weights. Activations come packed by the caller (`jit.rs`, once per call)
//! into A tiles: `[n_pad / 16][k_pad / 64][16 rows][64 bytes]` with
//! `n_pad` a multiple of 32 and zero rows after `n`, so an A tile is 1 KiB
//! of consecutive bytes (one page, whole cache lines).
//!
//! 4-bit weights (`i4`, `u4`; W4A8) stay 4-bit in memory, in the W4A8
//! panel layout (one 64-byte vector = 16 rows x 8 k, the low nibbles k
//! `8v..8v+4`, the high ones `8v+4..8v+8`): AMX has no nibble operand,
//! so per k block and panel pair the codes are split into signed bytes
//! (`i4` sign-extended, `u4` zero-extended: the operand `vpdpbusd` takes,
//! `Gen::nibbles`, one `vgf2p8affineqb` or mask per 64 bytes) and stored
//! as B tiles (rows `2v` and `2v + 1` of a tile from vector `v`) in a
//! 16 KiB stack staging buffer (both panels x [`K_STEPS`] tiles), which
//! stays in L1 while every activation-row block of the column block
//! reads its B tiles from it: the split costs one pass over the pair's
//! codes per column block, not one per 32 activation rows. The first
//! activation-row block of the column block does the split, one step
//! ahead of its own tile loads (step `s + 1` before step `s`'s tiles,
//! so the vector work overlaps the `tdpbusd` chain and no tile load
//! reads a just-stored line): measured against a separate split pass
//! before the pair's blocks (m = 4096, k = 14336, 2 threads), n = 1
//! 1.63 against 2.33 ms, n = 32 2.04 against 2.60, n = 512 equal
//! (BENCHMARKS.md "amx4 helper"). It also prefetches the pair's next k
//! block of codes into L2 (the W8A8 kernel's first activation-row block
//! does that for its tiles).
//!
//! Loop nest (blocked for the caches): the panel pairs (32 output rows)
//! overlapping `row_begin..row_end` in row blocks of [`ROW_PAIRS`] pairs;
//! activation rows in column blocks of [`COL_ROWS`]; k in blocks of
//! [`K_STEPS`] 64-element steps; then for each panel pair of the row
//! block, for each 32 activation rows of the column block, one 2x2 block
//! of accumulator tiles (`tmm0..tmm3`) over the k block, with 2 A and 2 B
//! tile loads and 4 `tdpbusd` per step. A pair's weight slice for the k
//! block (32 x `64 K_STEPS` bytes) stays in L1 while the column block's
//! activation rows use it; the column block's activation slice comes from
//! L2. The first pair of the row block prefetches the next k block's
//! activation tiles into L2, and the first 32 activation rows the pair's
//! next weight tiles (the hardware prefetchers do not follow tile loads
//! across blocks well: about 10 % measured). The accumulators of the
//! whole row x column block live between k blocks (tile load and store,
//! 1 KiB each: 8 per `4 K_STEPS` products) in a buffer the caller puts
//! after the activation tiles, [`ACC_BYTES_PER_PAIR`] per panel pair, so
//! that threads working on different pairs never share a slot and no large
//! stack frame is needed. After the
//! last k block each accumulator tile's 16 rows (activation columns below
//! `n`) go through the shared W8A8 epilogue (`int_epilogue`: row offsets,
//! bias, ReLU, requantize, masked to the rows this call writes) as one
//! pass over all of k. A second panel past the last panel loads the last
//! one again and is never stored. Fixed tile registers through the
//! immediate-operand intrinsics, so LLVM's AMX type lowering is not
//! involved.
//!
//! Measured bounds (BENCHMARKS.md): the accumulator round trips between k
//! blocks and the tile loads (even from L1) each cost a large share of the
//! `tdpbusd` peak, so the kernel runs at about a quarter of it per thread.
//!
//! Limits: `i8`, `i4` and `u4` weights (no zero points: the caller
//! folds them into the codes, as for the `vpdpbusd` kernel); x86-64 with `amx-tile` and `amx-int8`, in a
//! process that has asked the kernel for the AMX tile state (the Rust
//! caller does, and so does the C driver of a model compiled ahead of
//! time, `lowbit compile`).

use super::{Gen, Params};
use crate::error::CpuError;
use crate::spec::{INT_BLOCK, INT_PANEL};
use inkwell::intrinsics::Intrinsic;
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use super::vnni::TileCall;

/// Bytes of one 16 x 64-byte tile.
const TILE_BYTES: u64 = 1024;
/// Panel pairs (32 output rows each) per row block.
const ROW_PAIRS: u64 = 8;
/// Activation rows per column block (a multiple of 32).
const COL_ROWS: u64 = 256;
/// 64-element k steps per k block: a pair's weight slice (32 x 64 x
/// `K_STEPS` bytes) stays in L1 while the column block's activation rows
/// use it.
const K_STEPS: u64 = 8;
/// Bytes of the 4-bit weights' staging buffer: B tiles of both panels of
/// a pair over one k block.
const STAGE_BYTES: u64 = 2 * K_STEPS * TILE_BYTES;
/// Bytes of 4-bit codes of one panel per 64-element k step.
const NIBBLE_STEP_BYTES: u64 = (INT_PANEL * INT_BLOCK / 2) as u64;

/// Bytes of accumulator buffer the caller provides per panel pair, after
/// the activation tiles (one column block's 2x2 blocks of that pair).
pub(crate) const ACC_BYTES_PER_PAIR: usize = (COL_ROWS / 32 * 4 * TILE_BYTES) as usize;

/// Loop values one 2x2 block needs.
struct Block<'ctx> {
    /// First panel of the pair.
    p: IntValue<'ctx>,
    /// First activation row (a multiple of 32).
    c: IntValue<'ctx>,
    /// k steps `s0..s1` of this k block.
    s0: IntValue<'ctx>,
    s1: IntValue<'ctx>,
    /// The block's four accumulator tiles in the caller's buffer.
    slot: PointerValue<'ctx>,
    /// Whether this block fetches the next k block's activation tiles
    /// (the first pair of the row block does) and weight tiles (the first
    /// 32 activation rows of the column block do) into L2.
    pre_a: IntValue<'ctx>,
    pre_b: IntValue<'ctx>,
    /// 4-bit weights: the staging buffer holding the pair's B tiles of
    /// this k block (panel `h`'s tile of step `s` at
    /// `(h K_STEPS + s - s0) TILE_BYTES`); `None` for `i8` weights, whose
    /// tiles are read from the packed weights.
    staged: Option<PointerValue<'ctx>>,
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// Calls the AMX intrinsic `name` (no overloads, no result).
    pub(super) fn amx(
        &self,
        name: &str,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<(), CpuError> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[]))
            .ok_or_else(|| CpuError::Llvm(format!("{name} is not available")))?;
        self.b.build_call(f, args, "")?;
        Ok(())
    }

    /// Tile register `t` as the intrinsics' immediate operand.
    pub(super) fn tmm(&self, t: u64) -> BasicMetadataValueEnum<'ctx> {
        self.i8t.const_int(t, false).into()
    }

    /// The exported entry point of the AMX W8A8/W4A8 kernel (see the module
    /// docs).
    pub(super) fn emit_amx_kernel(&self) -> Result<(), CpuError> {
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, lo, hi) = (ints[0], ints[1], ints[2]);
        // Palette 1, tiles 0..8 of 16 rows x 64 bytes.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
        }
        let v64 = self.i8t.vec_type(64);
        let cfg_p = self.b.build_alloca(v64, "tilecfg")?;
        self.b
            .build_store(cfg_p, self.const_bytes(&cfg))?
            .set_alignment(64)
            .map_err(|e| CpuError::Llvm(format!("tile config alignment: {e}")))?;
        self.amx("llvm.x86.ldtilecfg", &[cfg_p.into()])?;
        let stage = if self.spec.weight.dtype.bits() == 4 {
            Some(self.aligned_buffer(STAGE_BYTES, "stage")?)
        } else {
            None
        };
        let steps = self.i64c(self.spec.k_pad() as u64 / INT_BLOCK as u64);
        // The accumulator buffer follows the activation tiles (n rounded
        // up to 32 rows of k_pad bytes; see `jit.rs`).
        let n_pad = self.b.build_int_add(n, self.i64c(31), "np")?;
        let n_pad = self.b.build_and(n_pad, self.i64c(!31), "np")?;
        let tiles = self
            .b
            .build_int_mul(n_pad, self.i64c(self.spec.k_pad() as u64), "tb")?;
        let scratch = self.gep(ptrs[0], tiles)?;
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(INT_PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        let one = self.i64c(1);
        let call = TileCall {
            ptrs: ptrs.clone(),
            panel: p0,
            c0: self.i64c(0),
            kb0: self.i64c(0),
            first: one,
            last: one,
            lo,
            hi,
        };
        self.each(f, p0, p1, 2 * ROW_PAIRS, |pb| {
            let pe = self.b.build_int_add(pb, self.i64c(2 * ROW_PAIRS), "pe")?;
            let pe = self.umin(pe, p1)?;
            self.each(f, self.i64c(0), n, COL_ROWS, |cb| {
                let ce = self.b.build_int_add(cb, self.i64c(COL_ROWS), "ce")?;
                let ce = self.umin(ce, n)?;
                self.each(f, self.i64c(0), steps, K_STEPS, |s0| {
                    let s1 = self.b.build_int_add(s0, self.i64c(K_STEPS), "s1")?;
                    let s1 = self.umin(s1, steps)?;
                    let one_block = |c: IntValue<'ctx>,
                                     p: IntValue<'ctx>|
                     -> Result<(), CpuError> {
                        // Slot of (c, p): pair p / 2 (no other thread
                        // has it), activation rows c - cb of the block.
                        let ci = self.b.build_int_sub(c, cb, "ci")?;
                        let ci = self.b.build_int_unsigned_div(ci, self.i64c(32), "ci")?;
                        let pi = self.b.build_int_unsigned_div(p, self.i64c(2), "pi")?;
                        let si = self.b.build_int_mul(pi, self.i64c(COL_ROWS / 32), "si")?;
                        let si = self.b.build_int_add(si, ci, "si")?;
                        let so = self.b.build_int_mul(si, self.i64c(4 * TILE_BYTES), "so")?;
                        let block = Block {
                            p,
                            c,
                            s0,
                            s1,
                            slot: self.gep(scratch, so)?,
                            pre_a: self.b.build_int_compare(IntPredicate::EQ, p, pb, "pre_a")?,
                            pre_b: self.b.build_int_compare(IntPredicate::EQ, c, cb, "pre_b")?,
                            staged: stage,
                        };
                        self.amx_block(f, &call, &block, n, steps)
                    };
                    // Pairs outside, activation rows inside: a pair's
                    // weight slice (32 x 64 K_STEPS bytes, or its split
                    // nibbles in the staging buffer) stays in L1.
                    self.each(f, pb, pe, 2, |p| {
                        self.each(f, cb, ce, 32, |c| one_block(c, p))
                    })
                })
            })
        })?;
        self.amx("llvm.x86.tilerelease", &[])?;
        self.b.build_return(None)?;
        Ok(())
    }

    /// 64 constant bytes as a vector.
    pub(super) fn const_bytes(&self, bytes: &[u8; 64]) -> VectorValue<'ctx> {
        inkwell::types::VectorType::const_vector(
            &bytes
                .iter()
                .map(|&b| self.i8t.const_int(u64::from(b), false))
                .collect::<Vec<_>>(),
        )
    }

    /// `for (i = start; i < end; i += step) body(i)`, unsigned.
    fn each(
        &self,
        f: FunctionValue<'ctx>,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: u64,
        body: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        let cond = |i| Ok(self.b.build_int_compare(IntPredicate::ULT, i, end, "lt")?);
        self.emit_loop(f, start, cond, step, body)?;
        Ok(())
    }

    /// Prefetches `bytes` (whole cache lines) at `base + offset` for each
    /// base into L2.
    fn prefetch_tiles(
        &self,
        bases: &[PointerValue<'ctx>],
        offset: IntValue<'ctx>,
        bytes: u64,
    ) -> Result<(), CpuError> {
        let ptr = self.ctx.ptr_type(inkwell::AddressSpace::default());
        let pf = Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(self.module, &[ptr.into()]))
            .ok_or_else(|| CpuError::Llvm("llvm.prefetch is not available".into()))?;
        let i32c = |v: u64| self.i32t.const_int(v, false).into();
        for &base in bases {
            let tile = self.gep(base, offset)?;
            for line in 0..bytes / 64 {
                let p = self.gep(tile, self.i64c(line * 64))?;
                // Read, locality 2 (L2 and up), data cache.
                self.b
                    .build_call(pf, &[p.into(), i32c(0), i32c(2), i32c(1)], "")?;
            }
        }
        Ok(())
    }

    /// `if cond { then() } else { otherwise() }` at the current position.
    pub(super) fn amx_if(
        &self,
        f: FunctionValue<'ctx>,
        cond: IntValue<'ctx>,
        then: impl FnOnce() -> Result<(), CpuError>,
        otherwise: impl FnOnce() -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        let yes = self.ctx.append_basic_block(f, "amx_then");
        let no = self.ctx.append_basic_block(f, "amx_else");
        let done = self.ctx.append_basic_block(f, "amx_done");
        self.b.build_conditional_branch(cond, yes, no)?;
        self.b.position_at_end(yes);
        then()?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(no);
        otherwise()?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// One 32 x 32 block over one k block: output rows of panels `p` and
    /// `p + 1`, activation rows `c..c + 32`, k steps `s0..s1`; the
    /// accumulators start at zero on the first k block and come from (and
    /// go back to) the block's slot otherwise; after the last k block,
    /// the epilogue of each accumulator tile's rows below `n`.
    fn amx_block(
        &self,
        f: FunctionValue<'ctx>,
        call: &TileCall<'ctx>,
        blk: &Block<'ctx>,
        n: IntValue<'ctx>,
        steps: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let (x, w) = (call.ptrs[0], call.ptrs[1]);
        let ws: BasicMetadataValueEnum = self.i64c(64).into();
        let tile = |t: u64| self.gep(blk.slot, self.i64c(t * TILE_BYTES));
        let first = self
            .b
            .build_int_compare(IntPredicate::EQ, blk.s0, self.i64c(0), "first")?;
        self.amx_if(
            f,
            first,
            || {
                for t in 0..4 {
                    self.amx("llvm.x86.tilezero", &[self.tmm(t)])?;
                }
                Ok(())
            },
            || {
                for t in 0..4 {
                    self.amx("llvm.x86.tileloadd64", &[self.tmm(t), tile(t)?.into(), ws])?;
                }
                Ok(())
            },
        )?;
        // A tiles of activation rows c and c + 16: tile (c / 16, s).
        let g = self.b.build_int_unsigned_div(blk.c, self.i64c(16), "g")?;
        let row_tiles = self.b.build_int_mul(g, steps, "gt")?;
        let xa = self.gep(
            x,
            self.b
                .build_int_mul(row_tiles, self.i64c(TILE_BYTES), "xa")?,
        )?;
        let xb = self.gep(
            xa,
            self.b.build_int_mul(steps, self.i64c(TILE_BYTES), "xb")?,
        )?;
        // B tiles (i8): panels p and min(p + 1, last).
        let (w0, w1) = self.pair_panels(w, blk.p, steps, TILE_BYTES)?;
        let last_step = self.b.build_int_sub(steps, self.i64c(1), "ls")?;
        // 4-bit weights: the first 32 activation rows of the column block
        // split the pair's codes one step ahead of their own tile loads;
        // the other blocks find them all in the staging buffer.
        let nib = match blk.staged {
            Some(stage) => {
                let panels = self.pair_panels(w, blk.p, steps, NIBBLE_STEP_BYTES)?;
                self.amx_if(
                    f,
                    blk.pre_b,
                    || self.amx_stage_step(stage, panels, blk.s0, blk.s0, last_step),
                    || Ok(()),
                )?;
                Some((stage, panels))
            }
            None => None,
        };
        self.emit_loop(
            f,
            blk.s0,
            |s| {
                Ok(self
                    .b
                    .build_int_compare(IntPredicate::ULT, s, blk.s1, "sc")?)
            },
            1,
            |s| {
                let o = self.b.build_int_mul(s, self.i64c(TILE_BYTES), "o")?;
                // Next k block's tiles, for the blocks that use them first.
                {
                    let ahead = self.b.build_int_add(s, self.i64c(K_STEPS), "ahead")?;
                    let ahead = self.umin(ahead, last_step)?;
                    let po = self.b.build_int_mul(ahead, self.i64c(TILE_BYTES), "po")?;
                    self.amx_if(
                        f,
                        blk.pre_a,
                        || self.prefetch_tiles(&[xa, xb], po, TILE_BYTES),
                        || Ok(()),
                    )?;
                    if blk.staged.is_none() {
                        self.amx_if(
                            f,
                            blk.pre_b,
                            || self.prefetch_tiles(&[w0, w1], po, TILE_BYTES),
                            || Ok(()),
                        )?;
                    }
                }
                if let Some((stage, panels)) = nib {
                    let next = self.b.build_int_add(s, self.i64c(1), "next")?;
                    let more = self
                        .b
                        .build_int_compare(IntPredicate::ULT, next, blk.s1, "more")?;
                    let split = self.b.build_and(blk.pre_b, more, "split")?;
                    self.amx_if(
                        f,
                        split,
                        || self.amx_stage_step(stage, panels, next, blk.s0, last_step),
                        || Ok(()),
                    )?;
                }
                let load = |t: u64, p: PointerValue<'ctx>| -> Result<(), CpuError> {
                    self.amx("llvm.x86.tileloadd64", &[self.tmm(t), p.into(), ws])
                };
                // B tiles: from the packed weights (i8) or the staging
                // buffer (4-bit).
                let (b0, b1) = match blk.staged {
                    None => (self.gep(w0, o)?, self.gep(w1, o)?),
                    Some(stage) => {
                        let rel = self.b.build_int_sub(s, blk.s0, "rel")?;
                        let ro = self.b.build_int_mul(rel, self.i64c(TILE_BYTES), "ro")?;
                        let t0 = self.gep(stage, ro)?;
                        (t0, self.gep(t0, self.i64c(K_STEPS * TILE_BYTES))?)
                    }
                };
                let dp = |acc: u64, a: u64, b: u64| {
                    self.amx(
                        "llvm.x86.tdpbusd",
                        &[self.tmm(acc), self.tmm(a), self.tmm(b)],
                    )
                };
                for (t, p) in [
                    (4, self.gep(xa, o)?),
                    (5, self.gep(xb, o)?),
                    (6, b0),
                    (7, b1),
                ] {
                    load(t, p)?;
                }
                for (acc, a, b) in [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)] {
                    dp(acc, a, b)?;
                }
                Ok(())
            },
        )?;
        for t in 0..4 {
            self.amx("llvm.x86.tilestored64", &[self.tmm(t), tile(t)?.into(), ws])?;
        }
        let last = self
            .b
            .build_int_compare(IntPredicate::EQ, blk.s1, steps, "last")?;
        self.amx_if(f, last, || self.amx_epilogue(f, call, blk, n), || Ok(()))
    }

    /// The codes of panels `p` and `min(p + 1, last)` in the packed
    /// weights `w`, whose panels take `step_bytes` per 64-element k step.
    fn pair_panels(
        &self,
        w: PointerValue<'ctx>,
        p: IntValue<'ctx>,
        steps: IntValue<'ctx>,
        step_bytes: u64,
    ) -> Result<(PointerValue<'ctx>, PointerValue<'ctx>), CpuError> {
        let last_panel = (self.spec.m_pad() / INT_PANEL) as u64 - 1;
        let panel_bytes = self
            .b
            .build_int_mul(steps, self.i64c(step_bytes), "pbytes")?;
        let q = self.b.build_int_add(p, self.i64c(1), "q")?;
        let q = self.umin(q, self.i64c(last_panel))?;
        let w0 = self.gep(w, self.b.build_int_mul(p, panel_bytes, "w0")?)?;
        let w1 = self.gep(w, self.b.build_int_mul(q, panel_bytes, "w1")?)?;
        Ok((w0, w1))
    }

    /// 4-bit weights: splits the codes of k step `s` of the pair whose
    /// panels' codes start at `w0` and `w1` into signed bytes, as B tiles
    /// in `stage` (see [`Block::staged`]): vector `v` of a step's 512
    /// bytes gives tile rows `2v` (low nibbles, k `8v..8v+4`) and `2v + 1`
    /// (high nibbles). Prefetches the same step of the next k block into
    /// L2.
    fn amx_stage_step(
        &self,
        stage: PointerValue<'ctx>,
        (w0, w1): (PointerValue<'ctx>, PointerValue<'ctx>),
        s: IntValue<'ctx>,
        s0: IntValue<'ctx>,
        last_step: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let v64 = self.i8t.vec_type(64);
        let signed = self.spec.weight.dtype == crate::spec::I4;
        let ahead = self.b.build_int_add(s, self.i64c(K_STEPS), "ahead")?;
        let ahead = self.umin(ahead, last_step)?;
        let po = self
            .b
            .build_int_mul(ahead, self.i64c(NIBBLE_STEP_BYTES), "po")?;
        self.prefetch_tiles(&[w0, w1], po, NIBBLE_STEP_BYTES)?;
        let so = self
            .b
            .build_int_mul(s, self.i64c(NIBBLE_STEP_BYTES), "so")?;
        let rel = self.b.build_int_sub(s, s0, "rel")?;
        let ro = self.b.build_int_mul(rel, self.i64c(TILE_BYTES), "ro")?;
        for (h, base) in [(0u64, w0), (1, w1)] {
            let src = self.gep(base, so)?;
            let dst = self.gep(stage, ro)?;
            let dst = self.gep(dst, self.i64c(h * K_STEPS * TILE_BYTES))?;
            for v in 0..NIBBLE_STEP_BYTES / 64 {
                let raw = self
                    .load(v64, self.gep(src, self.i64c(64 * v))?, 1)?
                    .into_vector_value();
                for (high, at) in [(false, 128 * v), (true, 128 * v + 64)] {
                    let bytes = self.nibbles(raw, high, signed)?;
                    self.b
                        .build_store(self.gep(dst, self.i64c(at))?, bytes)?
                        .set_alignment(64)
                        .map_err(|e| CpuError::Llvm(format!("B tile alignment: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// The W8A8 epilogue of a finished 2x2 block (its tiles in the slot).
    /// Tile 2t + h: panel p + h, activation rows c + 16t + j.
    fn amx_epilogue(
        &self,
        f: FunctionValue<'ctx>,
        call: &TileCall<'ctx>,
        blk: &Block<'ctx>,
        n: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let v16 = self.i32t.vec_type(INT_PANEL as u32);
        let last_panel = (self.spec.m_pad() / INT_PANEL) as u64 - 1;
        for h in 0..2u64 {
            let pn = self.b.build_int_add(blk.p, self.i64c(h), "pn")?;
            let real =
                self.b
                    .build_int_compare(IntPredicate::ULE, pn, self.i64c(last_panel), "real")?;
            let store = self.ctx.append_basic_block(f, "amx_store");
            let next = self.ctx.append_basic_block(f, "amx_next");
            self.b.build_conditional_branch(real, store, next)?;
            self.b.position_at_end(store);
            let r = self.b.build_int_mul(pn, self.i64c(INT_PANEL as u64), "r")?;
            let mask = self.row_mask(call, r)?;
            for half in 0..2u64 {
                let tile = self.gep(blk.slot, self.i64c((2 * half + h) * TILE_BYTES))?;
                let c0 = self.b.build_int_add(blk.c, self.i64c(16 * half), "c0")?;
                let left = self.b.build_int_sub(n, c0, "left")?;
                let rows = self.b.build_select(
                    self.b
                        .build_int_compare(IntPredicate::SLT, left, self.i64c(16), "few")?,
                    left,
                    self.i64c(16),
                    "rows",
                )?;
                let rows = rows.into_int_value();
                self.emit_loop(
                    f,
                    self.i64c(0),
                    |j| Ok(self.b.build_int_compare(IntPredicate::SLT, j, rows, "jc")?),
                    1,
                    |j| {
                        let off = self.b.build_int_mul(j, self.i64c(64), "ro")?;
                        let acc = self
                            .load(v16, self.gep(tile, off)?, 64)?
                            .into_vector_value();
                        let col = self.b.build_int_add(c0, j, "col")?;
                        self.int_epilogue(call, mask, acc, r, col)
                    },
                )?;
            }
            self.b.build_unconditional_branch(next)?;
            self.b.position_at_end(next);
        }
        Ok(())
    }
}
