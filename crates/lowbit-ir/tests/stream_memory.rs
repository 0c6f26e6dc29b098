//! The streaming parser does not keep the hex text of constants: with an
//! allocator that counts live heap bytes, parsing a text of two 4 MiB
//! constants (16 MiB of hex, one inline, one a resource) from a reader
//! peaks at little more than the 8 MiB of decoded bytes. The same count
//! over the in-memory parser (which holds the text) is checked to exceed
//! the bound, so the accounting is shown to catch a kept text.
//!
//! Its own test binary: the counting allocator is process-wide.

use lowbit_ir::parser::{parse_module, parse_module_reader};
use lowbit_ir::{Module, OpKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes per constant.
const N: usize = 4 << 20;

/// The constants' byte values: a pattern that is not all one digit.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A module text made on the fly, never held whole: an inline hex
/// constant and a resource constant of `N` bytes each.
struct Gen {
    parts: Vec<Part>,
    part: usize,
    at: usize,
}

enum Part {
    Text(String),
    /// `N` bytes as upper-case hex digits.
    Hex,
}

impl Gen {
    fn new() -> Gen {
        let ty = format!("tensor<{N}xi8>");
        Gen {
            parts: vec![
                Part::Text(format!(
                    "func @main() -> (a: {ty}, b: {ty}) {{\n  %0 = constant dense<\"0x"
                )),
                Part::Hex,
                Part::Text(format!(
                    "\"> : {ty}\n  %1 = constant dense_resource<r0> : {ty}\n  return %0, %1\n}}\n{{-#\n  resources: {{\n    r0: \"0x"
                )),
                Part::Hex,
                Part::Text("\"\n  }\n#-}\n".into()),
            ],
            part: 0,
            at: 0,
        }
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(part) = self.parts.get(self.part) else {
            return Ok(0);
        };
        let (n, len) = match part {
            Part::Text(s) => {
                let n = buf.len().min(s.len() - self.at);
                buf[..n].copy_from_slice(&s.as_bytes()[self.at..self.at + n]);
                (n, s.len())
            }
            Part::Hex => {
                let digits = b"0123456789ABCDEF";
                let n = buf.len().min(2 * N - self.at);
                for (k, slot) in buf[..n].iter_mut().enumerate() {
                    let d = self.at + k;
                    let b = byte_at(d / 2);
                    let nib = if d.is_multiple_of(2) { b >> 4 } else { b & 15 };
                    *slot = digits[nib as usize];
                }
                (n, 2 * N)
            }
        };
        self.at += n;
        if self.at == len {
            self.part += 1;
            self.at = 0;
        }
        Ok(n)
    }
}

/// The peak of live heap bytes above the level at the start, while `f`
/// runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (PEAK.load(Ordering::SeqCst) - base, out)
}

fn check_constants(m: &Module) {
    let f = &m.functions[0];
    let mut seen = 0;
    for &op in f.ops() {
        if let OpKind::Constant(c) = &f.op(op).kind {
            let b = c.bytes();
            assert_eq!(b.len(), N);
            for i in [0, 1, 2, N / 3, N - 1] {
                assert_eq!(b[i], byte_at(i), "byte {i}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn hex_text_is_not_kept_while_parsing_from_a_reader() {
    let text_len = {
        let mut n = 0;
        let mut g = Gen::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match g.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => panic!("{e}"),
            }
        }
        n
    };
    assert!(text_len > 4 * N);
    // The decoded bytes (2 N) plus a quarter of that for everything else:
    // well below the text (4 N), which a parser that kept it would exceed.
    let bound = 2 * N + N / 2;

    let (peak, read) = peak_during(|| parse_module_reader(Gen::new()));
    let m = match read.map(|r| r.module) {
        Ok(Ok(m)) => m,
        Ok(Err(d)) => panic!("{}", d[0]),
        Err(e) => panic!("{e}"),
    };
    check_constants(&m);
    assert!(
        peak < bound,
        "streaming parse peaked at {peak} heap bytes; bound {bound}, text {text_len}"
    );
    drop(m);

    // Control: the whole text in memory plus its parse exceeds the bound.
    let (peak_whole, parsed) = peak_during(|| {
        let mut text = String::new();
        Gen::new()
            .read_to_string(&mut text)
            .map(|_| parse_module(&text))
    });
    match parsed {
        Ok(Ok(m)) => check_constants(&m),
        Ok(Err(d)) => panic!("{}", d[0]),
        Err(e) => panic!("{e}"),
    }
    assert!(
        peak_whole > bound,
        "the in-memory parse peaked at only {peak_whole} heap bytes"
    );
}
