//! Target descriptions: which machine a graph is optimized and compiled for.
//!
//! Plain data shared by the e-graph cost models and the backends: an x86-64
//! CPU is described by its vector feature set (AVX2/FMA, AVX-512, VNNI,
//! VPOPCNTDQ, BF16) and its AMX-INT8 tiles, an NVIDIA GPU by its SM level. Names follow LLVM's
//! (`x86-64-v3`, `icelake-server`, `sm_80`), optionally with `+feature`
//! suffixes (`x86-64-v3+avxvnni`). Throughput and bandwidth figures are not
//! here: they belong to the cost model that uses them. [`Target::host`]
//! reads the running CPU's features; it is the only function here that
//! looks at the machine.

use std::fmt;
use std::str::FromStr;

/// x86-64 vector features that change which kernels are worth running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct X86Features {
    /// AVX2 (256-bit integer and float vectors).
    pub avx2: bool,
    /// FMA3 fused multiply-add.
    pub fma: bool,
    /// AVX-512 F/BW/DQ/VL (512-bit vectors).
    pub avx512: bool,
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit vectors).
    pub avx512vnni: bool,
    /// AVX-VNNI (`vpdpbusd` on 256-bit vectors, without AVX-512).
    pub avxvnni: bool,
    /// AVX-512 VPOPCNTDQ (vector popcount of 32/64-bit lanes).
    pub avx512vpopcntdq: bool,
    /// AVX-512 BF16 (`vdpbf16ps`).
    pub avx512bf16: bool,
    /// AMX-INT8: `tdpbusd` on 16x16 `i32` tiles (CPUID's AMX-TILE and
    /// AMX-INT8 together; named `amxint8`).
    pub amxint8: bool,
}

impl X86Features {
    const NAMES: [&'static str; 8] = [
        "avx2",
        "fma",
        "avx512",
        "avx512vnni",
        "avxvnni",
        "avx512vpopcntdq",
        "avx512bf16",
        "amxint8",
    ];

    fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "avx2" => &mut self.avx2,
            "fma" => &mut self.fma,
            "avx512" | "avx512f" => &mut self.avx512,
            "avx512vnni" => &mut self.avx512vnni,
            "avxvnni" => &mut self.avxvnni,
            "avx512vpopcntdq" => &mut self.avx512vpopcntdq,
            "avx512bf16" => &mut self.avx512bf16,
            "amxint8" | "amx-int8" => &mut self.amxint8,
            _ => return None,
        })
    }

    fn flags(&self) -> [bool; 8] {
        [
            self.avx2,
            self.fma,
            self.avx512,
            self.avx512vnni,
            self.avxvnni,
            self.avx512vpopcntdq,
            self.avx512bf16,
            self.amxint8,
        ]
    }

    /// The enabled features' names, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .zip(self.flags())
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Any VNNI flavour (512- or 256-bit).
    pub fn has_vnni(&self) -> bool {
        self.avx512vnni || self.avxvnni
    }

    /// Widest vector in bits (128 for baseline SSE2).
    pub fn vector_bits(&self) -> u32 {
        if self.avx512 {
            512
        } else if self.avx2 {
            256
        } else {
            128
        }
    }
}

/// The vector width CPU kernels are written for, chosen from the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorIsa {
    /// 512-bit AVX-512 (F/BW/DQ/VL).
    Avx512,
    /// 256-bit AVX2 with FMA3.
    Avx2Fma,
    /// Whatever the baseline has (SSE2 on x86-64): portable vector code.
    Portable,
}

impl VectorIsa {
    /// Short name used in kernel names (`avx512`, `avx2`, `sse2`).
    pub fn name(self) -> &'static str {
        match self {
            VectorIsa::Avx512 => "avx512",
            VectorIsa::Avx2Fma => "avx2",
            VectorIsa::Portable => "sse2",
        }
    }
}

/// How the CPU backend's W8A8 kernel forms 4-byte dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Dot {
    /// `vpdpbusd` on 512-bit vectors (AVX-512 VNNI).
    Avx512Vnni,
    /// Bytes widened to 32 bits and multiplied exactly; used also with
    /// AVX-VNNI alone, because the backend has no 256-bit `vpdpbusd` path.
    Widen,
}

/// How the CPU backend's W1A1 kernel counts bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Popcount {
    /// `vpopcntd` on 512-bit vectors (AVX-512 VPOPCNTDQ).
    Vpopcntdq,
    /// A vector population count LLVM expands from shuffles/lookups.
    Lookup,
}

impl X86Features {
    /// The vector path CPU kernels take on these features. AVX2 without
    /// FMA is treated as portable because every float kernel relies on FMA.
    pub fn vector_isa(&self) -> VectorIsa {
        if self.avx512 {
            VectorIsa::Avx512
        } else if self.avx2 && self.fma {
            VectorIsa::Avx2Fma
        } else {
            VectorIsa::Portable
        }
    }

    /// The W8A8 dot-product path the CPU backend takes on these features.
    pub fn int8_dot(&self) -> Int8Dot {
        if self.avx512vnni {
            Int8Dot::Avx512Vnni
        } else {
            Int8Dot::Widen
        }
    }

    /// The W1A1 popcount path the CPU backend takes on these features.
    pub fn popcount(&self) -> Popcount {
        if self.avx512vpopcntdq {
            Popcount::Vpopcntdq
        } else {
            Popcount::Lookup
        }
    }

    /// The W8A8 kernel's instruction class as kernel names spell it, one
    /// table for the cost models and the CPU backend: `vpdpbusd` with
    /// AVX-512 VNNI, otherwise bytes widened to 32 bits and multiplied in
    /// pairs by `vpmaddwd` (what LLVM makes of the backend's widening path).
    pub fn int8_dot_kernel(&self) -> &'static str {
        match (self.int8_dot(), self.vector_isa()) {
            (Int8Dot::Avx512Vnni, _) => "avx512vnni.vpdpbusd",
            (Int8Dot::Widen, VectorIsa::Avx512) => "avx512bw.vpmovsxbd+vpmaddwd",
            (Int8Dot::Widen, VectorIsa::Avx2Fma) => "avx2.vpmovsxbd+vpmaddwd",
            (Int8Dot::Widen, VectorIsa::Portable) => "sse2.pmaddwd",
        }
    }

    /// The popcount kernel's instruction class as kernel names spell it:
    /// `vpopcntq` with VPOPCNTDQ, otherwise a `vpshufb` nibble lookup on
    /// the vector width there is, or scalar `popcnt`.
    pub fn popcount_kernel(&self) -> &'static str {
        match (self.popcount(), self.vector_isa()) {
            (Popcount::Vpopcntdq, _) => "avx512vpopcntdq.vpandq+vpopcntq",
            (Popcount::Lookup, VectorIsa::Avx512) => "avx512bw.vpshufb-popcount",
            (Popcount::Lookup, VectorIsa::Avx2Fma) => "avx2.vpshufb-popcount",
            (Popcount::Lookup, VectorIsa::Portable) => "popcnt",
        }
    }

    /// The LLVM feature string (`+avx2,+fma,...`) that enables exactly
    /// these features (AVX-512 means F, BW, DQ, VL and CD; AMX-INT8 means
    /// `amx-tile` and `amx-int8`).
    pub fn llvm_features(&self) -> String {
        let mut out: Vec<&str> = Vec::new();
        if self.avx2 {
            out.push("+avx2");
        }
        if self.fma {
            out.push("+fma");
        }
        if self.avx512 {
            out.extend([
                "+avx512f",
                "+avx512bw",
                "+avx512dq",
                "+avx512vl",
                "+avx512cd",
            ]);
        }
        if self.avx512vnni {
            out.push("+avx512vnni");
        }
        if self.avxvnni {
            out.push("+avxvnni");
        }
        if self.avx512vpopcntdq {
            out.push("+avx512vpopcntdq");
        }
        if self.avx512bf16 {
            out.push("+avx512bf16");
        }
        if self.amxint8 {
            out.extend(["+amx-tile", "+amx-int8"]);
        }
        out.join(",")
    }
}

/// An NVIDIA GPU by SM level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NvidiaSm {
    /// SM version: 80 (A100), 89 (L40/Ada), 90 (H100).
    pub sm: u32,
    /// The architecture-specific `sm_90a` variant (wgmma).
    pub arch_specific: bool,
}

/// What a target is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// An x86-64 CPU with a feature set.
    X86_64(X86Features),
    /// An NVIDIA GPU (PTX).
    Nvidia(NvidiaSm),
}

/// A named target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The name it was given by (`x86-64-v4+avx512vnni`, `sm_80`).
    pub name: String,
    /// Its description.
    pub kind: TargetKind,
}

/// Whether the running CPU has AMX-INT8 and the OS manages its tile state:
/// CPUID leaf 7 reports AMX-TILE (EDX bit 24) and AMX-INT8 (bit 25), and
/// XCR0 enables the XTILECFG and XTILEDATA state components (bits 17 and
/// 18). Linux also wants each process to ask for the tile data state
/// before its first tile instruction; the CPU backend does that (and
/// refuses the AMX kernel with the reason where it is refused).
#[cfg(target_arch = "x86_64")]
fn amx_int8_cpuid() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
    if edx & (3 << 24) != 3 << 24 || !osxsave {
        return false;
    }
    // SAFETY: OSXSAVE (CPUID.1:ECX bit 27) says the OS has enabled XGETBV,
    // so reading XCR0 cannot fault.
    let xcr0 = unsafe { _xgetbv(0) };
    xcr0 & (3 << 17) == 3 << 17
}

/// CPU model names and their feature sets.
const CPU_MODELS: &[(&str, &[&str])] = &[
    ("x86-64", &[]),
    ("x86_64", &[]),
    ("x86-64-v2", &[]),
    ("x86-64-v3", &["avx2", "fma"]),
    ("haswell", &["avx2", "fma"]),
    ("alderlake", &["avx2", "fma", "avxvnni"]),
    ("x86-64-v4", &["avx2", "fma", "avx512"]),
    ("skylake-avx512", &["avx2", "fma", "avx512"]),
    ("cascadelake", &["avx2", "fma", "avx512", "avx512vnni"]),
    (
        "icelake-server",
        &["avx2", "fma", "avx512", "avx512vnni", "avx512vpopcntdq"],
    ),
    (
        "sapphirerapids",
        &[
            "avx2",
            "fma",
            "avx512",
            "avx512vnni",
            "avx512vpopcntdq",
            "avx512bf16",
            "avxvnni",
            "amxint8",
        ],
    ),
    (
        "znver4",
        &[
            "avx2",
            "fma",
            "avx512",
            "avx512vnni",
            "avx512vpopcntdq",
            "avx512bf16",
        ],
    ),
];

/// Every CPU model name [`Target::from_str`] accepts.
pub fn cpu_model_names() -> Vec<&'static str> {
    CPU_MODELS.iter().map(|(n, _)| *n).collect()
}

impl Target {
    /// An x86-64 target with explicit features.
    pub fn x86(name: impl Into<String>, features: X86Features) -> Target {
        Target {
            name: name.into(),
            kind: TargetKind::X86_64(features),
        }
    }

    /// The running machine (x86-64 features read with `cpuid`); on other
    /// architectures, baseline x86-64 so that cost estimates stay defined.
    pub fn host() -> Target {
        #[allow(unused_mut)]
        let mut f = X86Features::default();
        #[cfg(target_arch = "x86_64")]
        {
            f.avx2 = std::arch::is_x86_feature_detected!("avx2");
            f.fma = std::arch::is_x86_feature_detected!("fma");
            f.avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw");
            f.avx512vnni = std::arch::is_x86_feature_detected!("avx512vnni");
            f.avxvnni = std::arch::is_x86_feature_detected!("avxvnni");
            f.avx512vpopcntdq = std::arch::is_x86_feature_detected!("avx512vpopcntdq");
            f.avx512bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
            f.amxint8 = amx_int8_cpuid();
        }
        let mut name = String::from("x86-64");
        for n in f.names() {
            name.push('+');
            name.push_str(n);
        }
        Target::x86(name, f)
    }

    /// The CPU model part of an x86 target's name (`x86-64-v3` of
    /// `x86-64-v3+avxvnni`), spelled as LLVM spells it (`x86_64` is
    /// `x86-64`); `None` for GPU targets.
    pub fn cpu_model(&self) -> Option<&str> {
        self.x86_features()?;
        let model = self.name.split('+').next().unwrap_or_default();
        Some(if model == "x86_64" { "x86-64" } else { model })
    }

    /// The x86 features, if this is a CPU target.
    pub fn x86_features(&self) -> Option<&X86Features> {
        match &self.kind {
            TargetKind::X86_64(f) => Some(f),
            TargetKind::Nvidia(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for Target {
    type Err = String;

    /// `MODEL[+feature...]` for x86-64 (`x86-64-v3+avxvnni`), or `sm_80`,
    /// `sm_89`, `sm_90`, `sm_90a` for NVIDIA GPUs.
    fn from_str(s: &str) -> Result<Target, String> {
        if let Some(level) = s.strip_prefix("sm_") {
            let (digits, arch_specific) = match level.strip_suffix('a') {
                Some(d) => (d, true),
                None => (level, false),
            };
            return match digits {
                "80" | "89" | "90" if !arch_specific || digits == "90" => Ok(Target {
                    name: s.to_string(),
                    kind: TargetKind::Nvidia(NvidiaSm {
                        sm: digits.parse().unwrap_or(80),
                        arch_specific,
                    }),
                }),
                _ => Err(format!(
                    "unknown GPU target '{s}' (expected sm_80, sm_89, sm_90 or sm_90a)"
                )),
            };
        }
        let mut parts = s.split('+');
        let model = parts.next().unwrap_or_default();
        let base = CPU_MODELS
            .iter()
            .find(|(n, _)| *n == model)
            .ok_or_else(|| {
                format!(
                    "unknown target '{model}' (expected one of {}, or sm_80/sm_89/sm_90/sm_90a)",
                    cpu_model_names().join(", ")
                )
            })?;
        let mut f = X86Features::default();
        let names = base.1.iter().copied().chain(parts);
        for feat in names {
            match f.flag_mut(feat) {
                Some(flag) => *flag = true,
                None => {
                    return Err(format!(
                        "unknown x86 feature '{feat}' in target '{s}' (known: {})",
                        X86Features::NAMES.join(", ")
                    ))
                }
            }
        }
        // Features imply their prerequisites, so a hand-written list that
        // forgets one still describes a real machine (every CPU with AMX
        // has AVX-512).
        if f.avx512vnni || f.avx512vpopcntdq || f.avx512bf16 || f.amxint8 {
            f.avx512 = true;
        }
        if f.avx512 || f.avxvnni {
            f.avx2 = true;
            f.fma = true;
        }
        Ok(Target::x86(s, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_models_and_features() {
        let t: Target = "x86-64-v3".parse().unwrap();
        let f = t.x86_features().unwrap();
        assert!(f.avx2 && f.fma && !f.avx512 && !f.has_vnni());
        let t: Target = "x86-64-v3+avxvnni".parse().unwrap();
        assert!(t.x86_features().unwrap().avxvnni);
        let t: Target = "icelake-server".parse().unwrap();
        let f = t.x86_features().unwrap();
        assert!(f.avx512 && f.avx512vnni && f.avx512vpopcntdq && !f.avx512bf16);
        assert_eq!(f.vector_bits(), 512);
        let t: Target = "x86-64+avx512vpopcntdq".parse().unwrap();
        let f = t.x86_features().unwrap();
        assert!(f.avx512 && f.avx2, "prerequisites are implied: {f:?}");
        assert_eq!(t.to_string(), "x86-64+avx512vpopcntdq");
    }

    #[test]
    fn amx_int8_is_a_named_feature() {
        let spr: Target = "sapphirerapids".parse().unwrap();
        let f = spr.x86_features().unwrap();
        assert!(f.amxint8 && f.avx512vnni, "{f:?}");
        assert_eq!(f.names().last(), Some(&"amxint8"));
        assert!(
            f.llvm_features().ends_with(",+amx-tile,+amx-int8"),
            "{}",
            f.llvm_features()
        );
        for name in ["icelake-server", "znver4", "x86-64-v4", "alderlake"] {
            let t: Target = name.parse().unwrap();
            let f = t.x86_features().unwrap();
            assert!(!f.amxint8, "{name} has no AMX");
            assert!(!f.llvm_features().contains("amx"), "{name}");
        }
        // A suffix adds it (LLVM's spelling too) and implies AVX-512.
        for s in ["icelake-server+amxint8", "x86-64+amx-int8"] {
            let t: Target = s.parse().unwrap();
            let f = t.x86_features().unwrap();
            assert!(f.amxint8 && f.avx512 && f.avx2 && f.fma, "{s}: {f:?}");
        }
        let e = "x86-64+amx".parse::<Target>().unwrap_err();
        assert!(e.contains("amxint8"), "the known names list it: {e}");
    }

    #[test]
    fn parses_gpu_levels() {
        for (s, sm, a) in [
            ("sm_80", 80, false),
            ("sm_89", 89, false),
            ("sm_90", 90, false),
            ("sm_90a", 90, true),
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(
                t.kind,
                TargetKind::Nvidia(NvidiaSm {
                    sm,
                    arch_specific: a
                })
            );
        }
        assert!("sm_75".parse::<Target>().unwrap_err().contains("sm_80"));
        assert!("sm_80a".parse::<Target>().is_err());
    }

    #[test]
    fn rejects_unknown_names() {
        let e = "pentium".parse::<Target>().unwrap_err();
        assert!(e.contains("unknown target 'pentium'"), "{e}");
        let e = "x86-64-v3+sse9".parse::<Target>().unwrap_err();
        assert!(e.contains("unknown x86 feature 'sse9'"), "{e}");
    }

    #[test]
    fn kernel_paths_follow_features() {
        let v3: Target = "x86-64-v3".parse().unwrap();
        let f = v3.x86_features().unwrap();
        assert_eq!(f.vector_isa(), VectorIsa::Avx2Fma);
        assert_eq!(f.int8_dot(), Int8Dot::Widen);
        assert_eq!(f.popcount(), Popcount::Lookup);
        assert_eq!(f.llvm_features(), "+avx2,+fma");
        assert_eq!(v3.cpu_model(), Some("x86-64-v3"));
        let icx: Target = "icelake-server".parse().unwrap();
        let f = icx.x86_features().unwrap();
        assert_eq!(f.vector_isa(), VectorIsa::Avx512);
        assert_eq!(f.int8_dot(), Int8Dot::Avx512Vnni);
        assert_eq!(f.popcount(), Popcount::Vpopcntdq);
        assert!(f.llvm_features().contains("+avx512vnni"));
        let adl: Target = "alderlake".parse().unwrap();
        assert_eq!(adl.x86_features().unwrap().int8_dot(), Int8Dot::Widen);
        let base: Target = "x86_64+avx2".parse().unwrap();
        assert_eq!(base.cpu_model(), Some("x86-64"));
        assert_eq!(
            base.x86_features().unwrap().vector_isa(),
            VectorIsa::Portable
        );
        assert_eq!("sm_80".parse::<Target>().unwrap().cpu_model(), None);
    }

    #[test]
    fn host_names_its_features() {
        let t = Target::host();
        let f = *t.x86_features().unwrap();
        let back: Target = t.name.parse().unwrap();
        assert_eq!(back.x86_features(), Some(&f));
    }
}
