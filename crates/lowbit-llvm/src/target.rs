//! CPU targets: the host (`--cpu native`) as LLVM sees it, or a named
//! triple and CPU for ahead-of-time output.
//!
//! Kernels carry the CPU name and features as function attributes, so the
//! JIT and the AOT paths generate the same instructions (AVX-512 where the
//! CPU has it, AVX2+FMA, or baseline SSE2/NEON).
//!
//! On x86-64 the kernel choices (vector width, `vpdpbusd`, `vpopcntd`) come
//! from a [`lowbit_ir::target::X86Features`], the same description the
//! e-graph cost models read: `--cpu native` is [`IrTarget::host`], and a
//! named CPU (`icelake-server`, `x86-64-v3+avxvnni`) is parsed by
//! [`IrTarget`]'s parser. An x86 CPU name that parser does not know keeps
//! LLVM's own notion of the CPU for scheduling, but its kernels take the
//! portable path, since no feature set is known for it; a name LLVM does
//! not know either is refused (see `llvm_knows_cpu`).

use crate::error::CpuError;
use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use lowbit_ir::target::{Int8Dot, Popcount, Target as IrTarget, VectorIsa, X86Features};
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
    /// On x86-64, the feature set kernel choices are made from; `None` on
    /// other architectures.
    pub x86: Option<X86Features>,
}

/// What LLVM prints on standard error when a target machine is made for a
/// CPU name it does not know (it then carries on with a generic CPU).
const UNKNOWN_CPU_MESSAGE: &str = "is not a recognized processor for this target";

/// Whether LLVM knows `cpu` on `triple`. LLVM's C API cannot ask this; an
/// unknown name only makes LLVM print [`UNKNOWN_CPU_MESSAGE`] on standard
/// error when a target machine is created. So one is created with file
/// descriptor 2 pointed at a temporary file, restored right after, and the
/// file is searched for the message. Other threads' writes to standard
/// error during those microseconds land in the file too, which is why this
/// runs only for names lowbit does not know itself (command-line
/// `--cpu`). On non-Unix systems every name is accepted.
fn llvm_knows_cpu(triple: &str, cpu: &str) -> Result<bool, CpuError> {
    #[cfg(unix)]
    {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        extern "C" {
            fn dup(fd: i32) -> i32;
            fn dup2(from: i32, to: i32) -> i32;
            fn close(fd: i32) -> i32;
        }
        init_targets()?;
        let tt = TargetTriple::create(triple);
        let target = Target::from_triple(&tt)
            .map_err(|e| CpuError::Llvm(format!("target '{triple}': {e}")))?;
        let path = std::env::temp_dir().join(format!(
            "lowbit-cpu-probe-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let io = |e: std::io::Error| CpuError::Io(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        let _ = std::fs::remove_file(&path);
        // One probe at a time: two interleaved redirections could restore
        // descriptor 2 to the other probe's file.
        static PROBE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = PROBE.lock().unwrap_or_else(|p| p.into_inner());
        let _ = std::io::stderr().flush();
        // SAFETY: plain POSIX calls on descriptors this function owns
        // (`saved`, `file`) and on 2, which is restored before returning.
        let saved = unsafe { dup(2) };
        if saved < 0 {
            return Ok(true);
        }
        if unsafe { dup2(file.as_raw_fd(), 2) } < 0 {
            unsafe { close(saved) };
            return Ok(true);
        }
        let machine = target.create_target_machine(
            &tt,
            cpu,
            "",
            OptimizationLevel::Default,
            RelocMode::PIC,
            CodeModel::Default,
        );
        unsafe {
            dup2(saved, 2);
            close(saved);
        }
        drop(machine);
        let mut text = String::new();
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        file.read_to_string(&mut text).map_err(io)?;
        // Whatever else landed there goes back to standard error.
        let rest: String = text
            .lines()
            .filter(|l| !l.contains(UNKNOWN_CPU_MESSAGE))
            .map(|l| format!("{l}\n"))
            .collect();
        if !rest.is_empty() {
            let _ = std::io::stderr().write_all(rest.as_bytes());
        }
        Ok(!text.contains(UNKNOWN_CPU_MESSAGE))
    }
    #[cfg(not(unix))]
    {
        let _ = (triple, cpu);
        Ok(true)
    }
}

/// The code paths the CPU backend takes on a target, for messages, tests
/// and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelPaths {
    /// Float kernels' vector width (AVX-512, AVX2+FMA or portable).
    pub vector: VectorIsa,
    /// How the W8A8 kernel forms 8-bit dot products.
    pub int8_dot: Int8Dot,
    /// How the W1A1 kernel counts bits.
    pub popcount: Popcount,
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
    /// The machine this process runs on. LLVM's host CPU name and feature
    /// string tune scheduling; kernel choices follow [`IrTarget::host`].
    pub fn host() -> Result<CpuTarget, CpuError> {
        init_targets()?;
        let triple = TargetMachine::get_default_triple()
            .as_str()
            .to_string_lossy()
            .into_owned();
        let x86 = triple
            .starts_with("x86_64")
            .then(|| IrTarget::host().x86_features().copied())
            .flatten();
        Ok(CpuTarget {
            triple,
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
            x86,
        })
    }

    /// The x86-64 code-generation target for an IR target description:
    /// its CPU model as LLVM's CPU name and exactly its features as the
    /// feature string. GPU targets are refused.
    pub fn from_target(t: &IrTarget) -> Result<CpuTarget, CpuError> {
        let (Some(f), Some(model)) = (t.x86_features(), t.cpu_model()) else {
            return Err(CpuError::Llvm(format!(
                "target '{t}' is a GPU, not a CPU the cpu backend compiles for"
            )));
        };
        Ok(CpuTarget {
            triple: "x86_64-unknown-linux-gnu".to_string(),
            cpu: model.to_string(),
            features: f.llvm_features(),
            x86: Some(*f),
        })
    }

    /// The paths the kernels take: on x86-64 from the feature set, elsewhere
    /// the portable ones.
    pub fn kernel_paths(&self) -> KernelPaths {
        let f = self.x86.unwrap_or_default();
        KernelPaths {
            vector: f.vector_isa(),
            int8_dot: f.int8_dot(),
            popcount: f.popcount(),
        }
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
        let x86 = triple.starts_with("x86_64");
        if x86 {
            match cpu.parse::<IrTarget>() {
                Ok(t) => {
                    return Ok(CpuTarget {
                        triple,
                        ..CpuTarget::from_target(&t)?
                    })
                }
                // `model+feature` is lowbit's syntax, never an LLVM name.
                Err(e) if cpu.contains('+') => return Err(CpuError::Llvm(e)),
                Err(_) => {}
            }
        }
        if !llvm_knows_cpu(&triple, cpu)? {
            let hint = if x86 {
                format!(
                    "; lowbit knows the kernel features of {} (add features with '+', e.g. x86-64-v3+avxvnni), or use native",
                    lowbit_ir::target::cpu_model_names().join(", ")
                )
            } else {
                String::new()
            };
            return Err(CpuError::Llvm(format!(
                "unknown CPU '{cpu}' for {triple}: LLVM does not know it{hint}"
            )));
        }
        Ok(CpuTarget {
            triple,
            cpu: cpu.to_string(),
            features: String::new(),
            x86: x86.then(X86Features::default),
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
        let isa = match self.x86 {
            None if self.triple.starts_with("aarch64") => "neon",
            None => "baseline",
            Some(f) => match (f.vector_isa(), f.int8_dot()) {
                (VectorIsa::Avx512, Int8Dot::Avx512Vnni) => "avx512+vnni",
                (VectorIsa::Avx512, _) => "avx512",
                (VectorIsa::Avx2Fma, _) => "avx2",
                (VectorIsa::Portable, _) => "baseline",
            },
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
