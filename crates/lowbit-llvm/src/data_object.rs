//! Read-only data (pre-packed weights, scales, biases) written straight to
//! a file as an ELF64 relocatable object, or as assembly text, one named
//! blob at a time: the bytes never pass through LLVM, so an ahead-of-time
//! compile holds at most one blob in memory rather than copies of all of
//! them (LLVM constants, its object buffer).
//!
//! In an object, each blob is its own section `.rodata.<name>` (read-only, allocated,
//! 64-byte aligned) holding one global symbol `<name>` of hidden
//! visibility and the blob's size, so the object links into a program or
//! shared library beside the kernels' object, the symbols being visible to
//! the other objects of that link and not exported from it. The output
//! depends only on the blobs and their order (no time, path or host).
//! The assembly form holds the same sections and symbols; the LLVM IR form
//! one `hidden constant` global per blob.
//!
//! Limits: little-endian ELF64 for x86-64 and AArch64 only; fewer than
//! 65 000 blobs (the ELF section count without extended numbering);
//! names must be C identifiers.

use crate::error::CpuError;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Alignment of every blob (a cache line; the kernels load whole panels).
const ALIGN: u64 = 64;
/// Most blobs one object holds: the data sections plus four others stay
/// below `SHN_LORESERVE` (0xff00).
const MAX_BLOBS: usize = 65_000;

/// The output form.
enum Form {
    /// ELF64 relocatable object for machine `e_machine`.
    Elf { machine: u16 },
    /// GNU assembler text.
    Asm,
    /// LLVM IR text (global constants, to follow a module's text).
    LlvmIr,
}

/// One blob written so far: name, file offset (ELF) and size.
struct Blob {
    name: String,
    offset: u64,
    size: u64,
}

/// Streams named read-only blobs into an object or assembly file (see the
/// module docs). [`DataWriter::finish`] completes the file; a writer
/// dropped before that leaves an incomplete file behind for its caller to
/// remove.
pub struct DataWriter {
    form: Form,
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    blobs: Vec<Blob>,
}

fn io_err(path: &Path, e: std::io::Error) -> CpuError {
    CpuError::Io(format!("cannot write '{}': {e}", path.display()))
}

impl DataWriter {
    /// Creates the ELF object `path` for `triple` (`x86_64-*` or
    /// `aarch64-*`).
    pub fn object(path: &Path, triple: &str) -> Result<DataWriter, CpuError> {
        let machine = match triple.split('-').next() {
            Some("x86_64") => 62,
            Some("aarch64") => 183,
            _ => {
                return Err(CpuError::Io(format!(
                    "data objects are written for x86_64 and aarch64 only, not '{triple}'"
                )))
            }
        };
        let mut w = DataWriter::create(path, Form::Elf { machine })?;
        // The header is written last (it holds the section table's offset).
        w.put(&[0; 64])?;
        Ok(w)
    }

    /// Creates the assembly file `path` (GNU assembler syntax, any ELF
    /// target).
    pub fn assembly(path: &Path) -> Result<DataWriter, CpuError> {
        DataWriter::create(path, Form::Asm)
    }

    /// Creates the LLVM IR file `path`: one `hidden constant` global per
    /// blob, to be appended to a module's text.
    pub fn llvm_ir(path: &Path) -> Result<DataWriter, CpuError> {
        DataWriter::create(path, Form::LlvmIr)
    }

    fn create(path: &Path, form: Form) -> Result<DataWriter, CpuError> {
        let f = File::create(path).map_err(|e| io_err(path, e))?;
        Ok(DataWriter {
            form,
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            blobs: Vec::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CpuError> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_err(&self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, align: u64) -> Result<(), CpuError> {
        let pad = (align - self.pos % align) % align;
        self.put(&vec![0; pad as usize])
    }

    /// Appends the blob `name` holding `bytes`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), CpuError> {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(CpuError::Io(format!(
                "data blob name '{name}' is not a C identifier"
            )));
        }
        if self.blobs.len() >= MAX_BLOBS {
            return Err(CpuError::Io(format!(
                "more than {MAX_BLOBS} data blobs for one object"
            )));
        }
        let offset = match self.form {
            Form::Elf { .. } => {
                self.pad_to(ALIGN)?;
                let at = self.pos;
                self.put(bytes)?;
                at
            }
            Form::Asm => {
                let mut text = format!(
                    "\t.section\t.rodata.{name},\"a\"\n\t.p2align\t6\n\t.globl\t{name}\n\t.hidden\t{name}\n\t.type\t{name} STT_OBJECT\n\t.size\t{name}, {}\n{name}:\n",
                    bytes.len()
                );
                for line in bytes.chunks(32) {
                    text.push_str("\t.byte\t");
                    for (i, b) in line.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        text.push_str(&b.to_string());
                    }
                    text.push('\n');
                }
                self.put(text.as_bytes())?;
                0
            }
            Form::LlvmIr => {
                let mut text = format!("@{name} = hidden constant [{} x i8] ", bytes.len());
                if bytes.is_empty() {
                    text.push_str("zeroinitializer");
                } else {
                    text.push_str("c\"");
                    for &b in bytes {
                        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
                            text.push(b as char);
                        } else {
                            let _ = write!(text, "\\{b:02X}");
                        }
                    }
                    text.push('"');
                }
                text.push_str(", align 64\n");
                self.put(text.as_bytes())?;
                0
            }
        };
        self.blobs.push(Blob {
            name: name.to_string(),
            offset,
            size: bytes.len() as u64,
        });
        Ok(())
    }

    /// How many blobs were added.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Writes the symbol and section tables (ELF) and flushes the file.
    pub fn finish(mut self) -> Result<(), CpuError> {
        if let Form::Elf { machine } = self.form {
            self.finish_elf(machine)?;
        }
        let path = self.path.clone();
        let f = self
            .out
            .into_inner()
            .map_err(|e| io_err(&path, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(&path, e))
    }

    fn finish_elf(&mut self, machine: u16) -> Result<(), CpuError> {
        let n = self.blobs.len();
        // Sections: null, the blobs, .note.GNU-stack (no executable
        // stack), .symtab, .strtab, .shstrtab.
        let (strtab, shstrtab) = (n + 3, n + 4);
        let mut shstr = vec![0u8];
        let mut str_tab = vec![0u8];
        fn name_at(tab: &mut Vec<u8>, s: &str) -> u32 {
            let at = tab.len() as u32;
            tab.extend_from_slice(s.as_bytes());
            tab.push(0);
            at
        }
        let mut syms = vec![0u8; 24];
        let mut sec_names = Vec::with_capacity(n);
        for (i, b) in self.blobs.iter().enumerate() {
            sec_names.push(name_at(&mut shstr, &format!(".rodata.{}", b.name)));
            let st_name = name_at(&mut str_tab, &b.name);
            syms.extend_from_slice(&st_name.to_le_bytes());
            // STB_GLOBAL, STT_OBJECT; STV_HIDDEN.
            syms.push(0x11);
            syms.push(2);
            syms.extend_from_slice(&((i + 1) as u16).to_le_bytes());
            syms.extend_from_slice(&0u64.to_le_bytes());
            syms.extend_from_slice(&b.size.to_le_bytes());
        }
        let note_name = name_at(&mut shstr, ".note.GNU-stack");
        let symtab_name = name_at(&mut shstr, ".symtab");
        let strtab_name = name_at(&mut shstr, ".strtab");
        let shstrtab_name = name_at(&mut shstr, ".shstrtab");
        self.pad_to(8)?;
        let syms_at = self.pos;
        self.put(&syms)?;
        let str_at = self.pos;
        self.put(&str_tab)?;
        let shstr_at = self.pos;
        self.put(&shstr)?;
        self.pad_to(8)?;
        let shoff = self.pos;
        #[allow(clippy::too_many_arguments)]
        fn section(
            name: u32,
            kind: u32,
            flags: u64,
            offset: u64,
            size: u64,
            link: u32,
            info: u32,
            align: u64,
            entsize: u64,
        ) -> [u8; 64] {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            // sh_addr stays 0 in a relocatable object.
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            h[44..48].copy_from_slice(&info.to_le_bytes());
            h[48..56].copy_from_slice(&align.to_le_bytes());
            h[56..64].copy_from_slice(&entsize.to_le_bytes());
            h
        }
        const PROGBITS: u32 = 1;
        const SYMTAB: u32 = 2;
        const STRTAB: u32 = 3;
        const ALLOC: u64 = 2;
        self.put(&[0; 64])?;
        let blobs: Vec<(u64, u64)> = self.blobs.iter().map(|b| (b.offset, b.size)).collect();
        for (&(offset, size), &name) in blobs.iter().zip(&sec_names) {
            self.put(&section(
                name, PROGBITS, ALLOC, offset, size, 0, 0, ALIGN, 0,
            ))?;
        }
        self.put(&section(note_name, PROGBITS, 0, shstr_at, 0, 0, 0, 1, 0))?;
        // sh_link: the string table; sh_info: the first global symbol
        // (all but the null symbol are global).
        self.put(&section(
            symtab_name,
            SYMTAB,
            0,
            syms_at,
            syms.len() as u64,
            strtab as u32,
            1,
            8,
            24,
        ))?;
        self.put(&section(
            strtab_name,
            STRTAB,
            0,
            str_at,
            str_tab.len() as u64,
            0,
            0,
            1,
            0,
        ))?;
        self.put(&section(
            shstrtab_name,
            STRTAB,
            0,
            shstr_at,
            shstr.len() as u64,
            0,
            0,
            1,
            0,
        ))?;
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        // 64-bit, little-endian, ELF version 1, System V ABI.
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        // e_type REL, e_machine, e_version.
        h[16..18].copy_from_slice(&1u16.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[40..48].copy_from_slice(&shoff.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h[60..62].copy_from_slice(&((shstrtab + 1) as u16).to_le_bytes());
        h[62..64].copy_from_slice(&(shstrtab as u16).to_le_bytes());
        let path = self.path.clone();
        self.out.flush().map_err(|e| io_err(&path, e))?;
        let f = self.out.get_mut();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&h))
            .map_err(|e| io_err(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("lowbit-data-object-{}-{name}", std::process::id()))
    }

    #[test]
    fn elf_object_has_the_blobs_at_aligned_offsets_with_hidden_symbols() {
        let p = tmp("a.o");
        let mut w = DataWriter::object(&p, "x86_64-unknown-linux-gnu").unwrap();
        w.add("first", &[1, 2, 3]).unwrap();
        w.add("second", &[9; 100]).unwrap();
        w.add("empty", &[]).unwrap();
        assert_eq!(w.len(), 3);
        w.finish().unwrap();
        let b = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(&b[0..4], b"\x7fELF");
        assert_eq!(u16_at(18), 62);
        let (shoff, shnum, shstrndx) = (u64_at(40) as usize, u16_at(60), u16_at(62));
        assert_eq!((shnum, shstrndx), (3 + 5, 3 + 4));
        let sh = |i: usize| shoff + 64 * i;
        // Blob sections: offset 64-aligned, size, contents.
        let blob = |i: usize| {
            let (off, size) = (u64_at(sh(i) + 24) as usize, u64_at(sh(i) + 32) as usize);
            assert_eq!(off % 64, 0);
            b[off..off + size].to_vec()
        };
        assert_eq!(blob(1), vec![1, 2, 3]);
        assert_eq!(blob(2), vec![9; 100]);
        assert!(blob(3).is_empty());
        // Symbols: global object, hidden, in their own section, sized.
        let symoff = u64_at(sh(5) + 24) as usize;
        for (i, size) in [(1usize, 3u64), (2, 100), (3, 0)] {
            let s = symoff + 24 * i;
            assert_eq!((b[s + 4], b[s + 5], u16_at(s + 6)), (0x11, 2, i as u16));
            assert_eq!(u64_at(s + 16), size);
        }
    }

    #[test]
    fn writing_twice_gives_the_same_bytes() {
        let write = |name: &str| {
            let p = tmp(name);
            let mut w = DataWriter::object(&p, "aarch64-unknown-linux-gnu").unwrap();
            w.add("w0", &[7; 70]).unwrap();
            w.add("w1", &[1, 2]).unwrap();
            w.finish().unwrap();
            let b = std::fs::read(&p).unwrap();
            let _ = std::fs::remove_file(&p);
            b
        };
        let (a, b) = (write("r1.o"), write("r2.o"));
        assert_eq!(a, b);
        assert_eq!(u16::from_le_bytes([a[18], a[19]]), 183);
    }

    #[test]
    fn bad_names_and_targets_are_refused() {
        let p = tmp("bad.o");
        assert!(DataWriter::object(&p, "riscv64-unknown-linux-gnu").is_err());
        let mut w = DataWriter::object(&p, "x86_64-unknown-linux-gnu").unwrap();
        let e = w.add("no good", &[1]).unwrap_err().to_string();
        assert!(e.contains("'no good' is not a C identifier"), "{e}");
        assert!(w.add("9lives", &[1]).is_err());
        drop(w);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn llvm_ir_form_parses_with_every_byte_value() {
        let p = tmp("d.ll");
        let mut w = DataWriter::llvm_ir(&p).unwrap();
        let all: Vec<u8> = (0..=255u8).chain(*b"\"\\ a").collect();
        w.add("every", &all).unwrap();
        w.add("none", &[]).unwrap();
        w.finish().unwrap();
        let text = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        let ctx = inkwell::context::Context::create();
        let buf = inkwell::memory_buffer::MemoryBuffer::create_from_memory_range_copy(&text, "d");
        let m = ctx.create_module_from_ir(buf).unwrap();
        let g = m.get_global("every").unwrap();
        let init = g.get_initializer().unwrap().into_array_value();
        assert_eq!(init.get_type().len() as usize, all.len());
        assert!(init.is_const_string());
        assert_eq!(init.as_const_string().unwrap(), &all[..]);
        assert_eq!(g.get_alignment(), 64);
        assert!(m.get_global("none").is_some());
    }
}
