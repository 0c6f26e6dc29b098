//! Reading `.lbir` text from a stream without keeping it, and showing its
//! lines in diagnostics afterwards.
//!
//! Nearly all of a large model's text is the hex of its constants
//! (`dense<"0x...">` and resource entries), two characters per byte. The
//! crate-private `compact` reads the text once through a fixed buffer and
//! decodes every `"0x..."` string straight into its byte buffer as it
//! goes; what is kept of the text is everything else (names, types, small
//! values) with a one-byte placeholder (NUL) where each decoded string
//! stood. The parser reads the placeholder as that string (see
//! [`crate::parser::parse_module_reader`]): it carries the string's
//! original length, so line and column positions after it are those of
//! the original text, and the string can be re-encoded exactly (digit case
//! and `0x`/`0X` are recorded) where it is not a payload (a note, a quoted
//! output name, or an error message).
//!
//! The compaction follows the lexer's view of the text: strings (with their
//! `\` escapes, ending at the line), `//` comments to the end of the line,
//! and `%"..."` quoted value names, which are never decoded. A hex string
//! that turns out not to be one (a non-hex digit, mixed-case digits, an odd
//! number of digits, or no closing quote, as in a truncated file) is written
//! back into the kept text exactly as it was, so the parser reports the
//! same error, at the same place, as it does for the whole text in memory.
//!
//! Diagnostics show the offending line: [`LineIndex`] keeps where each line
//! starts (8 bytes per line) so that a line can be read again from the file
//! ([`Source::File`]); text that cannot be re-read (standard input) is kept
//! whole ([`Source::Text`]).
//!
//! Limits: the input must be UTF-8 (checked on the kept text, so an invalid
//! byte inside a decoded hex string cannot occur: those are ASCII). Reading a
//! line back assumes the file did not change since it was parsed; if it did,
//! the snippet may show the wrong text (never a panic).

use crate::diag::{render_with_lines, Diagnostic};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Where each line of a text starts, for showing a line of a file again
/// without keeping the file's text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineIndex {
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<u64>,
    /// Length of the text in bytes.
    len: u64,
}

impl LineIndex {
    /// The index of an in-memory text.
    pub fn of_text(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i as u64 + 1),
        );
        LineIndex {
            starts,
            len: text.len() as u64,
        }
    }

    /// How many lines the text has, counted as [`str::lines`] does (a
    /// final line ending does not start another line).
    pub fn line_count(&self) -> usize {
        self.starts.iter().filter(|&&s| s < self.len).count()
    }

    /// The byte range of 1-based line `line` without its line ending
    /// (`\n`, or `\r\n` as [`str::lines`] strips it), or `None` past the
    /// end.
    pub fn line_range(&self, line: u32) -> Option<(u64, u64, bool)> {
        let i = (line as usize).checked_sub(1)?;
        let start = *self.starts.get(i)?;
        if start >= self.len {
            return None;
        }
        // The range ends before the '\n'; the flag says a '\n' followed.
        Some(match self.starts.get(i + 1) {
            Some(&next) => (start, next - 1, true),
            None => (start, self.len, false),
        })
    }

    /// Reads 1-based line `line` from `r` (the text this index was built
    /// from), without its line ending; `Ok(None)` past the end.
    pub fn read_line<R: Read + Seek>(&self, r: &mut R, line: u32) -> io::Result<Option<String>> {
        let Some((start, end, newline)) = self.line_range(line) else {
            return Ok(None);
        };
        r.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        r.take(end - start).read_to_end(&mut bytes)?;
        if newline && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// The text diagnostics are shown against: kept whole, or a file read
/// again line by line.
#[derive(Clone, Debug)]
pub enum Source {
    /// The whole text (standard input, or a string).
    Text(String),
    /// A file and where its lines start; lines are read from it on demand.
    File {
        /// The file the text was read from.
        path: PathBuf,
        /// Its line starts.
        lines: LineIndex,
    },
}

impl Source {
    /// Line `line` (1-based) without its ending, or `None` when it does not
    /// exist or the file cannot be read again.
    pub fn line(&self, line: u32) -> Option<String> {
        match self {
            Source::Text(s) => (line as usize)
                .checked_sub(1)
                .and_then(|i| s.lines().nth(i))
                .map(str::to_string),
            Source::File { path, lines } => {
                let mut f = File::open(path).ok()?;
                lines.read_line(&mut f, line).ok().flatten()
            }
        }
    }

    /// Renders `diags` as [`crate::diag::render_with_source`] does, with
    /// the lines taken from this source.
    pub fn render(&self, diags: &[Diagnostic], file: &str) -> String {
        render_with_lines(diags, file, |n| self.line(n))
    }
}

/// A `"0x..."` string decoded by [`compact`], standing in the kept text as
/// one NUL byte at [`HexBlob::at`].
pub(crate) struct HexBlob {
    /// Offset of the placeholder byte in the kept text.
    pub(crate) at: usize,
    /// Length of the string as written, quotes included (all ASCII, so
    /// bytes and characters agree).
    pub(crate) len: usize,
    /// `x` or `X`, as written after the `0`.
    x: u8,
    /// Whether the digits `a`-`f` were written in upper case.
    upper: bool,
    /// The decoded bytes, until the parser takes them.
    bytes: Cell<Vec<u8>>,
}

impl HexBlob {
    /// Moves the decoded bytes out (the parser's payload); later calls
    /// get an empty vector.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.bytes.take()
    }

    /// The string's contents as written (without quotes).
    pub(crate) fn text(&self) -> String {
        let bytes = self.bytes.take();
        let mut s = String::with_capacity(2 + 2 * bytes.len());
        s.push('0');
        s.push(self.x as char);
        push_hex(&mut s, &bytes, self.upper);
        self.bytes.set(bytes);
        s
    }

    /// The first `n` characters of [`HexBlob::text`] and whether there is
    /// more, without encoding the rest.
    pub(crate) fn preview(&self, n: usize) -> (String, bool) {
        let bytes = self.bytes.take();
        let mut s = String::from("0");
        s.push(self.x as char);
        let need = n.saturating_sub(2).div_ceil(2);
        push_hex(&mut s, &bytes[..need.min(bytes.len())], self.upper);
        s.truncate(n);
        self.bytes.set(bytes);
        let content_len = self.len - 2;
        (s, content_len > n)
    }
}

impl std::fmt::Debug for HexBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HexBlob(at {}, {} chars)", self.at, self.len)
    }
}

/// Blobs are told apart by where they stand.
impl PartialEq for HexBlob {
    fn eq(&self, other: &HexBlob) -> bool {
        self.at == other.at
    }
}

fn push_hex(s: &mut String, bytes: &[u8], upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    for &b in bytes {
        s.push(digits[(b >> 4) as usize] as char);
        s.push(digits[(b & 15) as usize] as char);
    }
}

/// What [`compact`] keeps of a text.
pub(crate) struct Compacted {
    /// The text with each decoded hex string replaced by one NUL byte.
    pub(crate) text: String,
    /// The decoded strings, in text order (so sorted by `at`).
    pub(crate) blobs: Vec<HexBlob>,
    /// Where each line of the original text starts.
    pub(crate) lines: LineIndex,
}

/// Where the scanner is, between bytes.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Normal,
    /// After one `/` outside strings and comments.
    Slash,
    Comment,
    /// After `%`: a `"` here opens a quoted value name, never decoded.
    Percent,
    /// Inside a string kept as written; `escape` after a `\`.
    Str {
        escape: bool,
    },
    /// After a `"` (0) or `"0` (1) that may open a hex string.
    Open(u8),
    /// Inside a hex string being decoded (see `Compactor::hex`).
    Hex,
}

/// A hex string being decoded.
struct HexRun {
    x: u8,
    /// The case of the letter digits seen so far.
    upper: Option<bool>,
    /// The first digit of a byte whose second digit has not come yet.
    high: Option<u8>,
    bytes: Vec<u8>,
    digits: usize,
}

struct Compactor {
    text: Vec<u8>,
    blobs: Vec<HexBlob>,
    starts: Vec<u64>,
    state: State,
    run: Option<HexRun>,
}

/// Per byte: a hex digit's value (low 4 bits) with [`DIGIT`], and
/// [`LOWER`] or [`UPPER`] for letters; 0 for every other byte.
static HEX_TABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = DIGIT | i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = DIGIT | LOWER | (10 + i as u8);
        t[b'A' as usize + i] = DIGIT | UPPER | (10 + i as u8);
        i += 1;
    }
    t
};
const DIGIT: u8 = 0x10;
const LOWER: u8 = 0x20;
const UPPER: u8 = 0x40;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Compactor {
    /// Writes back a hex string that is not one after all, exactly as it
    /// was written so far, and continues it as an ordinary string.
    fn give_up_hex(&mut self) {
        if let Some(run) = self.run.take() {
            let mut s = String::with_capacity(3 + 2 * run.bytes.len());
            s.push('"');
            s.push('0');
            s.push(run.x as char);
            push_hex(&mut s, &run.bytes, run.upper.unwrap_or(true));
            if let Some(h) = run.high {
                s.push(h as char);
            }
            self.text.extend_from_slice(s.as_bytes());
        }
        self.state = State::Str { escape: false };
    }

    /// One byte of a hex string; false when the byte is not part of it
    /// (the string was written back and the byte must be read again).
    fn hex(&mut self, b: u8) -> bool {
        let Some(run) = self.run.as_mut() else {
            self.state = State::Normal;
            return false;
        };
        if b == b'"' && run.high.is_none() {
            let Some(mut run) = self.run.take() else {
                return true;
            };
            run.bytes.shrink_to_fit();
            self.blobs.push(HexBlob {
                at: self.text.len(),
                len: run.digits + 4,
                x: run.x,
                upper: run.upper.unwrap_or(true),
                bytes: Cell::new(run.bytes),
            });
            self.text.push(0);
            self.state = State::Normal;
            return true;
        }
        let Some(v) = hex_val(b) else {
            self.give_up_hex();
            return false;
        };
        if b.is_ascii_alphabetic() {
            let upper = b.is_ascii_uppercase();
            if run.upper.is_some_and(|u| u != upper) {
                // Mixed case cannot be re-encoded exactly: keep the text.
                self.give_up_hex();
                return false;
            }
            run.upper = Some(upper);
        }
        run.digits += 1;
        match run.high.take() {
            None => run.high = Some(b),
            Some(h) => run.bytes.push((hex_val(h).unwrap_or(0) << 4) | v),
        }
        true
    }

    /// Decodes whole digit pairs from the start of `s` while inside a hex
    /// string, as long as they need none of [`Compactor::hex`]'s care (an
    /// invalid digit, a change of case, a pending half byte); returns how
    /// many bytes it consumed. Nearly all of a large model's text goes
    /// through here.
    fn hex_fast(&mut self, s: &[u8]) -> usize {
        let Some(run) = self.run.as_mut() else {
            return 0;
        };
        if run.high.is_some() {
            return 0;
        }
        let mut allowed = match run.upper {
            None => LOWER | UPPER,
            Some(true) => UPPER,
            Some(false) => LOWER,
        };
        // Whole blocks of pairs are decoded without a branch per pair and
        // checked once (every byte a digit, one case of letters); a block
        // that fails the check is decoded again pair by pair up to the
        // first pair that needs `hex`'s care.
        const BLOCK: usize = 1024;
        let mut block = [0u8; BLOCK];
        let mut i = 0;
        loop {
            let pairs = ((s.len() - i) / 2).min(BLOCK);
            if pairs == 0 {
                break;
            }
            let src = &s[i..i + 2 * pairs];
            let (mut all, mut cases) = (DIGIT, 0u8);
            for (o, p) in block[..pairs].iter_mut().zip(src.chunks_exact(2)) {
                let (ta, tb) = (HEX_TABLE[p[0] as usize], HEX_TABLE[p[1] as usize]);
                all &= ta & tb;
                cases |= ta | tb;
                *o = (ta << 4) | (tb & 15);
            }
            let cases = cases & (LOWER | UPPER);
            if all & DIGIT != 0 && cases != LOWER | UPPER && cases & !allowed == 0 {
                if cases != 0 {
                    allowed = cases;
                    run.upper = Some(cases == UPPER);
                }
                run.bytes.extend_from_slice(&block[..pairs]);
                i += 2 * pairs;
                continue;
            }
            for p in src.chunks_exact(2) {
                let (ta, tb) = (HEX_TABLE[p[0] as usize], HEX_TABLE[p[1] as usize]);
                let case = (ta | tb) & (LOWER | UPPER);
                if ta & tb & DIGIT == 0 || case & !allowed != 0 || case == LOWER | UPPER {
                    break;
                }
                if case != 0 && allowed == LOWER | UPPER {
                    allowed = case;
                    run.upper = Some(case == UPPER);
                }
                run.bytes.push((ta << 4) | (tb & 15));
                i += 2;
            }
            break;
        }
        run.digits += i;
        i
    }

    /// Feeds one byte at offset `off` of the original text.
    fn byte(&mut self, b: u8, off: u64) {
        if b == b'\n' {
            self.starts.push(off + 1);
        }
        // A byte is read again (at most twice) when the state it ended
        // does not consume it.
        loop {
            match self.state {
                State::Normal => {
                    self.state = match b {
                        b'/' => State::Slash,
                        b'%' => State::Percent,
                        b'"' => State::Open(0),
                        _ => State::Normal,
                    };
                    if b != b'"' {
                        self.text.push(b);
                    }
                }
                State::Slash => {
                    if b != b'/' {
                        self.state = State::Normal;
                        continue;
                    }
                    self.text.push(b);
                    self.state = State::Comment;
                }
                State::Comment => {
                    self.text.push(b);
                    if b == b'\n' {
                        self.state = State::Normal;
                    }
                }
                State::Percent => {
                    if b != b'"' {
                        self.state = State::Normal;
                        continue;
                    }
                    self.text.push(b);
                    self.state = State::Str { escape: false };
                }
                State::Str { escape } => {
                    self.text.push(b);
                    // As the lexer: `\` escapes any byte but a line end;
                    // a line end ends the (unterminated) string.
                    self.state = match b {
                        b'\n' => State::Normal,
                        _ if escape => State::Str { escape: false },
                        b'\\' => State::Str { escape: true },
                        b'"' => State::Normal,
                        _ => State::Str { escape: false },
                    };
                }
                State::Open(0) if b == b'0' => self.state = State::Open(1),
                State::Open(1) if b == b'x' || b == b'X' => {
                    self.run = Some(HexRun {
                        x: b,
                        upper: None,
                        high: None,
                        bytes: Vec::new(),
                        digits: 0,
                    });
                    self.state = State::Hex;
                }
                State::Open(n) => {
                    self.text.push(b'"');
                    if n == 1 {
                        self.text.push(b'0');
                    }
                    self.state = State::Str { escape: false };
                    continue;
                }
                State::Hex => {
                    if !self.hex(b) {
                        continue;
                    }
                }
            }
            return;
        }
    }

    /// Ends the text: whatever was pending is written back as it was.
    fn finish(mut self, len: u64) -> io::Result<Compacted> {
        match self.state {
            State::Open(n) => {
                self.text.push(b'"');
                if n == 1 {
                    self.text.push(b'0');
                }
            }
            State::Hex => self.give_up_hex(),
            _ => {}
        }
        let text = String::from_utf8(self.text).map_err(|_| {
            // The same words as `read_to_string`, so the message does not
            // depend on how the file was read.
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })?;
        Ok(Compacted {
            text,
            blobs: self.blobs,
            lines: LineIndex {
                starts: self.starts,
                len,
            },
        })
    }
}

/// Reads `reader` to its end through a fixed buffer, decoding hex strings
/// as it goes (see the module header).
pub(crate) fn compact(reader: impl Read) -> io::Result<Compacted> {
    let mut c = Compactor {
        text: Vec::new(),
        blobs: Vec::new(),
        starts: vec![0],
        state: State::Normal,
        run: None,
    };
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let mut off = 0u64;
    loop {
        let chunk = match r.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let n = chunk.len();
        let mut i = 0;
        while i < n {
            if c.state == State::Hex {
                let k = c.hex_fast(&chunk[i..]);
                i += k;
                off += k as u64;
                if i == n {
                    break;
                }
            }
            c.byte(chunk[i], off);
            i += 1;
            off += 1;
        }
        r.consume(n);
    }
    c.finish(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(src: &str) -> (String, Vec<String>) {
        let c = compact(src.as_bytes()).unwrap();
        let texts = c.blobs.iter().map(HexBlob::text).collect();
        (c.text, texts)
    }

    #[test]
    fn hex_strings_are_decoded_and_the_rest_kept() {
        let (text, blobs) =
            kept("a dense<\"0x0A1b\"> \"0xAB\" // \"0x12\"\n%\"0x12\" \"0x1\" \"0xaB\"");
        // 0x0A1b mixes cases, 0x1 is odd, 0xaB mixes: all kept as written.
        assert_eq!(
            text,
            "a dense<\"0x0A1b\"> \0 // \"0x12\"\n%\"0x12\" \"0x1\" \"0xaB\""
        );
        assert_eq!(blobs, ["0xAB"]);
        let c = compact("<\"0x00fF\">, <\"0X12\">, \"0x\"".as_bytes()).unwrap();
        assert_eq!(c.text, "<\"0x00fF\">, <\0>, \0");
        assert_eq!(c.blobs[0].take(), [0x12]);
        assert_eq!(c.blobs[0].len, 6);
        assert_eq!(c.blobs[1].text(), "0x");
    }

    #[test]
    fn unfinished_strings_are_kept_as_written() {
        for src in [
            "x \"0x12",
            "x \"0x123",
            "x \"0",
            "x \"",
            "x \"0x12\n\"0x34\"",
            "\"0x\\\"\"",
        ] {
            let c = compact(src.as_bytes()).unwrap();
            let expect = src.replace("\"0x34\"", "\0");
            assert_eq!(c.text, expect, "{src:?}");
        }
    }

    #[test]
    fn line_index_agrees_with_str_lines() {
        for src in [
            "",
            "a",
            "a\n",
            "a\n\nb",
            "a\r\nb\r\n",
            "a\r",
            "\n\n",
            "x\"0xAB\"\ny",
        ] {
            let idx = compact(src.as_bytes()).unwrap().lines;
            assert_eq!(idx, LineIndex::of_text(src));
            let want: Vec<&str> = src.lines().collect();
            assert_eq!(idx.line_count(), want.len(), "{src:?}");
            let mut cur = io::Cursor::new(src.as_bytes());
            for (i, w) in want.iter().enumerate() {
                let got = idx.read_line(&mut cur, i as u32 + 1).unwrap();
                assert_eq!(got.as_deref(), Some(*w), "{src:?} line {}", i + 1);
            }
            let past = want.len() as u32 + 1;
            assert_eq!(idx.read_line(&mut cur, past).unwrap(), None);
            assert_eq!(idx.read_line(&mut cur, 0).unwrap(), None);
        }
    }

    #[test]
    fn invalid_utf8_is_an_io_error() {
        let e = compact(&b"a \xff b"[..]).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("stream did not contain valid UTF-8"));
    }
}
