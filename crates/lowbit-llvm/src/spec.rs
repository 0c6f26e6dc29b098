//! GEMM kernel specifications and the packed weight layout each one uses.
//!
//! A [`GemmSpec`] describes `Y[n, m] = act(X[n, k] · W[m, k]ᵀ + bias[m])`
//! with `W` quantized: integer codes of 1 to 8 bits (or `b1`, `f8E4M3FN`,
//! `f8E5M2`, `f4E2M1FN`), one scale per output row (`PerChannel`) or per `group`
//! consecutive elements of a row (`Group`), optional zero points of the
//! weight's element type. [`GemmSpec::check`] decides whether the CPU backend
//! can run a spec and returns [`CpuError::Unsupported`] otherwise.
//!
//! The packed layout is expressed with lowbit-ir's [`Layout`] on the logical
//! weight shape `[m, k_pad]` (`k_pad` = `k` rounded up to 32; the padding
//! holds code 0 and meets zero activations, so it adds nothing):
//! * 8-bit codes: dense bytes;
//! * 4- and 2-bit codes: `interleave = 32`, so each 32-element block is one
//!   16- (8-) byte load whose nibbles (crumbs) unpack with shifts and masks
//!   into elements `j, j + 16` (`j, j + 8, ..`) — the q4_0 order;
//! * other widths (1, 3, 5, 6, 7 bits): `tile = 1x32, bitplanes`: each
//!   32-element block is stored as `bits` 32-bit planes.
//!
//! Microscaling: `f4E2M1FN` weights take `f8E8M0FNU` scales per 32-block
//! (MXFP4; code 0xFF is NaN) or `f8E4M3FN` scales per 16-block with an
//! optional f32 tensor scale (NVFP4, [`WeightSpec::tensor_scale`]); a group
//! of 16 puts two scales in one 32-element block (low and high half).
//!
//! Limits: activations `f32`, `f16` or `bf16` (converted to `f32` once per
//! call); scales `f32`, `f16`, `bf16`, `f8E8M0FNU` or `f8E4M3FN`; groups 16
//! or a multiple of 32; epilogue
//! bias and ReLU, GELU (erf and tanh forms) or SiLU. The integer paths —
//! W8A8/W4A8 (`u8`/`i8` activations, `i8`, `i4` or `u4` weights) and W1A1
//! (`b1` both, rows padded to 512 bits) — produce exact `i32` sums and take
//! no scales or weight zero points; W8A8/W4A8 take an `i32` bias, ReLU and
//! a dyadic requantization to `i8` (in that order), W1A1 no epilogue.
//!
//! W8A8/W4A8 weights are packed for `vpdpbusd` (see `codegen/vnni.rs`):
//! the logical `[m, k]` weight is padded to `[m_pad, k_pad]` (`m` to a
//! multiple of [`INT_PANEL`] = 16 rows, `k` to 64) with code 0 and cut into
//! panels of 16 rows. `i8`: `tile = 16x4`, so one 64-byte vector holds 16
//! rows' 4-byte k-groups — one `vpdpbusd` operand, each 32-bit lane one
//! output row. `i4`/`u4`: `tile = 16x8, interleave = 8`: the 64 bytes hold
//! 16 rows x 8 k, byte `j` of a row's 4 holding element `j` in its low
//! nibble and `j + 4` in its high nibble, so a mask (or sign-extending
//! shift) of the low nibbles gives the first k-group and a shift of the
//! high nibbles the second, both as the signed bytes `vpdpbusd` takes.
//!
//! The bit-serial path ([`GemmSpec::bit_serial`], `schedule = BitSerial`,
//! the IR's `matmul_int {schedule = bit_serial}`): `x`-bit integer (or `b1`)
//! weights times `y`-bit integer activations, `x, y` in 1..=8, signed or
//! unsigned, as `Σ_ij ±2^(i+j) popcount(A_j and W_i)` over bit-planes. The
//! weights are stored `tile = 1x512, bitplanes` (each 512-element block of
//! a row as `x` planes of 64 bytes), rows padded with code 0 to 512
//! elements; activations are packed the same way at each call. Optional
//! per-tensor zero points of both operands (the IR's `matmul_int a, b, za,
//! zb`) are given at run time. Results are exact, wrapping to `i32`.

use crate::error::CpuError;
use lowbit_ir::{Granularity, IntSchedule, Layout, TensorType};
use lowbit_numerics::{ElemType, FloatFormat};
use std::fmt;

/// Elements per packed block: the unit the kernels unpack at once.
pub const BLOCK: usize = 32;

/// Elements per block of the bit-serial kernels: one 512-bit plane word.
pub const PLANE_BLOCK: usize = 512;

/// Elements of `k` per block of the integer (W8A8/W4A8) kernels: `k` is
/// padded to whole blocks (one 64-byte activation vector).
pub const INT_BLOCK: usize = 64;

/// Output rows per weight panel of the W8A8/W4A8 kernels: one 32-bit
/// `vpdpbusd` lane per row of a 512-bit vector.
pub const INT_PANEL: usize = 16;

/// `i4` (the numerics crate names only the 8-bit integer types).
pub(crate) const I4: ElemType = ElemType::Int {
    bits: 4,
    signed: true,
};

/// `u4`.
pub(crate) const U4: ElemType = ElemType::Int {
    bits: 4,
    signed: false,
};

/// Which weights share a scale (and zero point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightGranularity {
    /// One scale per output row `m` (scale shape `[m]`).
    PerChannel,
    /// One scale per `group` consecutive elements along `k` (scale shape
    /// `[m, ceil(k / group)]`); the last group of a row may be partial.
    Group(usize),
}

/// The number of columns `n` of the activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Known when the kernel is compiled.
    Static(usize),
    /// Given at each call.
    Dynamic,
}

/// The activation function applied in the epilogue: the IR's own
/// [`lowbit_ir::Activation`] (the same values as the `qmatmul` epilogue;
/// GELU and SiLU run on the float paths only, see `codegen` for the bound).
pub use lowbit_ir::Activation;

/// What happens to each output after the dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Epilogue {
    /// Add `bias[m]`: `f32` on the float paths; `i32` on W8A8/W4A8, added
    /// to the exact sum with wrapping (the IR's `add` to `i32` before
    /// `requant_dyadic`).
    pub bias: bool,
    /// Then apply this activation (W8A8/W4A8: ReLU only, `max(acc, 0)` on
    /// `i32`).
    pub activation: Activation,
    /// W8A8/W4A8 only: requantize each `i32` value (after bias and ReLU)
    /// to `i8` with a dyadic scale,
    /// `clamp(round_half_even(acc * M[m] / 2^shift[m]) + zp, -128, 127)`
    /// (integer multiply and shift; see `GemmKernel::run_requant`).
    pub requantize: bool,
}

/// The quantized weight operand.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightSpec {
    /// Element type of the codes.
    pub dtype: ElemType,
    /// Scale granularity.
    pub granularity: WeightGranularity,
    /// Element type of the scales.
    pub scale: ElemType,
    /// Whether zero points (of `dtype`, one per scale) are given.
    pub zero_point: bool,
    /// The packed layout the caller asks for; `None` lets the kernel choose
    /// (see the module docs). A layout other than the kernel's is unsupported.
    pub layout: Option<Layout>,
    /// A second, per-tensor f32 scale (NVFP4's): the IR graph
    /// `mul(dequantize(w, s), t)` with `t` a scalar f32 constant.
    pub tensor_scale: Option<TensorScale>,
}

/// An f32 per-tensor scale, kept as its bit pattern so that specs stay
/// hashable (the kernel caches are keyed by spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorScale(pub u32);

impl TensorScale {
    /// The scale `v`.
    pub fn new(v: f32) -> TensorScale {
        TensorScale(v.to_bits())
    }

    /// Its value.
    pub fn value(self) -> f32 {
        f32::from_bits(self.0)
    }
}

/// A GEMM kernel specification (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GemmSpec {
    /// Output features: rows of `W`, columns of `Y`.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Activation rows (tokens).
    pub n: Dim,
    /// The weight operand.
    pub weight: WeightSpec,
    /// Element type of the activation `X` (the output is `f32`).
    pub act: ElemType,
    /// Bias and activation.
    pub epilogue: Epilogue,
    /// Integer paths: multiply whole integers (`Direct`, W8A8/W4A8) or sum
    /// AND-popcounts of bit-planes (`BitSerial`); float specs must leave it
    /// `Direct`. `b1 x b1` (W1A1) is bit-serial by construction under
    /// either.
    pub schedule: IntSchedule,
    /// Opt-in: quantize the float activations per call to signed integer
    /// blocks along `k` (the IR's `quantize-activations` form) and multiply
    /// integer blocks (see [`ActQuant`]). `None` keeps the exact float
    /// product.
    pub act_quant: Option<ActQuant>,
}

/// Activation quantization of the block-dot path (`codegen/blockdot.rs`):
/// per activation row and block of `block` elements along `k` (the last
/// block may be shorter), `scale = max|x| / qmax` (f32 division, `qmax =
/// 2^(bits-1) - 1`), codes `q = quantize(x, scale)` (f32 quotient,
/// nearest-even, saturating to `i<bits>`; `0 / 0` gives 0). This is the
/// IR's `absmax_scale` + `quantize` (+ `dequantize` into the matmul), and
/// the codes equal the interpreter's bit for bit. The kernel then computes
/// `y = Σ_blocks float(Σ_i q_x·q_w) · round_f32(s_w · s_x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActQuant {
    /// Bits of the signed codes (8: the kernel's `vpdpbusd` operand).
    pub bits: u8,
    /// Elements per scale along `k` (32).
    pub block: usize,
}

impl ActQuant {
    /// 8-bit codes per block of 32 (ggml's `q8_0` activations).
    pub const I8_32: ActQuant = ActQuant { bits: 8, block: 32 };

    /// The largest code magnitude, `2^(bits-1) - 1`.
    pub fn qmax(self) -> u32 {
        (1u32 << (self.bits - 1)) - 1
    }
}

/// How a packed 32-element weight block is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockFormat {
    /// One byte per element.
    Bytes,
    /// `per_byte` elements per byte, interleaved over the block.
    Interleaved {
        /// Bits per element (2 or 4).
        bits: u32,
    },
    /// `bits` 32-bit planes.
    BitPlanes {
        /// Bits per element.
        bits: u32,
    },
}

impl BlockFormat {
    /// Bytes of one packed block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Bytes => BLOCK,
            BlockFormat::Interleaved { bits } => BLOCK * bits as usize / 8,
            BlockFormat::BitPlanes { bits } => 4 * bits as usize,
        }
    }
}

/// A weight element type the kernels decode in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightKind {
    /// Integer of `bits` (1..=8).
    Int {
        /// Width.
        bits: u32,
        /// Two's complement.
        signed: bool,
    },
    /// `b1`: code 0 is -1, code 1 is +1.
    Bipolar,
    /// `f8E4M3FN`.
    F8E4M3FN,
    /// `f8E5M2`.
    F8E5M2,
    /// `f4E2M1FN` (no infinities, no NaN).
    F4E2M1FN,
}

impl fmt::Display for GemmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.n {
            Dim::Static(n) => n.to_string(),
            Dim::Dynamic => "?".into(),
        };
        if self.is_integer() {
            return write!(
                f,
                "gemm m={} k={} n={n} weight={} act={} -> i32 (exact{})",
                self.m,
                self.k,
                self.weight.dtype,
                self.act,
                if self.is_binary() {
                    ", popcount"
                } else if self.is_bit_serial() && self.weight.zero_point {
                    ", bit-serial, zero points"
                } else if self.is_bit_serial() {
                    ", bit-serial"
                } else if self.is_amx() {
                    ", amx"
                } else {
                    ""
                }
            )
            .and_then(|()| {
                if self.epilogue.bias {
                    f.write_str(" +bias(i32)")?;
                }
                if self.epilogue.activation != Activation::None {
                    write!(f, " {}", self.epilogue.activation.name())?;
                }
                if self.epilogue.requantize {
                    f.write_str(" -> i8 (dyadic requantize)")
                } else {
                    Ok(())
                }
            });
        }
        let g = match self.weight.granularity {
            WeightGranularity::PerChannel => "per-channel".to_string(),
            WeightGranularity::Group(g) => format!("group {g}"),
        };
        write!(
            f,
            "gemm m={} k={} n={n} weight={} ({g}, {} scales{}) act={}",
            self.m,
            self.k,
            self.weight.dtype,
            self.weight.scale,
            if self.weight.zero_point {
                ", zero points"
            } else {
                ""
            },
            self.act
        )?;
        if let Some(q) = self.act_quant {
            write!(
                f,
                " quantized to i{} per {}-block, weights packed as w + {}: {}",
                q.bits,
                q.block,
                self.blockdot_offset(),
                self.packed_weight_type()
            )?;
        }
        if let Some(t) = self.weight.tensor_scale {
            write!(f, " *{}", t.value())?;
        }
        if self.epilogue.bias {
            f.write_str(" +bias")?;
        }
        if self.epilogue.activation != Activation::None {
            write!(f, " {}", self.epilogue.activation.name())?;
        }
        Ok(())
    }
}

impl GemmSpec {
    /// A spec with per-group f16 scales, no zero points, f32 activations,
    /// no epilogue and the kernel's own layout.
    pub fn new(m: usize, k: usize, n: Dim, weight: ElemType, group: usize) -> GemmSpec {
        GemmSpec {
            m,
            k,
            n,
            weight: WeightSpec {
                dtype: weight,
                granularity: WeightGranularity::Group(group),
                scale: ElemType::F16,
                zero_point: false,
                layout: None,
                tensor_scale: None,
            },
            act: ElemType::F32,
            epilogue: Epilogue::default(),
            schedule: IntSchedule::Direct,
            act_quant: None,
        }
    }

    /// A q4_0 x q8_0 block-dot spec ([`ActQuant::I8_32`]): `i4` weights
    /// in groups of 32 with f16 scales, f32 activations quantized per call
    /// (set `weight.dtype` to `i8` for q8_0 weights).
    pub fn blockdot(m: usize, k: usize, n: Dim) -> GemmSpec {
        GemmSpec {
            act_quant: Some(ActQuant::I8_32),
            ..GemmSpec::new(m, k, n, I4, BLOCK)
        }
    }

    /// Whether this is the block-dot path: float activations quantized per
    /// call (see [`ActQuant`]).
    pub fn is_blockdot(&self) -> bool {
        self.act_quant.is_some()
    }

    /// Block-dot path: what the packed weight codes add to each weight
    /// (they are the unsigned operand of `vpdpbusd`): 8 for `i4`, 128 for
    /// `i8`. The kernel takes `offset · Σ q_x` back off each block.
    pub fn blockdot_offset(&self) -> i32 {
        if self.weight.dtype.bits() == 8 {
            128
        } else {
            8
        }
    }

    /// Whether this is the integer path: integer activations, exact `i32`
    /// results (see [`GemmSpec::int8`]).
    pub fn is_integer(&self) -> bool {
        self.act.is_integral()
    }

    /// A W8A8 spec: `i8` weights, `u8` or `i8` activations, and the exact
    /// `i32` product `Y[n, m] = sum_k X[n, k] * W[m, k]` (wrapping like the
    /// interpreter's `matmul` to `i32`). Scales and zero points are not
    /// applied on this path: dequantize or requantize `Y` in the graph.
    pub fn int8(m: usize, k: usize, n: Dim, act: ElemType) -> GemmSpec {
        GemmSpec::int(m, k, n, ElemType::I8, act)
    }

    /// A W8A8 or W4A8 spec: `weight` codes `i8`, `i4` or `u4`, `u8` or
    /// `i8` activations, the exact `i32` product as [`GemmSpec::int8`].
    pub fn int(m: usize, k: usize, n: Dim, weight: ElemType, act: ElemType) -> GemmSpec {
        GemmSpec {
            m,
            k,
            n,
            weight: WeightSpec {
                dtype: weight,
                granularity: WeightGranularity::PerChannel,
                scale: ElemType::F32,
                zero_point: false,
                layout: None,
                tensor_scale: None,
            },
            act,
            epilogue: Epilogue::default(),
            schedule: IntSchedule::Direct,
            act_quant: None,
        }
    }

    /// Whether this is the bit-serial path: `b1` weights and activations.
    pub fn is_binary(&self) -> bool {
        self.act == ElemType::Bipolar
    }

    /// A W1A1 spec: `b1` (±1) weights and activations, and the exact `i32`
    /// product `Y[n, m] = sum_k X[n, k] * W[m, k]` computed as
    /// `k - 2 * popcount(x xor w)` over packed bits.
    pub fn binary(m: usize, k: usize, n: Dim) -> GemmSpec {
        GemmSpec {
            weight: WeightSpec {
                dtype: ElemType::Bipolar,
                ..GemmSpec::int8(m, k, n, ElemType::Bipolar).weight
            },
            ..GemmSpec::int8(m, k, n, ElemType::Bipolar)
        }
    }

    /// Whether this is the W8A8/W4A8 path: integer activations that are
    /// not `b1`, on the direct schedule (`vpdpbusd`) or the AMX schedule
    /// ([`GemmSpec::is_amx`]), which shares its weight packing.
    pub fn is_vnni(&self) -> bool {
        self.is_integer()
            && !self.is_binary()
            && matches!(self.schedule, IntSchedule::Direct | IntSchedule::Amx)
    }

    /// Whether this W8A8/W4A8 spec runs on the AMX-INT8 schedule (`tdpbusd` on
    /// tiles, `codegen/amx.rs`; the JIT and whole-model libraries, where
    /// the CPU has AMX-INT8).
    pub fn is_amx(&self) -> bool {
        self.is_vnni() && self.schedule == IntSchedule::Amx
    }

    /// Bytes of the AMX kernel's activation operand for `n` activation
    /// rows: the A tiles, `[n_pad / 16][k_pad / 64][16][64]` bytes with
    /// `n_pad = n` rounded up to 32 (`u8` rows, `i8` ones with the sign
    /// bit flipped, zeros past `n` and `k`), then the kernel's accumulator
    /// buffer for each 32-row panel pair of the weights. The buffer must
    /// start on a 64-byte boundary (every tile is 16 whole cache lines).
    pub fn amx_activation_bytes(&self, n: usize) -> usize {
        let pairs = self.m_pad().div_ceil(2 * INT_PANEL);
        n.next_multiple_of(32) * self.k_pad() + pairs * crate::codegen::amx::ACC_BYTES_PER_PAIR
    }

    /// The rows a thread's chunk of a call is a whole multiple of (but at
    /// `m`), for the JIT's row split and the AOT driver's alike: the
    /// block-dot kernel's 4-panel groups at a static `n = 1`
    /// (`btile_1x4`), whole 16-row panels on the other panel layouts (a
    /// chunk ending inside a panel would make both neighbours compute
    /// it), else 8-row tiles. The AMX kernel's are whole 32-row panel
    /// pairs (a chunk starting inside a pair would compute it twice).
    pub fn row_granule(&self) -> usize {
        if self.is_amx() {
            2 * INT_PANEL
        } else if self.is_blockdot() && self.n == Dim::Static(1) {
            4 * INT_PANEL
        } else if self.is_vnni() || self.is_blockdot() {
            INT_PANEL
        } else {
            8
        }
    }

    /// Rows of the packed weight: `m`, rounded up to whole panels of
    /// [`INT_PANEL`] rows on the W8A8/W4A8 path.
    pub fn m_pad(&self) -> usize {
        if self.is_vnni() || self.is_blockdot() {
            self.m.div_ceil(INT_PANEL) * INT_PANEL
        } else {
            self.m
        }
    }

    /// A bit-serial spec: `weight` (`i1`..`i8`, `u1`..`u8` or `b1`) times
    /// `act` (`i1`..`i8`, `u1`..`u8`), the exact `i32` product
    /// `Y[n, m] = sum_k (X[n, k] - za) * (W[m, k] - zw)` (wrapping), without
    /// zero points unless `weight.zero_point` is set (then both `za` and
    /// `zw` are given at each call; not for `b1` weights).
    pub fn bit_serial(m: usize, k: usize, n: Dim, weight: ElemType, act: ElemType) -> GemmSpec {
        let mut s = GemmSpec::int8(m, k, n, act);
        s.weight.dtype = weight;
        s.schedule = IntSchedule::BitSerial;
        s
    }

    /// Whether this is the general bit-serial path (WxAy over bit-planes,
    /// see [`GemmSpec::bit_serial`]); W1A1 ([`GemmSpec::is_binary`]) has
    /// its own xor kernel.
    pub fn is_bit_serial(&self) -> bool {
        self.is_integer() && !self.is_binary() && self.schedule == IntSchedule::BitSerial
    }

    /// Bit-planes of the weight (bit-serial path).
    pub(crate) fn weight_planes(&self) -> usize {
        self.weight.dtype.bits() as usize
    }

    /// Bit-planes of the activation (bit-serial path).
    pub(crate) fn act_planes(&self) -> usize {
        self.act.bits() as usize
    }

    /// Elements per packed block on this spec's path.
    pub(crate) fn block(&self) -> usize {
        if self.is_bit_serial() {
            PLANE_BLOCK
        } else if self.is_binary() {
            8 * INT_BLOCK
        } else if self.is_integer() {
            INT_BLOCK
        } else {
            BLOCK
        }
    }

    /// `k` rounded up to whole blocks.
    pub fn k_pad(&self) -> usize {
        self.k.div_ceil(self.block()) * self.block()
    }

    /// Number of scales per row.
    pub fn groups_per_row(&self) -> usize {
        match self.weight.granularity {
            WeightGranularity::PerChannel => 1,
            WeightGranularity::Group(g) => self.k.div_ceil(g),
        }
    }

    /// Blocks per scale group (the last group of a row may have fewer).
    pub(crate) fn blocks_per_group(&self) -> usize {
        match self.weight.granularity {
            WeightGranularity::PerChannel => self.k_pad() / BLOCK,
            // A group of 16 is half a block: one block per loop step, with
            // two scales (see `scales_per_block`).
            WeightGranularity::Group(g) => (g / BLOCK).max(1),
        }
    }

    /// Scales per 32-element block: 2 for groups of 16, else 1.
    pub(crate) fn scales_per_block(&self) -> usize {
        match self.weight.granularity {
            WeightGranularity::Group(g) if g < BLOCK => BLOCK / g,
            _ => 1,
        }
    }

    /// Steps of the float kernels' k loop per row: scale groups, or blocks
    /// when a block holds two groups.
    pub(crate) fn k_steps(&self) -> usize {
        if self.scales_per_block() > 1 {
            self.k_pad() / BLOCK
        } else {
            self.groups_per_row()
        }
    }

    /// The lowbit-ir granularity of the scales, on the logical `[m, k]`
    /// weight (the form the `dequantize` op takes).
    pub fn ir_granularity(&self) -> Granularity {
        match self.weight.granularity {
            WeightGranularity::PerChannel => Granularity::PerAxis { axis: 0 },
            WeightGranularity::Group(g) => Granularity::Blocked {
                blocks: vec![(1, g as u64)],
            },
        }
    }

    /// Shape of the scale (and zero-point) tensor on the logical weight.
    pub fn scale_shape(&self) -> Vec<u64> {
        match self.weight.granularity {
            WeightGranularity::PerChannel => vec![self.m as u64],
            WeightGranularity::Group(_) => vec![self.m as u64, self.groups_per_row() as u64],
        }
    }

    pub(crate) fn weight_kind(&self) -> Option<WeightKind> {
        match self.weight.dtype {
            ElemType::Int { bits, signed } if (1..=8).contains(&bits) => Some(WeightKind::Int {
                bits: bits as u32,
                signed,
            }),
            ElemType::Bipolar => Some(WeightKind::Bipolar),
            ElemType::Float(f) if f == FloatFormat::F8E4M3FN => Some(WeightKind::F8E4M3FN),
            ElemType::Float(f) if f == FloatFormat::F8E5M2 => Some(WeightKind::F8E5M2),
            ElemType::Float(f) if f == FloatFormat::F4E2M1FN => Some(WeightKind::F4E2M1FN),
            _ => None,
        }
    }

    pub(crate) fn block_format(&self) -> BlockFormat {
        match self.weight.dtype.bits() {
            8 => BlockFormat::Bytes,
            b @ (2 | 4) => BlockFormat::Interleaved { bits: b },
            b => BlockFormat::BitPlanes { bits: b },
        }
    }

    /// The layout the kernel packs weights into (see the module docs).
    pub fn packed_layout(&self) -> Layout {
        if self.is_binary() {
            return Layout::default();
        }
        if self.is_bit_serial() {
            return Layout {
                tile: vec![1, PLANE_BLOCK as u64],
                bit_planes: true,
                ..Layout::default()
            };
        }
        if self.is_vnni() || self.is_blockdot() {
            // One 64-byte vector per tile: 16 rows x 4 bytes (see the
            // module docs).
            return if self.weight.dtype.bits() == 8 {
                Layout {
                    tile: vec![INT_PANEL as u64, 4],
                    ..Layout::default()
                }
            } else {
                Layout {
                    tile: vec![INT_PANEL as u64, 8],
                    interleave: Some(8),
                    ..Layout::default()
                }
            };
        }
        match self.block_format() {
            BlockFormat::Bytes => Layout::default(),
            BlockFormat::Interleaved { .. } => Layout {
                interleave: Some(BLOCK as u64),
                ..Layout::default()
            },
            BlockFormat::BitPlanes { .. } => Layout {
                tile: vec![1, BLOCK as u64],
                bit_planes: true,
                ..Layout::default()
            },
        }
    }

    /// The IR type of the packed weight: `[m_pad, k_pad]` codes in
    /// [`GemmSpec::packed_layout`].
    /// Block-dot specs store `i4` codes as `u4` with an offset of 8 (code
    /// `c ^ 8`) and `i8` codes as `u8` with an offset of 128 (`c ^ 0x80`),
    /// the unsigned operand of `vpdpbusd`: the weight is
    /// `dequantize(u4, s, zero_point = 8)` (`u8`, 128).
    pub fn packed_weight_type(&self) -> TensorType {
        TensorType::new(
            vec![self.m_pad() as u64, self.k_pad() as u64],
            match (self.is_blockdot(), self.weight.dtype.bits()) {
                (true, 8) => ElemType::U8,
                (true, _) => U4,
                _ => self.weight.dtype,
            },
        )
        .with_layout(self.packed_layout())
    }

    /// Bytes of packed weight codes per row.
    pub(crate) fn row_bytes(&self) -> usize {
        if self.is_bit_serial() {
            return self.k_pad() / 8 * self.weight_planes();
        }
        if self.is_binary() {
            return self.k_pad() / 8;
        }
        if self.is_integer() || self.is_blockdot() {
            return self.k_pad() * self.weight.dtype.bits() as usize / 8;
        }
        self.k_pad() / BLOCK * self.block_format().block_bytes()
    }

    /// Bytes of one scale.
    pub(crate) fn scale_bytes(&self) -> usize {
        self.weight.scale.bits() as usize / 8
    }

    /// Total bytes the kernel reads for the weights: codes, scales, zero points.
    pub fn weight_bytes(&self) -> usize {
        if self.is_binary() {
            return self.m * self.row_bytes();
        }
        if self.is_integer() {
            // Codes and one i32 weight sum per (padded) row (bit-serial:
            // for the zero-point correction).
            return self.m_pad() * (self.row_bytes() + 4);
        }
        if self.is_blockdot() {
            return self.m_pad() * self.row_bytes() + self.blockdot_scale_bytes();
        }
        let scales = self.m * self.groups_per_row();
        self.m * self.row_bytes()
            + scales * self.scale_bytes()
            + if self.weight.zero_point { scales } else { 0 }
    }

    /// Block-dot path: bytes of the packed weight scales, one f16 per
    /// padded row and 32-element block (`[m_pad / 16, k_pad / 32, 16]`).
    pub(crate) fn blockdot_scale_bytes(&self) -> usize {
        self.m_pad() * (self.k_pad() / BLOCK) * 2
    }

    fn check_blockdot(&self, target: &str, q: ActQuant) -> Result<(), CpuError> {
        let u = |r: String| Err(self.unsupported(target, r));
        if q != ActQuant::I8_32 {
            return u(format!(
                "the block-dot kernel quantizes activations to i8 per 32-block, not i{} per {}",
                q.bits, q.block
            ));
        }
        if self.act != ElemType::F32 {
            return u(format!(
                "activation quantization takes f32 activations, not {}",
                self.act
            ));
        }
        if ![I4, ElemType::I8].contains(&self.weight.dtype) {
            return u(format!(
                "the block-dot kernel takes i4 (q4_0) or i8 (q8_0) weights, not {}",
                self.weight.dtype
            ));
        }
        match self.weight.granularity {
            WeightGranularity::Group(g) if g % BLOCK == 0 => {}
            g => {
                return u(format!(
                    "the block-dot kernel takes weight groups of a multiple of 32, not {g:?}"
                ))
            }
        }
        if self.weight.scale != ElemType::F16 {
            return u(format!(
                "the block-dot kernel takes f16 weight scales, not {}",
                self.weight.scale
            ));
        }
        if self.weight.zero_point || self.weight.tensor_scale.is_some() {
            return u(
                "the block-dot kernel takes symmetric weights (no zero points or tensor scale)"
                    .into(),
            );
        }
        if self.epilogue != Epilogue::default() || self.schedule != IntSchedule::Direct {
            return u("the block-dot kernel has no epilogue".into());
        }
        if let Some(l) = &self.weight.layout {
            if *l != self.packed_layout() {
                return u(format!(
                    "the block-dot kernel packs weights as {}, not {l}",
                    self.packed_layout()
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn unsupported(&self, target: &str, reason: impl Into<String>) -> CpuError {
        CpuError::Unsupported {
            op: "gemm".into(),
            dtype: self.weight.dtype.to_string(),
            layout: match (&self.weight.layout, self.weight_kind()) {
                (Some(l), _) => l.to_string(),
                (None, Some(_)) => self.packed_layout().to_string(),
                (None, None) => Layout::default().to_string(),
            },
            target: target.into(),
            reason: reason.into(),
        }
    }

    fn check_bit_serial(&self, target: &str) -> Result<(), CpuError> {
        let u = |r: String| Err(self.unsupported(target, r));
        let narrow_int =
            |t: ElemType| matches!(t, ElemType::Int { bits, .. } if (1..=8).contains(&bits));
        if !narrow_int(self.act) {
            return u(format!(
                "bit-serial activations must be 1- to 8-bit integers, not {}",
                self.act
            ));
        }
        if !narrow_int(self.weight.dtype) && self.weight.dtype != ElemType::Bipolar {
            return u(format!(
                "bit-serial weights must be 1- to 8-bit integers or b1, not {}",
                self.weight.dtype
            ));
        }
        if self.weight.zero_point && self.weight.dtype == ElemType::Bipolar {
            return u("b1 weights take no zero points (matmul_int needs integer operands)".into());
        }
        if self.epilogue != Epilogue::default() {
            return u("the bit-serial kernel has no epilogue (exact i32 results)".into());
        }
        if let Some(l) = &self.weight.layout {
            if *l != self.packed_layout() {
                return u(format!(
                    "the bit-serial kernel reads {}, not {l}",
                    self.packed_layout()
                ));
            }
        }
        Ok(())
    }

    fn check_integer(&self, target: &str) -> Result<(), CpuError> {
        let u = |r: String| Err(self.unsupported(target, r));
        if self.is_bit_serial() {
            return self.check_bit_serial(target);
        }
        if self.is_binary() {
            if self.weight.dtype != ElemType::Bipolar {
                return u(format!(
                    "b1 activations need b1 weights (W1A1), not {}",
                    self.weight.dtype
                ));
            }
            if self.weight.zero_point || self.epilogue != Epilogue::default() {
                return u("the W1A1 kernel has no zero points or epilogue".into());
            }
            if let Some(l) = &self.weight.layout {
                if !l.is_default() {
                    return u(format!("the W1A1 kernel reads dense bit rows, not {l}"));
                }
            }
            return Ok(());
        }
        if ![ElemType::U8, ElemType::I8].contains(&self.act) {
            return u(format!(
                "the direct integer kernel (W8A8/W4A8) takes u8 or i8 activations, not {}; \
                 other widths take the bit-serial schedule",
                self.act
            ));
        }
        if ![ElemType::I8, I4, U4].contains(&self.weight.dtype) {
            return u(format!(
                "integer activations need i8, i4 or u4 weights (W8A8/W4A8), not {}; \
                 other widths take the bit-serial schedule",
                self.weight.dtype
            ));
        }
        if self.weight.zero_point {
            return u("the W8A8/W4A8 kernel takes symmetric weights (no zero points)".into());
        }
        if self.weight.granularity != WeightGranularity::PerChannel {
            return u(
                "the W8A8/W4A8 kernel applies no scales (requantize or dequantize its i32 result)"
                    .into(),
            );
        }
        if !matches!(
            self.epilogue.activation,
            Activation::None | Activation::Relu
        ) {
            return u(format!(
                "the W8A8/W4A8 kernel's epilogue takes ReLU on the i32 sum, not {}",
                self.epilogue.activation.name()
            ));
        }
        if let Some(l) = &self.weight.layout {
            if *l != self.packed_layout() {
                return u(format!(
                    "the {} x {} kernel packs weights as {}, not {l}",
                    self.weight.dtype,
                    self.act,
                    self.packed_layout()
                ));
            }
        }
        Ok(())
    }

    /// Whether the CPU kernels can run this spec on `target` (a display
    /// name used in the error).
    pub fn check(&self, target: &str) -> Result<(), CpuError> {
        let u = |r: String| Err(self.unsupported(target, r));
        if self.m == 0 || self.k == 0 {
            return u(format!("empty weight {}x{}", self.m, self.k));
        }
        if matches!(self.n, Dim::Static(0)) {
            return u("n = 0".into());
        }
        // Offsets are computed in i64; keep every buffer well inside it.
        let limit = 1usize << 40;
        if self
            .m_pad()
            .checked_mul(self.k_pad())
            .is_none_or(|e| e > limit)
        {
            return u(format!("weight {}x{} is too large", self.m, self.k));
        }
        if let Some(q) = self.act_quant {
            return self.check_blockdot(target, q);
        }
        if self.schedule == IntSchedule::Amx && !self.is_vnni() {
            return u(format!(
                "the amx schedule multiplies i8, i4 or u4 weights by u8 or i8 activations (W8A8/W4A8), not {} x {}",
                self.weight.dtype, self.act
            ));
        }
        if self.is_integer() {
            return self.check_integer(target);
        }
        if self.schedule == IntSchedule::BitSerial {
            return u(format!(
                "the bit-serial schedule needs integer activations, not {}",
                self.act
            ));
        }
        let Some(kind) = self.weight_kind() else {
            return u(
                "weights must be 1- to 8-bit integers, b1, f8E4M3FN, f8E5M2 or f4E2M1FN".into(),
            );
        };
        if self.epilogue.requantize {
            return u(
                "the dyadic requantize epilogue needs integer activations (W8A8/W4A8)".into(),
            );
        }
        if let WeightGranularity::Group(g) = self.weight.granularity {
            if g != 16 && (g == 0 || g % BLOCK != 0) {
                return u(format!(
                    "group {g} is neither 16 nor a positive multiple of {BLOCK}"
                ));
            }
        }
        if ![
            ElemType::F32,
            ElemType::F16,
            ElemType::BF16,
            ElemType::Float(FloatFormat::F8E8M0FNU),
            ElemType::Float(FloatFormat::F8E4M3FN),
        ]
        .contains(&self.weight.scale)
        {
            return u(format!(
                "scales must be f32, f16, bf16, f8E8M0FNU or f8E4M3FN, not {}",
                self.weight.scale
            ));
        }
        if self.weight.zero_point && !matches!(kind, WeightKind::Int { .. }) {
            return u(format!(
                "zero points are only supported for integer weights, not {}",
                self.weight.dtype
            ));
        }
        if ![ElemType::F32, ElemType::F16, ElemType::BF16].contains(&self.act) {
            return u(format!(
                "activations must be f32, f16 or bf16, not {}",
                self.act
            ));
        }
        if let Some(l) = &self.weight.layout {
            if *l != self.packed_layout() {
                return u(format!(
                    "the {} kernel packs weights as {}, not {l}",
                    self.weight.dtype,
                    self.packed_layout()
                ));
            }
        }
        Ok(())
    }
}
