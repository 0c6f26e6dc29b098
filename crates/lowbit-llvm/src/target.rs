//! CPU targets: the host (`--cpu native`) as LLVM sees it, or a named
//! triple and CPU for ahead-of-time output.
//!
//! Kernels carry the CPU name and features as function attributes, so the
//! JIT and the AOT paths generate the same instructions (AVX-512 where the
//! CPU has it, AVX2+FMA, or baseline SSE2/NEON).

use crate::error::CpuError;
use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use std::sync::OnceLock;

/// A code-generation target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CpuTarget {
    /// LLVM target triple.
    pub triple: String,
    /// LLVM CPU name (`sapphirerapids`, `znver5`, `generic`, ...).
    pub cpu: String,
    /// LLVM feature string (`+avx512f,+fma,...`).
    pub features: String,
}

fn init_targets() -> Result<(), CpuError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        Target::initialize_native(&InitializationConfig::default())?;
        Target::initialize_x86(&InitializationConfig::default());
        Target::initialize_aarch64(&InitializationConfig::default());
        Ok(())
    })
    .clone()
    .map_err(CpuError::Llvm)
}

impl CpuTarget {
    /// The machine this process runs on.
    pub fn host() -> Result<CpuTarget, CpuError> {
        init_targets()?;
        Ok(CpuTarget {
            triple: TargetMachine::get_default_triple()
                .as_str()
                .to_string_lossy()
                .into_owned(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        })
    }

    /// A named target: `arch` is `x86_64` or `aarch64` (or a full triple),
    /// `cpu` an LLVM CPU name or `native` (the host, same architecture only).
    pub fn named(arch: &str, cpu: &str) -> Result<CpuTarget, CpuError> {
        let host = CpuTarget::host()?;
        let triple = match arch {
            "x86_64" => "x86_64-unknown-linux-gnu".to_string(),
            "aarch64" => "aarch64-unknown-linux-gnu".to_string(),
            t if t.contains('-') => t.to_string(),
            other => {
                return Err(CpuError::Llvm(format!(
                    "unknown target '{other}' (expected x86_64 or aarch64)"
                )))
            }
        };
        let same_arch = triple.split('-').next() == host.triple.split('-').next();
        if cpu == "native" {
            if !same_arch {
                return Err(CpuError::Llvm(format!(
                    "--cpu native describes the host ({}), not {triple}",
                    host.triple
                )));
            }
            return Ok(CpuTarget { triple, ..host });
        }
        Ok(CpuTarget {
            triple,
            cpu: cpu.to_string(),
            features: String::new(),
        })
    }

    /// Whether the target has a feature (`avx512f`, `fma`, ...), from the
    /// feature string or implied by a well-known CPU name.
    pub fn has(&self, feature: &str) -> bool {
        self.features
            .split(',')
            .any(|f| f.strip_prefix('+') == Some(feature))
    }

    /// A short description for messages: CPU name and widest vector ISA.
    pub fn describe(&self) -> String {
        let isa = if self.has("avx512f") {
            if self.has("avx512vnni") {
                "avx512+vnni"
            } else {
                "avx512"
            }
        } else if self.has("avx2") {
            "avx2"
        } else if self.triple.starts_with("aarch64") {
            "neon"
        } else {
            "baseline"
        };
        format!("{} {} ({isa})", self.triple, self.cpu)
    }

    /// The LLVM target machine.
    pub(crate) fn machine(&self, reloc: RelocMode) -> Result<TargetMachine, CpuError> {
        init_targets()?;
        let triple = TargetTriple::create(&self.triple);
        let target = Target::from_triple(&triple)
            .map_err(|e| CpuError::Llvm(format!("target '{}': {e}", self.triple)))?;
        target
            .create_target_machine(
                &triple,
                &self.cpu,
                &self.features,
                OptimizationLevel::Aggressive,
                reloc,
                CodeModel::Default,
            )
            .ok_or_else(|| {
                CpuError::Llvm(format!(
                    "cannot create a target machine for {} cpu '{}'",
                    self.triple, self.cpu
                ))
            })
    }
}
