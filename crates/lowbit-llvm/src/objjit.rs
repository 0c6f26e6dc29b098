//! Loading a compiled object file into the process with LLVM's ORC LLJIT
//! (through the C API, which inkwell does not wrap), and finding its
//! symbols.
//!
//! Kernels are compiled to the same relocatable object the AOT path writes,
//! then linked in memory here, so the JIT runs exactly the AOT code and an
//! object read back from the disk cache loads the same way.

use crate::error::CpuError;
use inkwell::llvm_sys::core::LLVMCreateMemoryBufferWithMemoryRangeCopy;
use inkwell::llvm_sys::error::{LLVMDisposeErrorMessage, LLVMErrorRef, LLVMGetErrorMessage};
use inkwell::llvm_sys::orc2::lljit::{
    LLVMOrcCreateLLJIT, LLVMOrcDisposeLLJIT, LLVMOrcLLJITAddObjectFile,
    LLVMOrcLLJITGetMainJITDylib, LLVMOrcLLJITLookup, LLVMOrcLLJITRef,
};
use std::ffi::{c_char, CStr, CString};

/// An LLJIT instance holding loaded machine code; dropping it unmaps the
/// code.
pub(crate) struct LoadedObject {
    jit: LLVMOrcLLJITRef,
}

// SAFETY: ORC's LLJIT is thread-safe, and after loading only `Drop` touches
// the handle; the code it owns is immutable.
unsafe impl Send for LoadedObject {}
// SAFETY: as above; shared references never use the handle.
unsafe impl Sync for LoadedObject {}

impl Drop for LoadedObject {
    fn drop(&mut self) {
        // SAFETY: `jit` came from LLVMOrcCreateLLJIT and is disposed once.
        // An error while tearing down leaves nothing to recover.
        let _ = error_text(unsafe { LLVMOrcDisposeLLJIT(self.jit) });
    }
}

/// The message of an LLVM error (consuming it), or `None` for success.
fn error_text(err: LLVMErrorRef) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: `err` is a live error; getting its message consumes it, and
    // the message is disposed after copying.
    unsafe {
        let msg = LLVMGetErrorMessage(err);
        let text = CStr::from_ptr(msg).to_string_lossy().into_owned();
        LLVMDisposeErrorMessage(msg);
        Some(text)
    }
}

fn check(err: LLVMErrorRef, what: &str) -> Result<(), CpuError> {
    match error_text(err) {
        None => Ok(()),
        Some(m) => Err(CpuError::Llvm(format!("{what}: {m}"))),
    }
}

/// Links `object` (an ELF/Mach-O/COFF object for the host) into a fresh
/// LLJIT and returns it with the addresses of `symbols`.
pub(crate) fn load(
    object: &[u8],
    symbols: &[&str],
) -> Result<(LoadedObject, Vec<usize>), CpuError> {
    let mut jit: LLVMOrcLLJITRef = std::ptr::null_mut();
    // SAFETY: a null builder asks for the default (host) configuration.
    check(
        unsafe { LLVMOrcCreateLLJIT(&mut jit, std::ptr::null_mut()) },
        "creating the JIT",
    )?;
    let loaded = LoadedObject { jit };
    let name = c"lowbit-kernel";
    // SAFETY: the buffer copies `object`; AddObjectFile takes ownership of
    // it whether or not it succeeds.
    unsafe {
        let buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(
            object.as_ptr() as *const c_char,
            object.len(),
            name.as_ptr(),
        );
        let dylib = LLVMOrcLLJITGetMainJITDylib(jit);
        check(
            LLVMOrcLLJITAddObjectFile(jit, dylib, buf),
            "loading the kernel object",
        )?;
    }
    let mut addrs = Vec::with_capacity(symbols.len());
    for s in symbols {
        let cname = CString::new(*s)
            .map_err(|_| CpuError::Llvm(format!("symbol name '{s}' contains NUL")))?;
        let mut addr: u64 = 0;
        // SAFETY: `jit` is live and `cname` is NUL-terminated.
        check(
            unsafe { LLVMOrcLLJITLookup(jit, &mut addr, cname.as_ptr()) },
            &format!("looking up {s}"),
        )?;
        if addr == 0 {
            return Err(CpuError::Llvm(format!("the JIT returned a null {s}")));
        }
        addrs.push(addr as usize);
    }
    Ok((loaded, addrs))
}
