//! The `.lbir` text parser (see [`crate::printer`] for the format).
//!
//! A hand-written lexer feeds a recursive-descent parser. Grammar:
//!
//! ```text
//! file      := ('module' '{' func* '}' | func*) resources?
//! func      := 'func' @name '(' (%p ':' type),* ')' ('->' outputs)? '{' op* 'return' %v,* '}'
//! outputs   := type | '(' ((name ':')? type),* ')'        // unnamed: output0, output1, ...
//! op        := (%r,+ '=')? name %a,* ('{' (key '=' attr),* '}')? ':' '(' type,* ')' '->' (type | '(' type,* ')')
//!            | %r '=' 'constant' payload ':' type
//!              (each optionally followed by: 'note' '{' (key '=' "string"),* '}'
//!               with the keys node, op_type, what, why; see OpNote)
//! payload   := 'dense' '<' (value | list | "0xHEX") '>' | 'dense_resource' '<' name '>'
//! type      := 'tensor' '<' (dim 'x')* elem (',' '#layout' '<' layout,* '>')? '>'
//! layout    := 'msb' | 'lsb' | 'tile' '=' dim('x'dim)* | 'interleave' '=' int | 'bitplanes'
//! resources := '{-#' 'resources' ':' '{' (name ':' "0xHEX"),* '}' '#-}'
//! ```
//!
//! `//` starts a comment that runs to the end of the line. Tensor shapes
//! (`4x8xi4`) and tile sizes are read by dedicated scanners, since `8xi4`
//! is not a sequence of ordinary tokens.
//!
//! The parser checks what the text alone decides: names are defined once
//! and before use, operand annotations match the operands' types, counts
//! agree, payloads fit their types, resources exist. Op typing rules are
//! the verifier's job. Parsing stops at the first error; every error has a
//! 1-based `line:col` position and the parser never panics.
//!
//! [`parse_module`] parses a text in memory; [`parse_module_reader`] and
//! [`parse_module_file`] read it as a stream, decoding each `"0x..."`
//! string into its bytes as it is read (see [`crate::source`]), so that a
//! model's hex text is never held: they give the same module or the same
//! error, at the same position, as [`parse_module`] on the whole text.
//!
//! Limits: value and function names are `[A-Za-z0-9_.$-]+`, output and
//! resource names are identifiers (`[A-Za-z_][A-Za-z0-9_.$]*`); a splat constant may have at most [`SPLAT_LIMIT`] elements;
//! decimal values for narrow float types are read as `f64` first and then
//! rounded (nearest-even) to the type, which is exact for every value the
//! printer writes.

use crate::diag::{Diagnostic, Span};
use crate::function::{Function, Module, Op, OpNote, Value};
use crate::ops::{Attr, ConstData, OpKind, OP_NAMES};
use crate::source::{compact, HexBlob, LineIndex, Source};
use crate::tensor::Tensor;
use crate::types::{Layout, PackOrder, TensorType};
use lowbit_numerics::{ElemType, FloatFormat, FloatKind, Overflow, Rounding};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The largest element count a single-value (splat) constant may expand to.
pub const SPLAT_LIMIT: u64 = 1 << 22;

/// Value lists nest at most this deep (one level per dimension).
const MAX_LIST_DEPTH: usize = 64;

/// Parses a module, reporting the first error with its position.
pub fn parse_module(src: &str) -> Result<Module, Vec<Diagnostic>> {
    Parser::new(src, &[]).module().map_err(|d| vec![d])
}

/// What [`parse_module_reader`] read: the module or its first error, and
/// where the text's lines start (to show a line of it in a diagnostic).
#[derive(Debug)]
pub struct ReadModule {
    /// The module, or the first error (the same as [`parse_module`] gives
    /// for the whole text).
    pub module: Result<Module, Vec<Diagnostic>>,
    /// The text's line starts.
    pub lines: LineIndex,
}

/// Parses a module from a stream without holding its text: hex constants
/// are decoded into their byte buffers as they are read and their text
/// dropped (see [`crate::source`]). The result, errors included, is the
/// same as [`parse_module`] on the whole text. Fails only when reading
/// fails or the text is not UTF-8.
pub fn parse_module_reader(reader: impl Read) -> std::io::Result<ReadModule> {
    let c = compact(reader)?;
    let module = Parser::new(&c.text, &c.blobs).module().map_err(|d| vec![d]);
    Ok(ReadModule {
        module,
        lines: c.lines,
    })
}

/// [`parse_module_reader`] on a file; the returned [`Source`] reads the
/// lines of the file again for diagnostics (see [`Source::render`]). What
/// is not a regular file (a pipe such as `<(...)`, a device) cannot be
/// read again, so its text is kept ([`Source::Text`]) and parsed with
/// [`parse_module`].
pub fn parse_module_file(
    path: &Path,
) -> std::io::Result<(Result<Module, Vec<Diagnostic>>, Source)> {
    let mut file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        return Ok((parse_module(&text), Source::Text(text)));
    }
    let r = parse_module_reader(file)?;
    let source = Source::File {
        path: path.to_path_buf(),
        lines: r.lines,
    };
    Ok((r.module, source))
}

type PResult<T> = Result<T, Diagnostic>;

/// A position in the source: byte offset plus the 1-based line and column
/// (columns count characters, not bytes).
#[derive(Clone, Copy, Debug)]
struct Pos {
    off: usize,
    line: u32,
    col: u32,
}

impl Pos {
    fn span(self) -> Span {
        Span {
            line: self.line,
            col: self.col,
        }
    }
}

fn err(pos: Pos, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(Some(pos.span()), msg)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    /// A bare word: keyword, op name, attribute name or value, output name.
    Ident(&'a str),
    /// `%name`, without the `%`.
    Value(&'a str),
    /// `@name`, without the `@`.
    Symbol(&'a str),
    /// `#name`, without the `#`.
    Hash(&'a str),
    /// An integer, with its sign.
    Int(&'a str),
    /// A number with a fraction or exponent, or `-inf`.
    Float(&'a str),
    /// A string, without the quotes.
    Str(&'a str),
    /// A `"0x..."` string decoded while the text was read (see
    /// [`crate::source`]); it stands for the `Str` of its text.
    HexStr(&'a HexBlob),
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    tok: Tok<'a>,
    pos: Pos,
}

fn describe(t: Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Int(s) | Tok::Float(s) => format!("'{s}'"),
        Tok::Value(s) => format!("'%{s}'"),
        Tok::Symbol(s) => format!("'@{s}'"),
        Tok::Hash(s) => format!("'#{s}'"),
        Tok::Str(s) => {
            let short: String = s.chars().take(24).collect();
            let more = if short.len() < s.len() { "..." } else { "" };
            format!("string \"{short}{more}\"")
        }
        Tok::HexStr(b) => {
            let (short, more) = b.preview(24);
            let more = if more { "..." } else { "" };
            format!("string \"{short}{more}\"")
        }
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "end of input".into(),
    }
}

/// The parser's one shape of syntax error: `expected WHAT, found TOKEN`,
/// pointing at the token that was found instead. Every "expected ..."
/// message of the parser goes through here so that they all read alike
/// (lit tests and the CLI contract pin their exact text).
fn expected<T>(t: Token, what: impl std::fmt::Display) -> PResult<T> {
    Err(err(
        t.pos,
        format!("expected {what}, found {}", describe(t.tok)),
    ))
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$'
}

struct Lexer<'a> {
    src: &'a str,
    /// Decoded hex strings, each standing in `src` as a NUL byte.
    blobs: &'a [HexBlob],
    pos: Pos,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, blobs: &'a [HexBlob]) -> Lexer<'a> {
        Lexer {
            src,
            blobs,
            pos: Pos {
                off: 0,
                line: 1,
                col: 1,
            },
        }
    }

    fn byte(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos.off + ahead).copied()
    }

    fn bump(&mut self) {
        if let Some(b) = self.byte(0) {
            self.pos.off += 1;
            if b == b'\n' {
                self.pos.line += 1;
                self.pos.col = 1;
            } else if b & 0xC0 != 0x80 {
                // count characters, not UTF-8 continuation bytes
                self.pos.col += 1;
            }
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos.off;
        while self.byte(0).is_some_and(&f) {
            self.bump();
        }
        &self.src[start..self.pos.off]
    }

    /// A value or function name: identifier characters and `-` (as in
    /// MLIR, and common in ONNX names), but never the start of `->`.
    fn name_chars(&mut self) -> &'a str {
        let start = self.pos.off;
        while let Some(b) = self.byte(0) {
            if !(is_ident_continue(b) || (b == b'-' && self.byte(1) != Some(b'>'))) {
                break;
            }
            self.bump();
        }
        &self.src[start..self.pos.off]
    }

    /// A `"..."` string at the cursor, quotes and escapes included (see
    /// [`unescape`]); it ends at the line.
    fn string_body(&mut self, pos: Pos) -> PResult<&'a str> {
        let start = self.pos.off;
        self.bump();
        loop {
            match self.byte(0) {
                Some(b'"') => break,
                Some(b'\\') if matches!(self.byte(1), Some(b) if b != b'\n') => {
                    self.bump();
                    self.bump();
                }
                Some(b) if b != b'\n' => self.bump(),
                _ => return Err(err(pos, "unterminated string")),
            }
        }
        self.bump();
        Ok(&self.src[start..self.pos.off])
    }

    /// The decoded hex string whose placeholder is at the cursor.
    fn blob_here(&self) -> Option<&'a HexBlob> {
        if self.byte(0) != Some(0) {
            return None;
        }
        let blobs = self.blobs;
        let i = blobs.binary_search_by_key(&self.pos.off, |b| b.at).ok()?;
        blobs.get(i)
    }

    /// The character at the cursor, described for an error message.
    fn here(&self) -> String {
        if self.blob_here().is_some() {
            return "'\"'".into();
        }
        match self.src[self.pos.off..].chars().next() {
            Some(c) => format!("'{c}'"),
            None => "end of input".into(),
        }
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.byte(0) {
                Some(b) if b.is_ascii_whitespace() => self.bump(),
                Some(b'/') if self.byte(1) == Some(b'/') => {
                    self.take_while(|b| b != b'\n');
                }
                _ => return,
            }
        }
    }

    fn next(&mut self) -> PResult<Token<'a>> {
        self.skip_trivia();
        let pos = self.pos;
        let tok = |tok| Ok(Token { tok, pos });
        let Some(b) = self.byte(0) else {
            return tok(Tok::Eof);
        };
        if let Some(blob) = self.blob_here() {
            // One byte here, the string's length in the original text.
            self.pos.off += 1;
            let len = u32::try_from(blob.len).unwrap_or(u32::MAX);
            self.pos.col = self.pos.col.saturating_add(len);
            return tok(Tok::HexStr(blob));
        }
        let punct = |s: &'static str, me: &mut Lexer<'a>| {
            for _ in 0..s.len() {
                me.bump();
            }
            Ok(Token {
                tok: Tok::Punct(s),
                pos,
            })
        };
        match b {
            b'(' => punct("(", self),
            b')' => punct(")", self),
            b'[' => punct("[", self),
            b']' => punct("]", self),
            b'<' => punct("<", self),
            b'>' => punct(">", self),
            b',' => punct(",", self),
            b':' => punct(":", self),
            b'=' => punct("=", self),
            b'}' => punct("}", self),
            b'{' if self.byte(1) == Some(b'-') && self.byte(2) == Some(b'#') => punct("{-#", self),
            b'{' => punct("{", self),
            b'#' if self.byte(1) == Some(b'-') && self.byte(2) == Some(b'}') => punct("#-}", self),
            b'#' if self.byte(1).is_some_and(is_ident_start) => {
                self.bump();
                tok(Tok::Hash(self.take_while(is_ident_continue)))
            }
            b'-' if self.byte(1) == Some(b'>') => punct("->", self),
            b'-' if self.src[pos.off + 1..].starts_with("inf")
                && !self.byte(4).is_some_and(is_ident_continue) =>
            {
                for _ in 0..4 {
                    self.bump();
                }
                tok(Tok::Float(&self.src[pos.off..self.pos.off]))
            }
            b'-' if self.byte(1).is_some_and(|b| b.is_ascii_digit()) => self.number(),
            b'0'..=b'9' => self.number(),
            b'%' if self.byte(1) == Some(b'"') => {
                self.bump();
                let start = self.pos.off;
                self.string_body(pos)?;
                tok(Tok::Value(&self.src[start..self.pos.off]))
            }
            b'%' | b'@' => {
                self.bump();
                let name = self.name_chars();
                if name.is_empty() {
                    let what = if b == b'%' { "value" } else { "function" };
                    return Err(err(
                        self.pos,
                        format!(
                            "expected a {what} name after '{}', found {}",
                            b as char,
                            self.here()
                        ),
                    ));
                }
                tok(if b == b'%' {
                    Tok::Value(name)
                } else {
                    Tok::Symbol(name)
                })
            }
            b'"' => {
                let body = self.string_body(pos)?;
                tok(Tok::Str(&body[1..body.len() - 1]))
            }
            _ if is_ident_start(b) => tok(Tok::Ident(self.take_while(is_ident_continue))),
            _ => Err(err(pos, format!("unexpected character {}", self.here()))),
        }
    }

    /// `-?digits(.digits*)?([eE][+-]?digits)?`, not directly followed by a
    /// letter (`4x8` outside a type is a malformed token, not `4` then `x8`).
    fn number(&mut self) -> PResult<Token<'a>> {
        let pos = self.pos;
        if self.byte(0) == Some(b'-') {
            self.bump();
        }
        self.take_while(|b| b.is_ascii_digit());
        let mut float = false;
        if self.byte(0) == Some(b'.') {
            float = true;
            self.bump();
            self.take_while(|b| b.is_ascii_digit());
        }
        if matches!(self.byte(0), Some(b'e' | b'E')) {
            let sign = matches!(self.byte(1), Some(b'+' | b'-')) as usize;
            if self.byte(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                float = true;
                for _ in 0..=sign {
                    self.bump();
                }
                self.take_while(|b| b.is_ascii_digit());
            }
        }
        if self.byte(0).is_some_and(is_ident_continue) {
            self.take_while(is_ident_continue);
            let text = &self.src[pos.off..self.pos.off];
            return Err(err(pos, format!("malformed number '{text}'")));
        }
        let text = &self.src[pos.off..self.pos.off];
        Ok(Token {
            tok: if float {
                Tok::Float(text)
            } else {
                Tok::Int(text)
            },
            pos,
        })
    }

    fn dim(&mut self, what: &str) -> PResult<u64> {
        let pos = self.pos;
        let digits = self.take_while(|b| b.is_ascii_digit());
        digits
            .parse()
            .map_err(|_| err(pos, format!("{what} {digits} is too large")))
    }

    /// The inside of `tensor<...>` up to the element type: `(dim 'x')* elem`.
    fn shape_and_elem(&mut self) -> PResult<(Vec<u64>, &'a str, Pos)> {
        self.skip_trivia();
        let mut dims = Vec::new();
        while self.byte(0).is_some_and(|b| b.is_ascii_digit()) {
            let d = self.dim("dimension")?;
            if self.byte(0) != Some(b'x') {
                return Err(err(
                    self.pos,
                    format!(
                        "expected 'x' after dimension {d} in tensor type, found {}",
                        self.here()
                    ),
                ));
            }
            self.bump();
            dims.push(d);
        }
        let pos = self.pos;
        // `-` appears in custom float biases such as fE3M4B-2.
        let elem = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if elem.is_empty() {
            return Err(err(
                pos,
                format!(
                    "expected a dimension or an element type in tensor type, found {}",
                    self.here()
                ),
            ));
        }
        Ok((dims, elem, pos))
    }

    /// Tile sizes `AxBx...`.
    fn tile_sizes(&mut self) -> PResult<Vec<u64>> {
        self.skip_trivia();
        let mut dims = Vec::new();
        loop {
            if !self.byte(0).is_some_and(|b| b.is_ascii_digit()) {
                return Err(err(
                    self.pos,
                    format!("expected a tile size, found {}", self.here()),
                ));
            }
            dims.push(self.dim("tile size")?);
            if self.byte(0) != Some(b'x') {
                return Ok(dims);
            }
            self.bump();
        }
    }
}

/// A constant's payload before its type is known.
enum Payload<'a> {
    Hex(Vec<u8>, Pos),
    Values(Lit<'a>),
    Resource(&'a str, Pos),
}

/// A value list as written.
enum Lit<'a> {
    /// The text of a number, `inf`, `-inf` or `nan`; whether it is an integer.
    Scalar(&'a str, bool, Pos),
    List(Vec<Lit<'a>>, Pos),
}

/// A resource's bytes, shared by the constants that name it (kept as the
/// `Vec` they were decoded into: making an `Arc<[u8]>` of it would copy).
#[derive(Clone)]
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A `dense_resource<name>` waiting for the resource section.
struct PendingResource<'a> {
    func: usize,
    op: Op,
    name: &'a str,
    pos: Pos,
    ty: TensorType,
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token<'a>>,
    pending: Vec<PendingResource<'a>>,
}

/// Values by name (quoted names unescaped, so `%"x"` and `%x` agree).
type Scope<'a> = HashMap<String, Value>;

impl<'a> Parser<'a> {
    fn new(src: &'a str, blobs: &'a [HexBlob]) -> Parser<'a> {
        Parser {
            lex: Lexer::new(src, blobs),
            peeked: None,
            pending: Vec::new(),
        }
    }

    fn peek(&mut self) -> PResult<Token<'a>> {
        if let Some(t) = self.peeked {
            return Ok(t);
        }
        let t = self.lex.next()?;
        self.peeked = Some(t);
        Ok(t)
    }

    fn next(&mut self) -> PResult<Token<'a>> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next(),
        }
    }

    /// Puts a peeked token back so that a dedicated scanner can read the
    /// text from its start.
    fn unpeek(&mut self) {
        if let Some(t) = self.peeked.take() {
            self.lex.pos = t.pos;
        }
    }

    fn eat(&mut self, p: &'static str) -> PResult<bool> {
        if self.peek()?.tok == Tok::Punct(p) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn expect(&mut self, p: &'static str, context: &str) -> PResult<Token<'a>> {
        let t = self.next()?;
        if t.tok == Tok::Punct(p) {
            return Ok(t);
        }
        expected(t, format!("'{p}' {context}"))
    }

    /// Reads a bare word (a name or keyword), or fails with
    /// `expected WHAT, found ...`; returns the word and its token.
    fn ident(&mut self, what: &str) -> PResult<(&'a str, Token<'a>)> {
        let t = self.next()?;
        match t.tok {
            Tok::Ident(word) => Ok((word, t)),
            _ => expected(t, what),
        }
    }

    fn module(&mut self) -> PResult<Module> {
        let mut m = Module::default();
        let wrapped = self.peek()?.tok == Tok::Ident("module");
        if wrapped {
            self.next()?;
            self.expect("{", "after 'module'")?;
        }
        loop {
            let t = self.peek()?;
            match t.tok {
                Tok::Ident("func") => {
                    let f = self.function(m.functions.len())?;
                    if m.function(&f.name).is_some() {
                        return Err(err(t.pos, format!("redefinition of function @{}", f.name)));
                    }
                    m.functions.push(f);
                }
                Tok::Punct("}") if wrapped => {
                    self.next()?;
                    break;
                }
                _ if wrapped => return expected(t, "'func' or '}' in module"),
                _ => break,
            }
        }
        let resources = if self.peek()?.tok == Tok::Punct("{-#") {
            self.resources()?
        } else {
            HashMap::new()
        };
        let t = self.peek()?;
        if t.tok != Tok::Eof {
            let what = if wrapped {
                "a resource section or end of input"
            } else {
                "'module', 'func', a resource section or end of input"
            };
            return expected(t, what);
        }
        self.resolve_resources(&mut m, &resources)?;
        Ok(m)
    }

    fn resources(&mut self) -> PResult<HashMap<&'a str, SharedBytes>> {
        self.next()?;
        let t = self.next()?;
        if t.tok != Tok::Ident("resources") {
            return expected(t, "'resources' after '{-#'");
        }
        self.expect(":", "after 'resources'")?;
        self.expect("{", "to open the resource list")?;
        let mut out: HashMap<&'a str, SharedBytes> = HashMap::new();
        while !self.eat("}")? {
            let (name, k) = self.ident("a resource name")?;
            self.expect(":", &format!("after resource name '{name}'"))?;
            let s = self.next()?;
            if s.tok == Tok::Ident("__elided__") {
                return Err(err(
                    s.pos,
                    format!(
                        "resource '{name}' was elided when this IR was printed (--elide-resources); its bytes are not in the text"
                    ),
                ));
            }
            let bytes = match s.tok {
                Tok::Str(body) => decode_hex(body, s.pos)?,
                Tok::HexStr(blob) => blob.take(),
                _ => {
                    return expected(
                        s,
                        format!("a hex string like \"0x0A1B\" for resource '{name}'"),
                    )
                }
            };
            if out.insert(name, SharedBytes(Arc::new(bytes))).is_some() {
                return Err(err(k.pos, format!("duplicate resource '{name}'")));
            }
            if !self.eat(",")? {
                self.expect("}", "to close the resource list")?;
                break;
            }
        }
        self.expect("#-}", "to close the resource section")?;
        Ok(out)
    }

    fn resolve_resources(
        &mut self,
        m: &mut Module,
        resources: &HashMap<&'a str, SharedBytes>,
    ) -> PResult<()> {
        for p in self.pending.drain(..) {
            let Some(bytes) = resources.get(p.name) else {
                return Err(err(p.pos, format!("unknown resource '{}'", p.name)));
            };
            let need = p.ty.byte_size();
            let bytes_len = bytes.as_ref().len();
            if bytes_len as u64 != need {
                return Err(err(
                    p.pos,
                    format!(
                        "resource '{}' has {} bytes but {} needs {need}",
                        p.name, bytes_len, p.ty
                    ),
                ));
            }
            if let Some(f) = m.functions.get_mut(p.func) {
                f.op_mut(p.op).kind = OpKind::Constant(ConstData::from_shared(bytes.clone()));
            }
        }
        Ok(())
    }

    fn function(&mut self, index: usize) -> PResult<Function> {
        let kw = self.next()?;
        let t = self.next()?;
        let Tok::Symbol(name) = t.tok else {
            return expected(t, "a function name like '@main' after 'func'");
        };
        let mut f = Function::new(name);
        f.span = Some(kw.pos.span());
        let mut scope = Scope::new();
        self.expect("(", "after the function name")?;
        if !self.eat(")")? {
            loop {
                let t = self.next()?;
                let Tok::Value(pname) = t.tok else {
                    return expected(t, "a parameter like '%x: tensor<4xf32>'");
                };
                self.expect(":", &format!("after parameter '%{pname}'"))?;
                let ty = self.tensor_type()?;
                let key = value_name(pname, t.pos)?;
                if scope.contains_key(&key) {
                    return Err(err(t.pos, format!("redefinition of %{pname}")));
                }
                let v = f.add_param(key.clone(), ty);
                scope.insert(key, v);
                if !self.eat(",")? {
                    self.expect(")", "after the parameters")?;
                    break;
                }
            }
        }
        let outputs = if self.eat("->")? {
            self.output_signature()?
        } else {
            Vec::new()
        };
        self.expect("{", "to open the function body")?;
        loop {
            let t = self.peek()?;
            match t.tok {
                Tok::Ident("return") => break,
                Tok::Value(_) | Tok::Ident(_) => self.op(&mut f, &mut scope, index)?,
                _ => return expected(t, "an op or 'return'"),
            }
        }
        let ret = self.next()?;
        f.return_span = Some(ret.pos.span());
        let mut values = Vec::new();
        if matches!(self.peek()?.tok, Tok::Value(_)) {
            loop {
                let t = self.next()?;
                values.push((t, lookup(&scope, t)?));
                if !self.eat(",")? {
                    break;
                }
            }
        }
        if values.len() != outputs.len() {
            return Err(err(
                ret.pos,
                format!(
                    "return has {} values but @{name} declares {} outputs",
                    values.len(),
                    outputs.len()
                ),
            ));
        }
        for ((oname, oty), (t, v)) in outputs.into_iter().zip(values) {
            let ty = f.ty(v);
            if *ty != oty {
                return Err(err(
                    t.pos,
                    format!(
                        "type mismatch: {} has type {ty} but @{name} declares output '{oname}' as {oty}",
                        describe_value(t.tok)
                    ),
                ));
            }
            f.outputs.push((oname, v));
        }
        self.expect("}", "after the return values")?;
        Ok(f)
    }

    fn output_signature(&mut self) -> PResult<Vec<(String, TensorType)>> {
        if !self.eat("(")? {
            return Ok(vec![("output0".into(), self.tensor_type()?)]);
        }
        let mut outs: Vec<(String, TensorType)> = Vec::new();
        if self.eat(")")? {
            return Ok(outs);
        }
        loop {
            let t = self.next()?;
            let (name, ty) = match t.tok {
                Tok::Str(quoted) => {
                    self.expect(":", "after a quoted output name")?;
                    let name = unescape(quoted).map_err(|m| err(t.pos, m))?;
                    (name, self.tensor_type()?)
                }
                // Hex digits have no escapes: the text is the name.
                Tok::HexStr(blob) => {
                    self.expect(":", "after a quoted output name")?;
                    (blob.text(), self.tensor_type()?)
                }
                // `tensor: tensor<..>` names an output "tensor"; `tensor<..>` is unnamed.
                Tok::Ident(word) => {
                    if self.eat(":")? {
                        (word.to_string(), self.tensor_type()?)
                    } else if word == "tensor" {
                        (format!("output{}", outs.len()), self.tensor_type_body()?)
                    } else {
                        let n = self.peek()?;
                        return expected(n, format!("':' after output name '{word}'"));
                    }
                }
                _ => return expected(t, "an output name or type"),
            };
            if outs.iter().any(|(n, _)| *n == name) {
                return Err(err(t.pos, format!("duplicate output name '{name}'")));
            }
            outs.push((name, ty));
            if !self.eat(",")? {
                self.expect(")", "after the output types")?;
                return Ok(outs);
            }
        }
    }

    fn tensor_type(&mut self) -> PResult<TensorType> {
        let t = self.next()?;
        if t.tok != Tok::Ident("tensor") {
            return expected(t, "a tensor type like 'tensor<4xf32>'");
        }
        self.tensor_type_body()
    }

    /// The rest of a tensor type after the `tensor` keyword.
    fn tensor_type_body(&mut self) -> PResult<TensorType> {
        let open = self.expect("<", "after 'tensor'")?;
        self.unpeek();
        let (shape, elem_text, elem_pos) = self.lex.shape_and_elem()?;
        let elem: ElemType = elem_text
            .parse()
            .map_err(|e: lowbit_numerics::FormatError| err(elem_pos, e.0))?;
        let mut layout = Layout::default();
        if self.eat(",")? {
            let t = self.next()?;
            if t.tok != Tok::Hash("layout") {
                return expected(t, "'#layout<...>' after ',' in tensor type");
            }
            layout = self.layout()?;
        }
        self.expect(">", "to close the tensor type")?;
        let ty = TensorType {
            shape,
            elem,
            layout,
        };
        // Everything downstream (byte sizes, element counts) may then use
        // plain u64 arithmetic: bit-plane padding at most doubles the size.
        let fits = ty
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(elem.bits() as u64 * 2));
        if fits.is_none() {
            return Err(err(open.pos, format!("tensor type {ty} is too large")));
        }
        Ok(ty)
    }

    /// `<...>` after `#layout`.
    fn layout(&mut self) -> PResult<Layout> {
        self.expect("<", "after '#layout'")?;
        let mut l = Layout::default();
        let mut seen: Vec<&str> = Vec::new();
        if self.eat(">")? {
            return Ok(l);
        }
        loop {
            let (key, t) =
                self.ident("a layout attribute (msb, lsb, tile=AxB, interleave=N or bitplanes)")?;
            let slot = if key == "lsb" { "msb" } else { key };
            if seen.contains(&slot) {
                return Err(err(t.pos, format!("duplicate layout attribute '{key}'")));
            }
            seen.push(slot);
            match key {
                "msb" => l.pack = PackOrder::MsbFirst,
                "lsb" => l.pack = PackOrder::LsbFirst,
                "bitplanes" => l.bit_planes = true,
                "tile" => {
                    self.expect("=", "after 'tile'")?;
                    self.unpeek();
                    l.tile = self.lex.tile_sizes()?;
                }
                "interleave" => {
                    self.expect("=", "after 'interleave'")?;
                    let v = self.next()?;
                    let c = match v.tok {
                        Tok::Int(s) => s.parse::<u64>().ok(),
                        _ => None,
                    };
                    let Some(c) = c else {
                        return expected(v, "a non-negative integer after 'interleave='");
                    };
                    l.interleave = Some(c);
                }
                _ => {
                    return Err(err(
                        t.pos,
                        format!(
                            "unknown layout attribute '{key}' (expected msb, lsb, tile=AxB, interleave=N or bitplanes)"
                        ),
                    ))
                }
            }
            if !self.eat(",")? {
                self.expect(">", "to close '#layout<'")?;
                return Ok(l);
            }
        }
    }

    fn type_list(&mut self) -> PResult<Vec<TensorType>> {
        let mut tys = Vec::new();
        if self.eat(")")? {
            return Ok(tys);
        }
        loop {
            tys.push(self.tensor_type()?);
            if !self.eat(",")? {
                self.expect(")", "after the types")?;
                return Ok(tys);
            }
        }
    }

    fn op(&mut self, f: &mut Function, scope: &mut Scope<'a>, func: usize) -> PResult<()> {
        let first = self.peek()?;
        let mut results = Vec::new();
        if let Tok::Value(_) = first.tok {
            loop {
                let t = self.next()?;
                if !matches!(t.tok, Tok::Value(_)) {
                    return expected(t, "a result name like '%0'");
                }
                results.push(t);
                if !self.eat(",")? {
                    break;
                }
            }
            self.expect("=", "after the op's results")?;
        }
        let (name, _) = self.ident("an op name")?;
        if !OP_NAMES.contains(&name) {
            return Err(err(first.pos, format!("unknown op '{name}'")));
        }
        if name == "constant" {
            self.constant(f, scope, &results, first, func)?;
            if let Some(&op) = f.ops().last() {
                self.op_note(f, op)?;
            }
            return Ok(());
        }
        let mut operands = Vec::new();
        let mut context = "after the op name";
        if matches!(self.peek()?.tok, Tok::Value(_)) {
            loop {
                let t = self.next()?;
                operands.push((t, lookup(scope, t)?));
                if !self.eat(",")? {
                    break;
                }
                let n = self.peek()?;
                if !matches!(n.tok, Tok::Value(_)) {
                    return expected(n, "an operand after ','");
                }
            }
            context = "after operands";
        }
        let mut attrs = Vec::new();
        if self.eat("{")? {
            attrs = self.attr_dict()?;
            context = "after the attributes";
        }
        self.expect(":", context)?;
        let open = self.expect("(", "to open the operand types")?;
        let in_tys = self.type_list()?;
        self.expect("->", "after the operand types")?;
        let out_tys = if self.eat("(")? {
            self.type_list()?
        } else {
            vec![self.tensor_type()?]
        };
        if in_tys.len() != operands.len() {
            return Err(err(
                open.pos,
                format!(
                    "'{name}' has {} operands but its type lists {} operand types",
                    operands.len(),
                    in_tys.len()
                ),
            ));
        }
        for ((t, v), ty) in operands.iter().zip(&in_tys) {
            let actual = f.ty(*v);
            if actual != ty {
                return Err(err(
                    t.pos,
                    format!(
                        "type mismatch: {} has type {actual} but the op says {ty}",
                        describe_value(t.tok)
                    ),
                ));
            }
        }
        if out_tys.len() != results.len() {
            return Err(err(
                first.pos,
                format!(
                    "'{name}' defines {} results but its type lists {} result types",
                    results.len(),
                    out_tys.len()
                ),
            ));
        }
        let kind = OpKind::from_parts(
            name,
            attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )
        .map_err(|e| err(first.pos, e))?;
        check_fresh(scope, &results)?;
        let op = f.append_op(kind, operands.iter().map(|o| o.1).collect(), out_tys);
        f.op_spans.insert(op, first.pos.span());
        define(f, scope, &results, op);
        self.op_note(f, op)
    }

    /// An optional `note {node = "..", op_type = "..", what = "..", why =
    /// ".."}` after an op (see [`OpNote`]): all four keys, in any order.
    fn op_note(&mut self, f: &mut Function, op: Op) -> PResult<()> {
        let t = self.peek()?;
        if t.tok != Tok::Ident("note") {
            return Ok(());
        }
        self.next()?;
        self.expect("{", "after 'note'")?;
        let keys = ["node", "op_type", "what", "why"];
        let mut vals: [Option<String>; 4] = Default::default();
        loop {
            let k = self.next()?;
            let slot = match k.tok {
                Tok::Ident(key) => keys.iter().position(|&n| n == key),
                _ => None,
            };
            let Some(i) = slot else {
                return expected(k, "a note key (node, op_type, what or why)");
            };
            if vals[i].is_some() {
                return Err(err(k.pos, format!("duplicate note key '{}'", keys[i])));
            }
            self.expect("=", &format!("after note key '{}'", keys[i]))?;
            let v = self.next()?;
            vals[i] = Some(match v.tok {
                Tok::Str(body) => unescape(body).map_err(|m| err(v.pos, m))?,
                Tok::HexStr(blob) => blob.text(),
                _ => return expected(v, format!("a string for note key '{}'", keys[i])),
            });
            if !self.eat(",")? {
                self.expect("}", "to close the note")?;
                break;
            }
        }
        let [Some(node), Some(op_type), Some(what), Some(why)] = vals else {
            let missing: Vec<&str> = keys
                .iter()
                .zip(&vals)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .collect();
            return Err(err(t.pos, format!("the note lacks {}", missing.join(", "))));
        };
        f.op_notes.insert(
            op,
            OpNote {
                node,
                op_type,
                what,
                why,
            },
        );
        Ok(())
    }

    /// `{key = value, ...}` after its `{`.
    fn attr_dict(&mut self) -> PResult<Vec<(&'a str, Attr)>> {
        let mut out: Vec<(&'a str, Attr)> = Vec::new();
        if self.eat("}")? {
            return Ok(out);
        }
        loop {
            let (key, k) = self.ident("an attribute name")?;
            if out.iter().any(|(n, _)| *n == key) {
                return Err(err(k.pos, format!("duplicate attribute '{key}'")));
            }
            self.expect("=", &format!("after attribute name '{key}'"))?;
            out.push((key, self.attr_value()?));
            if !self.eat(",")? {
                self.expect("}", "to close the attribute list")?;
                return Ok(out);
            }
        }
    }

    fn attr_value(&mut self) -> PResult<Attr> {
        let t = self.next()?;
        Ok(match t.tok {
            Tok::Int(s) => Attr::Int(parse_i64(s, t.pos)?),
            Tok::Float(s) | Tok::Ident(s @ ("inf" | "nan" | "NaN")) => {
                Attr::Float(parse_f64(s, t.pos)?)
            }
            Tok::Ident("true") => Attr::Bool(true),
            Tok::Ident("false") => Attr::Bool(false),
            Tok::Ident(s) => Attr::Ident(s.to_string()),
            Tok::Punct("[") => {
                let mut v = Vec::new();
                if !self.eat("]")? {
                    loop {
                        let t = self.next()?;
                        let Tok::Int(s) = t.tok else {
                            return expected(t, "an integer in the attribute list");
                        };
                        v.push(parse_i64(s, t.pos)?);
                        if !self.eat(",")? {
                            self.expect("]", "to close the attribute list")?;
                            break;
                        }
                    }
                }
                Attr::Ints(v)
            }
            _ => {
                return expected(
                    t,
                    "an attribute value (number, true, false, name or [integers])",
                )
            }
        })
    }

    fn constant(
        &mut self,
        f: &mut Function,
        scope: &mut Scope<'a>,
        results: &[Token<'a>],
        first: Token<'a>,
        func: usize,
    ) -> PResult<()> {
        if results.len() != 1 {
            return Err(err(
                first.pos,
                format!(
                    "'constant' defines exactly one result, found {}",
                    results.len()
                ),
            ));
        }
        let kw = self.next()?;
        let payload = match kw.tok {
            Tok::Ident("dense") => {
                self.expect("<", "after 'dense'")?;
                let t = self.peek()?;
                let p = match t.tok {
                    Tok::Str(s) => {
                        self.next()?;
                        Payload::Hex(decode_hex(s, t.pos)?, t.pos)
                    }
                    // Decoded as it was read: its bytes move here.
                    Tok::HexStr(blob) => {
                        self.next()?;
                        Payload::Hex(blob.take(), t.pos)
                    }
                    _ => Payload::Values(self.literal(0)?),
                };
                self.expect(">", "to close 'dense<'")?;
                p
            }
            Tok::Ident("dense_resource") => {
                self.expect("<", "after 'dense_resource'")?;
                let (name, t) = self.ident("a resource name")?;
                self.expect(">", "to close 'dense_resource<'")?;
                Payload::Resource(name, t.pos)
            }
            _ => return expected(kw, "'dense<...>' or 'dense_resource<...>' after 'constant'"),
        };
        self.expect(":", "after the constant's payload")?;
        let ty_pos = self.peek()?.pos;
        let ty = self.tensor_type()?;
        // The printer and interpreter unpack constants through the layout,
        // so a layout that cannot hold the type is rejected here.
        if let Err(e) = ty.layout.check_fits(ty.elem, &ty.shape) {
            return Err(err(ty_pos, format!("constant of type {ty}: {e}")));
        }
        // The hex bytes move into the constant (no copy: for a large model
        // they are most of its memory).
        let (bytes, resource) = match payload {
            Payload::Hex(bytes, pos) => {
                let need = ty.byte_size();
                if bytes.len() as u64 != need {
                    return Err(err(
                        pos,
                        format!(
                            "hex payload has {} bytes but {ty} needs {need}",
                            bytes.len()
                        ),
                    ));
                }
                (bytes, None)
            }
            Payload::Values(lit) => (encode_values(&lit, &ty)?, None),
            Payload::Resource(name, pos) => (Vec::new(), Some((name, pos))),
        };
        check_fresh(scope, results)?;
        let op = f.append_op(
            OpKind::Constant(ConstData::new(bytes)),
            Vec::new(),
            vec![ty.clone()],
        );
        f.op_spans.insert(op, first.pos.span());
        define(f, scope, results, op);
        if let Some((name, pos)) = resource {
            self.pending.push(PendingResource {
                func,
                op,
                name,
                pos,
                ty,
            });
        }
        Ok(())
    }

    fn literal(&mut self, depth: usize) -> PResult<Lit<'a>> {
        let t = self.next()?;
        match t.tok {
            Tok::Punct("[") => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(err(
                        t.pos,
                        format!("value list nested deeper than {MAX_LIST_DEPTH} levels"),
                    ));
                }
                let mut items = Vec::new();
                if !self.eat("]")? {
                    loop {
                        items.push(self.literal(depth + 1)?);
                        if !self.eat(",")? {
                            self.expect("]", "to close the value list")?;
                            break;
                        }
                    }
                }
                Ok(Lit::List(items, t.pos))
            }
            Tok::Int(s) => Ok(Lit::Scalar(s, true, t.pos)),
            Tok::Float(s) | Tok::Ident(s @ ("inf" | "nan")) => Ok(Lit::Scalar(s, false, t.pos)),
            _ => expected(
                t,
                "a value, a '[' list or a \"0x...\" string in 'dense<...>'",
            ),
        }
    }
}

/// The name a `%` token denotes: the text itself, or a quoted name unescaped.
fn value_name(raw: &str, pos: Pos) -> PResult<String> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(body) => unescape(body).map_err(|m| err(pos, m)),
        None => Ok(raw.to_string()),
    }
}

/// Undoes the printer's escapes: `\\`, `\"` and `\XX` (two hex digits, an
/// ASCII byte).
pub fn unescape(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(h) => {
                let l = chars.next().unwrap_or(' ');
                let code = [h, l]
                    .iter()
                    .try_fold(0u32, |a, d| d.to_digit(16).map(|d| a * 16 + d))
                    .filter(|&c| c < 0x80);
                match code.and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        return Err(format!(
                            "invalid escape '\\{h}{l}' in a quoted name (use \\\\, \\\" or \\XX with XX below 80)"
                        ))
                    }
                }
            }
            None => return Err("a quoted name ends with a lone '\\'".into()),
        }
    }
    Ok(out)
}

fn describe_value(t: Tok) -> String {
    match t {
        Tok::Value(s) => format!("%{s}"),
        other => describe(other),
    }
}

fn lookup(scope: &Scope, t: Token) -> PResult<Value> {
    let Tok::Value(name) = t.tok else {
        return expected(t, "a value like '%x'");
    };
    scope
        .get(&value_name(name, t.pos)?)
        .copied()
        .ok_or_else(|| err(t.pos, format!("use of undefined value %{name}")))
}

fn check_fresh(scope: &Scope, results: &[Token]) -> PResult<()> {
    for (i, t) in results.iter().enumerate() {
        if let Tok::Value(name) = t.tok {
            let key = value_name(name, t.pos)?;
            let repeated = results[..i]
                .iter()
                .any(|r| matches!(r.tok, Tok::Value(n) if value_name(n, r.pos).ok().as_ref() == Some(&key)));
            if repeated || scope.contains_key(&key) {
                return Err(err(t.pos, format!("redefinition of %{name}")));
            }
        }
    }
    Ok(())
}

fn define<'a>(f: &Function, scope: &mut Scope<'a>, results: &[Token<'a>], op: Op) {
    for (t, &v) in results.iter().zip(&f.op(op).results) {
        if let Tok::Value(name) = t.tok {
            if let Ok(key) = value_name(name, t.pos) {
                scope.insert(key, v);
            }
        }
    }
}

fn parse_i64(s: &str, pos: Pos) -> PResult<i64> {
    s.parse()
        .map_err(|_| err(pos, format!("integer {s} does not fit in 64 bits")))
}

fn parse_f64(s: &str, pos: Pos) -> PResult<f64> {
    s.parse()
        .map_err(|_| err(pos, format!("malformed number '{s}'")))
}

fn decode_hex(s: &str, pos: Pos) -> PResult<Vec<u8>> {
    let Some(digits) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) else {
        let found = Token {
            tok: Tok::Str(s),
            pos,
        };
        return expected(found, "a hex string like \"0x0A1B\"");
    };
    let digits = digits.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(err(
            pos,
            format!("hex payload has an odd number of digits ({})", digits.len()),
        ));
    }
    let val = |b: u8| (b as char).to_digit(16);
    digits
        .chunks(2)
        .map(|pair| match (val(pair[0]), val(pair[1])) {
            (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
            _ => {
                let bad = if val(pair[0]).is_none() {
                    pair[0]
                } else {
                    pair[1]
                };
                Err(err(
                    pos,
                    format!("invalid hex digit '{}' in payload", bad as char),
                ))
            }
        })
        .collect()
}

/// Encodes a value list (or a single value) as the physical bytes of `ty`.
fn encode_values(lit: &Lit, ty: &TensorType) -> PResult<Vec<u8>> {
    let n = ty.num_elements();
    let codes = match lit {
        Lit::Scalar(text, int, pos) => {
            if n > SPLAT_LIMIT {
                return Err(err(
                    *pos,
                    format!(
                        "a single value would fill {n} elements of {ty}, more than the {SPLAT_LIMIT} allowed; use a hex or resource payload"
                    ),
                ));
            }
            vec![encode_scalar(text, *int, *pos, ty.elem)?; n as usize]
        }
        Lit::List(items, pos) => {
            if ty.shape.is_empty() {
                return Err(err(
                    *pos,
                    format!("expected a single value for {ty}, found a list"),
                ));
            }
            let mut codes = Vec::new();
            // The printer writes `[]` for every empty tensor.
            if !(n == 0 && items.is_empty()) {
                flatten(lit, ty, 0, &mut codes)?;
            }
            codes
        }
    };
    let t =
        Tensor::new(ty.elem, ty.shape.clone(), codes).map_err(|e| Diagnostic::error(None, e))?;
    Ok(t.to_bytes(&ty.layout))
}

fn flatten(lit: &Lit, ty: &TensorType, dim: usize, out: &mut Vec<u64>) -> PResult<()> {
    let rank = ty.shape.len();
    match lit {
        Lit::Scalar(text, int, pos) if dim == rank => {
            out.push(encode_scalar(text, *int, *pos, ty.elem)?);
            Ok(())
        }
        Lit::Scalar(_, _, pos) => Err(err(
            *pos,
            format!("expected a list for dimension {dim} of {ty}, found a single value"),
        )),
        Lit::List(_, pos) if dim == rank => Err(err(
            *pos,
            format!("expected a value, found a list nested deeper than the rank of {ty}"),
        )),
        Lit::List(items, pos) => {
            let size = ty.shape[dim];
            if items.len() as u64 != size {
                return Err(err(
                    *pos,
                    format!(
                        "value list has {} entries but dimension {dim} of {ty} has size {size}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .try_for_each(|item| flatten(item, ty, dim + 1, out))
        }
    }
}

/// One written value as a code of `elem`.
fn encode_scalar(text: &str, int: bool, pos: Pos, elem: ElemType) -> PResult<u64> {
    match elem {
        ElemType::Float(f) => {
            let x = parse_f64(text, pos)?;
            check_float(f, x, text).map_err(|m| err(pos, format!("{m} {elem}")))?;
            Ok(f.encode(x, Rounding::NearestEven, false))
        }
        ElemType::Int { .. } | ElemType::Bipolar => {
            if !int {
                return Err(err(
                    pos,
                    format!("expected an integer value for {elem}, found '{text}'"),
                ));
            }
            let v: Option<i128> = text.parse().ok();
            let (lo, hi) = elem.int_range().unwrap_or((0, 0));
            match v {
                Some(0) if elem == ElemType::Bipolar => {
                    Err(err(pos, "b1 values are -1 or 1, not 0".to_string()))
                }
                Some(v) if (lo..=hi).contains(&v) => Ok(elem.encode_int(v, Overflow::Wrap)),
                _ => Err(err(
                    pos,
                    format!("value {text} is out of range for {elem} ({lo} to {hi})"),
                )),
            }
        }
    }
}

/// Why `x` (written as `text`) has no value in `f`; the caller appends the
/// type name.
fn check_float(f: FloatFormat, x: f64, text: &str) -> Result<(), String> {
    if x.is_nan() {
        return match f.has_nan() {
            true => Ok(()),
            false => Err("nan is not representable in".into()),
        };
    }
    let written_inf = text.trim_start_matches('-') == "inf";
    if x.is_infinite() && written_inf {
        return match f.has_inf() {
            true => Ok(()),
            false => Err(format!("{text} is not representable in")),
        };
    }
    if !f.is_signed() && x < 0.0 {
        return Err(format!("negative value {text} is not representable in"));
    }
    if !f.has_subnormals() && x == 0.0 {
        return Err("zero is not representable in".into());
    }
    if x.is_infinite() || overflows(f, x) {
        return Err(format!("value {text} is out of range for"));
    }
    Ok(())
}

/// Whether nearest-even rounding of finite `x` lands beyond the largest
/// finite value of `f`.
fn overflows(f: FloatFormat, x: f64) -> bool {
    if f.kind() == FloatKind::Finite {
        // Finite-only formats clamp silently; compare with the rounding
        // boundary above the largest value (half an ulp of the top binade).
        let max = f.decode(f.max_finite_code());
        if !max.is_finite() {
            return false;
        }
        let top_exp = ((max.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let half_ulp = 2f64.powi(top_exp - f.man_bits() as i32 - 1);
        return x.abs() >= max + half_ulp;
    }
    let code = f.encode(x, Rounding::NearestEven, false);
    !f.decode(code).is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::print_module;

    fn parse_ok(src: &str) -> Module {
        match parse_module(src) {
            Ok(m) => m,
            Err(d) => panic!("unexpected error: {}", d[0]),
        }
    }

    /// The first error as `line:col: message`.
    fn first_error(src: &str) -> String {
        match parse_module(src) {
            Ok(m) => panic!("expected an error, parsed:\n{}", print_module(&m)),
            Err(d) => d[0].to_string().replacen(": error", "", 1),
        }
    }

    fn assert_error(src: &str, expected: &str) {
        assert_eq!(first_error(src), expected, "source:\n{src}");
    }

    const SAMPLE: &str = "\
module {
  func @main(%x: tensor<4x8xf32>) -> (y: tensor<4x2xf32>) {
    %0 = constant dense<[[1, -2], [3, 0], [1, 1], [0, 0], [1, 2], [3, 4], [5, 6], [7, -8]]> : tensor<8x2xi4>
    %1 = constant dense<[1.0, -1.0]> : tensor<2xf16>
    %2 = dequantize %0, %1 {axis = 1} : (tensor<8x2xi4>, tensor<2xf16>) -> tensor<8x2xf32>
    %3 = matmul %x, %2 : (tensor<4x8xf32>, tensor<8x2xf32>) -> tensor<4x2xf32>
    return %3
  }
}
";

    #[test]
    fn parses_and_reprints_the_sample() {
        let m = parse_ok(SAMPLE);
        assert_eq!(print_module(&m), SAMPLE);
        let f = &m.functions[0];
        assert_eq!(f.span, Some(Span { line: 2, col: 3 }));
        assert_eq!(f.return_span, Some(Span { line: 7, col: 5 }));
        let spans: Vec<Span> = f.ops().iter().map(|o| f.op_spans[o]).collect();
        assert_eq!(
            spans,
            (3..=6)
                .map(|line| Span { line, col: 5 })
                .collect::<Vec<_>>()
        );
        let c = &f.op(f.ops()[1]).kind;
        assert_eq!(
            c,
            &OpKind::Constant(ConstData::new(vec![0x00, 0x3C, 0x00, 0xBC]))
        );
    }

    #[test]
    fn op_notes_round_trip_and_errors() {
        let src = "module {
  func @main(%x: tensor<2xf32>) -> (y: tensor<2xf32>) {
    %0 = constant dense<[1, 2]> : tensor<2xu4> note {node = \"c\", op_type = \"Cast\", what = \"w\", why = \"x\"}
    %1 = cast %0 : (tensor<2xu4>) -> tensor<2xf32> note {node = \"mm \\\"a\\\"\", op_type = \"MatMulNBits\", what = \"the codes\", why = \"a\\0Ab\"}
    %2 = add %x, %1 : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    return %2
  }
}
";
        let m = parse_ok(src);
        assert_eq!(print_module(&m), src);
        let f = &m.functions[0];
        let notes = f.notes_in_order();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[1].1.node, "mm \"a\"");
        assert_eq!(notes[1].1.why, "a\nb");
        let mut g = f.clone();
        g.op_notes.clear();
        assert!(!f.structurally_eq(&g), "notes take part in equality");
        let op = "%0 = relu %x : (tensor<4xf32>) -> tensor<4xf32> note";
        for (tail, want) in [
            (" {node = \"a\"}", "the note lacks op_type, what, why"),
            (" {node = 1}", "expected a string for note key 'node'"),
            (" {nodes = \"a\"}", "expected a note key"),
            (" {node = \"a\", node = \"b\"}", "duplicate note key 'node'"),
            (" node", "expected '{' after 'note'"),
        ] {
            let e = first_error(&body(&format!("{op}{tail}")));
            assert!(e.contains(want), "{tail}: {e}");
        }
    }

    #[test]
    fn bare_functions_and_default_output_names() {
        let m = parse_ok(
            "// a comment\nfunc @a(%x: tensor<2xf32>) -> tensor<2xf32> { return %x }\n\
             func @b(%x: tensor<2xf32>) -> (tensor<2xf32>, named: tensor<2xf32>, tensor<2xf32>) {\n\
               %0 = relu %x : (tensor<2xf32>) -> tensor<2xf32> // trailing\n  return %0, %x, %0 }\n\
             func @c() -> () { return }",
        );
        let names = |f: &Function| f.outputs.iter().map(|o| o.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&m.functions[0]), ["output0"]);
        assert_eq!(names(&m.functions[1]), ["output0", "named", "output2"]);
        assert!(m.functions[2].outputs.is_empty() && m.functions[2].params.is_empty());
        assert!(parse_ok("").functions.is_empty());
    }

    fn constant_bytes(src: &str) -> Vec<u8> {
        let m = parse_ok(src);
        let f = &m.functions[0];
        match &f.op(f.ops()[0]).kind {
            OpKind::Constant(c) => c.bytes().to_vec(),
            k => panic!("not a constant: {k:?}"),
        }
    }

    fn one_constant(payload: &str, ty: &str) -> String {
        format!("func @f() -> {ty} {{\n  %0 = constant {payload} : {ty}\n  return %0\n}}")
    }

    #[test]
    fn value_lists_encode_each_element_type() {
        let cases: &[(&str, &str, &[u8])] = &[
            ("dense<[1, -1, 7, -8]>", "tensor<4xi4>", &[0xF1, 0x87]),
            ("dense<[[1, 2], [3, 0]]>", "tensor<2x2xu2>", &[0b0011_1001]),
            ("dense<-1>", "tensor<3xb1>", &[0]),
            ("dense<[-1, 1, 1]>", "tensor<3xb1>", &[0b110]),
            ("dense<1.5>", "tensor<f16>", &[0x00, 0x3E]),
            (
                "dense<[-0.0, inf, -inf, nan]>",
                "tensor<4xf8E5M2>",
                &[0x80, 0x7C, 0xFC, 0x7E],
            ),
            (
                "dense<[1e-5, 3.4028234663852886e38]>",
                "tensor<2xf32>",
                &[0xAC, 0xC5, 0x27, 0x37, 0xFF, 0xFF, 0x7F, 0x7F],
            ),
            ("dense<[6, -0.5]>", "tensor<2xf4E2M1FN>", &[0x97]),
            ("dense<[448.0, nan]>", "tensor<2xf8E4M3FN>", &[0x7E, 0x7F]),
            ("dense<[0.5, 2]>", "tensor<2xf8E8M0FNU>", &[0x7E, 0x80]),
            ("dense<[1.0625]>", "tensor<1xfE3M4>", &[0x31]),
            ("dense<[18446744073709551615]>", "tensor<1xu64>", &[0xFF; 8]),
            ("dense<[]>", "tensor<0x3xf32>", &[]),
            ("dense<[]>", "tensor<3x0xf32>", &[]),
            ("dense<[[], []]>", "tensor<2x0xi8>", &[]),
            (
                "dense<[1, 2, 3, 4]>",
                "tensor<4xi4, #layout<msb>>",
                &[0x12, 0x34],
            ),
            (
                "dense<[[1, 2], [3, 4]]>",
                "tensor<2x2xi8, #layout<tile=2x1>>",
                &[1, 3, 2, 4],
            ),
        ];
        for (payload, ty, bytes) in cases {
            assert_eq!(
                constant_bytes(&one_constant(payload, ty)),
                *bytes,
                "{payload} : {ty}"
            );
        }
    }

    #[test]
    fn layouts_parse_in_any_order() {
        let m = parse_ok(
            "func @f(%a: tensor<2x3xu3, #layout<bitplanes, tile=2x3, msb>>, \
             %b: tensor<64xi4, #layout<interleave = 32, lsb>>, %c: tensor<4xi4, #layout<>>) { return }",
        );
        let f = &m.functions[0];
        let l = &f.ty(f.params[0].1).layout;
        assert_eq!(
            l,
            &Layout {
                pack: PackOrder::MsbFirst,
                tile: vec![2, 3],
                interleave: None,
                bit_planes: true
            }
        );
        assert_eq!(f.ty(f.params[1].1).layout.interleave, Some(32));
        assert!(f.ty(f.params[2].1).layout.is_default());
    }

    #[test]
    fn resources_resolve_after_the_functions() {
        let src = "module {\n  func @f() -> (a: tensor<2xi8>, b: tensor<2xi8>) {\n    \
                   %0 = constant dense_resource<blob> : tensor<2xi8>\n    \
                   %1 = constant dense_resource<blob> : tensor<2xi8>\n    return %0, %1\n  }\n}\n\
                   {-#\n  resources: {\n    blob: \"0x0102\",\n    unused: \"0x\",\n  }\n#-}\n";
        assert_eq!(constant_bytes(src), vec![1, 2]);
    }

    #[test]
    fn attributes_of_every_kind() {
        let m = parse_ok(
            "func @f(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) -> tensor<3x3xf32> {\n\
               %0 = gemm %a, %b {trans_a = true, alpha = 0.5, beta = -2, overflow = saturate} : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<3x3xf32>\n\
               %1 = transpose %0 {perm = [1, 0]} : (tensor<3x3xf32>) -> tensor<3x3xf32>\n\
               %2 = layer_norm %1, %1 {axis = -2, epsilon = 1e-6} : (tensor<3x3xf32>, tensor<3x3xf32>) -> tensor<3x3xf32>\n\
               return %2 }",
        );
        let f = &m.functions[0];
        let kinds: Vec<&OpKind> = f.ops().iter().map(|&o| &f.op(o).kind).collect();
        assert_eq!(
            kinds[0],
            &OpKind::Gemm {
                trans_a: true,
                trans_b: false,
                alpha: 0.5,
                beta: -2.0,
                overflow: Overflow::Saturate
            }
        );
        assert_eq!(kinds[1], &OpKind::Transpose { perm: vec![1, 0] });
        assert_eq!(
            kinds[2],
            &OpKind::LayerNorm {
                axis: -2,
                epsilon: 1e-6
            }
        );
    }

    #[test]
    fn names_may_contain_dots_and_dashes() {
        let m = parse_ok(
            "func @my-fn.v2(%input-1: tensor<f32>, %x.0: tensor<f32>) -> tensor<f32> {\n\
               %sum-0 = add %input-1, %x.0 : (tensor<f32>, tensor<f32>) -> tensor<f32>\n  return %sum-0 }",
        );
        let f = &m.functions[0];
        assert_eq!(f.name, "my-fn.v2");
        assert_eq!(f.params[0].0, "input-1");
        assert_eq!(
            f.op(f.ops()[0]).operands,
            vec![f.params[0].1, f.params[1].1]
        );
    }

    #[test]
    fn quoted_names_round_trip() {
        let src = "func @main(%\"onnx::MatMul_1\": tensor<2xf32>, %\"/l.0/Add_output_0\": tensor<2xf32>) \
                   -> (\"out:0\": tensor<2xf32>, \"a\\\"b\\\\c\\0A\": tensor<2xf32>) {\n\
                   %0 = add %\"onnx::MatMul_1\", %\"/l.0/Add_output_0\" : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>\n\
                   return %0, %\"onnx::MatMul_1\" }";
        let m = parse_ok(src);
        let f = &m.functions[0];
        assert_eq!(f.params[0].0, "onnx::MatMul_1");
        assert_eq!(f.params[1].0, "/l.0/Add_output_0");
        assert_eq!(f.outputs[0].0, "out:0");
        assert_eq!(f.outputs[1].0, "a\"b\\c\n");
        let text = crate::printer::print_module(&m);
        assert!(
            text.contains("%\"onnx::MatMul_1\": tensor<2xf32>"),
            "{text}"
        );
        assert!(
            text.contains("\"a\\\"b\\\\c\\0A\": tensor<2xf32>"),
            "{text}"
        );
        assert_eq!(parse_ok(&text), m);
        // names that would be misread unquoted are quoted
        for name in ["0", "a->b", "x y", "", "é", "tensor"] {
            let mut f = Function::new("g");
            let v = f.add_param(name, TensorType::new(vec![1], ElemType::F32));
            f.outputs.push((name.to_string(), v));
            let m = Module { functions: vec![f] };
            let text = crate::printer::print_module(&m);
            assert_eq!(parse_ok(&text), m, "{text}");
        }
    }

    /// A parameter named like a result number (`"1"`, printed `%"1"`) does
    /// not collide with the op results the printer numbers `%0, %1, ...`
    /// (found by fuzzing the ONNX importer: "redefinition of %62").
    #[test]
    fn numeric_parameter_names_do_not_collide_with_results() {
        let ty = TensorType::new(vec![2], ElemType::F32);
        let mut f = Function::new("g");
        let a = f.add_param("1", ty.clone());
        let b = f.add_param("3", ty.clone());
        let mut last = a;
        for _ in 0..4 {
            let add = OpKind::Binary {
                op: crate::ops::BinaryOp::Add,
                overflow: Overflow::Wrap,
            };
            last = f.push(add, vec![last, b], ty.clone());
        }
        f.outputs.push(("y".to_string(), last));
        let m = Module { functions: vec![f] };
        let text = crate::printer::print_module(&m);
        assert!(!text.contains("%1 ="), "{text}");
        assert!(!text.contains("%3 ="), "{text}");
        assert_eq!(parse_ok(&text), m, "{text}");
    }

    #[test]
    fn quoted_name_errors() {
        assert_error(
            "func @f(%\"a\\zz\": tensor<f32>) -> tensor<f32> {\n  return %\"a\\zz\" }",
            "1:9: invalid escape '\\zz' in a quoted name (use \\\\, \\\" or \\XX with XX below 80)",
        );
        assert_error(
            "func @f(%\"abc: tensor<f32>) -> tensor<f32> {\n  return }",
            "1:9: unterminated string",
        );
        // a quoted plain name is the same name
        assert_error(
            "func @f(%\"a\": tensor<f32>, %a: tensor<f32>) -> tensor<f32> {\n  return %a }",
            "1:28: redefinition of %a",
        );
        assert_eq!(
            parse_ok("func @f(%\"a\": tensor<f32>) -> tensor<f32> {\n  return %a }").functions[0]
                .params[0]
                .0,
            "a"
        );
    }

    #[test]
    fn multi_result_ops_parse() {
        let m = parse_ok(
            "func @f(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {\n\
               %a, %b = relu %x : (tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>)\n  return %b, %a }",
        );
        let f = &m.functions[0];
        let op = f.op(f.ops()[0]);
        assert_eq!(op.results.len(), 2);
        assert_eq!(f.outputs[0].1, op.results[1]);
        assert_eq!(f.outputs[1].1, op.results[0]);
    }

    const HDR: &str = "func @f(%x: tensor<4xf32>, %q: tensor<4xi4>) -> tensor<4xf32> {\n";

    fn body(ops: &str) -> String {
        format!("{HDR}{ops}\n  return %x\n}}\n")
    }

    #[test]
    fn syntax_errors() {
        assert_error(
            &body("  %0 = add %x, %x {} {} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>"),
            "2:22: expected ':' after the attributes, found '{'",
        );
        assert_error(
            &body("  %0 = add %x, %x (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>"),
            "2:19: expected ':' after operands, found '('",
        );
        assert_error(
            &body("  %0 = add %x, : ()"),
            "2:16: expected an operand after ',', found ':'",
        );
        assert_error(
            &body("  %0 relu %x"),
            "2:6: expected '=' after the op's results, found 'relu'",
        );
        assert_error(
            &body("  %0 = relu %x : (tensor<4xf32>) tensor<4xf32>"),
            "2:34: expected '->' after the operand types, found 'tensor'",
        );
        assert_error(
            "func main() { return }",
            "1:6: expected a function name like '@main' after 'func', found 'main'",
        );
        assert_error(
            "func @f(%x: tensor<4xf32>) {",
            "1:29: expected an op or 'return', found end of input",
        );
        assert_error(
            "func @f() { return } }",
            "1:22: expected 'module', 'func', a resource section or end of input, found '}'",
        );
        assert_error(
            "module { func @f() { return }",
            "1:30: expected 'func' or '}' in module, found end of input",
        );
        assert_error(
            &body("  %0 = relu %x : (tensor<4xf32>) -> tensor<4xf32> ^"),
            "2:51: unexpected character '^'",
        );
        assert_error(
            &body("  %0 = relu % "),
            "2:14: expected a value name after '%', found ' '",
        );
        assert_error(
            &body("  %0 = constant dense<\"0x12 : tensor<f32>"),
            "2:23: unterminated string",
        );
        assert_error(
            &body("  %0 = constant dense<[1, 2x]> : tensor<2xi8>"),
            "2:27: malformed number '2x'",
        );
        assert_error(
            &body("  %0 = constant dense<[1 2]> : tensor<2xi8>"),
            "2:26: expected ']' to close the value list, found '2'",
        );
        assert_error(
            &body("  %0 = softmax %x {axis = } : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:27: expected an attribute value (number, true, false, name or [integers]), found '}'",
        );
        assert_error(
            &body("  %0 = transpose %x {perm = [1, x]} : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:33: expected an integer in the attribute list, found 'x'",
        );
        assert_error(
            &body("  %0 = softmax %x {axis = 1, axis = 2} : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:30: duplicate attribute 'axis'",
        );
        assert_error(
            &body("  %0 = softmax %x {axis = 99999999999999999999} : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:27: integer 99999999999999999999 does not fit in 64 bits",
        );
        assert_error(
            &body("  %0 = constant splat<1> : tensor<f32>"),
            "2:17: expected 'dense<...>' or 'dense_resource<...>' after 'constant', found 'splat'",
        );
        assert_error(
            &body("  %0 = constant dense<> : tensor<f32>"),
            "2:23: expected a value, a '[' list or a \"0x...\" string in 'dense<...>', found '>'",
        );
    }

    #[test]
    fn value_errors() {
        assert_error(
            &body("  %0 = relu %y : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:13: use of undefined value %y",
        );
        assert_error(
            &body("  %x = relu %x : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:3: redefinition of %x",
        );
        assert_error(
            &body("  %a, %a = relu %x : (tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)"),
            "2:7: redefinition of %a",
        );
        assert_error(
            "func @f(%x: tensor<f32>, %x: tensor<f32>) { return }",
            "1:26: redefinition of %x",
        );
        assert_error(
            "func @f() { return }\nfunc @f() { return }",
            "2:1: redefinition of function @f",
        );
        assert_error(
            "func @f() { return %nope }",
            "1:20: use of undefined value %nope",
        );
        assert_error(
            "func @f(%x: tensor<f32>) -> (a: tensor<f32>, a: tensor<f32>) { return %x, %x }",
            "1:46: duplicate output name 'a'",
        );
    }

    #[test]
    fn type_annotation_errors() {
        assert_error(
            &body("  %0 = relu %q : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:13: type mismatch: %q has type tensor<4xi4> but the op says tensor<4xf32>",
        );
        assert_error(
            &body("  %0 = add %x, %x : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:21: 'add' has 2 operands but its type lists 1 operand types",
        );
        assert_error(
            &body("  %0 = relu %x : (tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)"),
            "2:3: 'relu' defines 1 results but its type lists 2 result types",
        );
        assert_error(
            "func @f(%x: tensor<2xf32>) -> tensor<3xf32> {\n  return %x\n}",
            "2:10: type mismatch: %x has type tensor<2xf32> but @f declares output 'output0' as tensor<3xf32>",
        );
        assert_error(
            "func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  return\n}",
            "2:3: return has 0 values but @f declares 1 outputs",
        );
    }

    #[test]
    fn op_and_attribute_errors_point_at_the_op() {
        assert_error(
            &body("  %0 = frobnicate %x : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:3: unknown op 'frobnicate'",
        );
        assert_error(
            &body("  %0 = relu %x {axis = 1} : (tensor<4xf32>) -> tensor<4xf32>"),
            "2:3: op 'relu' has no attribute 'axis'",
        );
        assert_error(
            &body("  %0 = cast %x {rounding = sideways} : (tensor<4xf32>) -> tensor<4xi4>"),
            "2:3: unknown rounding mode 'sideways' (expected one of nearest_even, nearest_away, toward_zero, up, down), or stochastic with seed and random_bits",
        );
        assert_error(
            &body("  %0, %1 = constant dense<1> : tensor<f32>"),
            "2:3: 'constant' defines exactly one result, found 2",
        );
    }

    #[test]
    fn type_errors() {
        let p = |ty: &str| first_error(&format!("func @f(%x: {ty}) {{ return }}"));
        assert_eq!(p("tensor<4xq7>"), "1:22: unknown element type 'q7'");
        assert_eq!(
            p("tensor<4xi65>"),
            "1:22: element type 'i65': integer width 65 is out of range (1 to 64 bits)"
        );
        assert_eq!(
            p("tensor<4x?xf32>"),
            "1:22: expected a dimension or an element type in tensor type, found '?'"
        );
        assert_eq!(
            p("tensor<4 x f32>"),
            "1:21: expected 'x' after dimension 4 in tensor type, found ' '"
        );
        assert_eq!(
            p("tensor<99999999999999999999xf32>"),
            "1:20: dimension 99999999999999999999 is too large"
        );
        assert_eq!(
            p("tensor<4294967296x4294967296xf32>"),
            "1:19: tensor type tensor<4294967296x4294967296xf32> is too large"
        );
        assert_eq!(
            p("tensor<4xi4, #layot<msb>>"),
            "1:26: expected '#layout<...>' after ',' in tensor type, found '#layot'"
        );
        assert_eq!(
            p("tensor<4xi4, #layout<zigzag>>"),
            "1:34: unknown layout attribute 'zigzag' (expected msb, lsb, tile=AxB, interleave=N or bitplanes)"
        );
        assert_eq!(
            p("tensor<4xi4, #layout<msb, lsb>>"),
            "1:39: duplicate layout attribute 'lsb'"
        );
        assert_eq!(
            p("tensor<4xi4, #layout<tile=x>>"),
            "1:39: expected a tile size, found 'x'"
        );
        assert_eq!(
            p("tensor<4xi4, #layout<interleave=-2>>"),
            "1:45: expected a non-negative integer after 'interleave=', found '-2'"
        );
        assert_eq!(
            p("tensor<4xi4, #layout<msb>"),
            "1:38: expected '>' to close the tensor type, found ')'"
        );
        assert_eq!(
            p("tensor<4xi4"),
            "1:24: expected '>' to close the tensor type, found ')'"
        );
        assert_eq!(
            p("vector<4xi4>"),
            "1:13: expected a tensor type like 'tensor<4xf32>', found 'vector'"
        );
    }

    #[test]
    fn payload_errors() {
        let c = |payload: &str, ty: &str| first_error(&one_constant(payload, ty));
        assert_eq!(
            c("dense<\"0x0102\">", "tensor<4xi8>"),
            "2:23: hex payload has 2 bytes but tensor<4xi8> needs 4"
        );
        assert_eq!(
            c("dense<\"0x012\">", "tensor<2xi8>"),
            "2:23: hex payload has an odd number of digits (3)"
        );
        assert_eq!(
            c("dense<\"0x01zz\">", "tensor<2xi8>"),
            "2:23: invalid hex digit 'z' in payload"
        );
        assert_eq!(
            c("dense<\"1234\">", "tensor<2xi8>"),
            "2:23: expected a hex string like \"0x0A1B\", found string \"1234\""
        );
        assert_eq!(
            c("dense<[1, 2, 3]>", "tensor<2xi8>"),
            "2:23: value list has 3 entries but dimension 0 of tensor<2xi8> has size 2"
        );
        assert_eq!(
            c("dense<[[1, 2], 3]>", "tensor<2x2xi8>"),
            "2:32: expected a list for dimension 1 of tensor<2x2xi8>, found a single value"
        );
        assert_eq!(
            c("dense<[[1], [2]]>", "tensor<2xi8>"),
            "2:24: expected a value, found a list nested deeper than the rank of tensor<2xi8>"
        );
        assert_eq!(
            c("dense<[1]>", "tensor<i8>"),
            "2:23: expected a single value for tensor<i8>, found a list"
        );
        assert_eq!(
            c("dense<[8]>", "tensor<1xi4>"),
            "2:24: value 8 is out of range for i4 (-8 to 7)"
        );
        assert_eq!(
            c("dense<-1>", "tensor<u4>"),
            "2:23: value -1 is out of range for u4 (0 to 15)"
        );
        assert_eq!(
            c("dense<[1.5]>", "tensor<1xi8>"),
            "2:24: expected an integer value for i8, found '1.5'"
        );
        assert_eq!(
            c("dense<[0]>", "tensor<1xb1>"),
            "2:24: b1 values are -1 or 1, not 0"
        );
        assert_eq!(
            c("dense<[nan]>", "tensor<1xf4E2M1FN>"),
            "2:24: nan is not representable in f4E2M1FN"
        );
        assert_eq!(
            c("dense<[-inf]>", "tensor<1xf8E4M3FN>"),
            "2:24: -inf is not representable in f8E4M3FN"
        );
        assert_eq!(
            c("dense<[7]>", "tensor<1xf4E2M1FN>"),
            "2:24: value 7 is out of range for f4E2M1FN"
        );
        assert_eq!(
            c("dense<[1e6]>", "tensor<1xf16>"),
            "2:24: value 1e6 is out of range for f16"
        );
        assert_eq!(
            c("dense<[1e400]>", "tensor<1xf64>"),
            "2:24: value 1e400 is out of range for f64"
        );
        assert_eq!(
            c("dense<[-2]>", "tensor<1xf8E8M0FNU>"),
            "2:24: negative value -2 is not representable in f8E8M0FNU"
        );
        assert_eq!(
            c("dense<[0]>", "tensor<1xf8E8M0FNU>"),
            "2:24: zero is not representable in f8E8M0FNU"
        );
        assert_eq!(
            c("dense<1>", "tensor<100000x100000xi8>"),
            "2:23: a single value would fill 10000000000 elements of tensor<100000x100000xi8>, more than the 4194304 allowed; use a hex or resource payload"
        );
        assert_eq!(
            c("dense<[1, 2, 3]>", "tensor<3xf32, #layout<bitplanes>>"),
            "2:36: constant of type tensor<3xf32, #layout<bitplanes>>: bit-planes need an integer element type, not f32"
        );
        assert_eq!(
            c("dense_resource<r9>", "tensor<2xi8>"),
            "2:32: unknown resource 'r9'"
        );
        let deep = format!("dense<{}>", "[".repeat(100));
        assert_eq!(
            c(&deep, "tensor<2xi8>"),
            "2:87: value list nested deeper than 64 levels"
        );
    }

    #[test]
    fn resource_errors() {
        let f = "func @f() -> tensor<2xi8> {\n  %0 = constant dense_resource<r0> : tensor<2xi8>\n  return %0\n}\n";
        let e = |res: &str| first_error(&format!("{f}{res}"));
        assert_eq!(
            e("{-# resources: { r0: \"0x010203\" } #-}"),
            "2:32: resource 'r0' has 3 bytes but tensor<2xi8> needs 2"
        );
        assert_eq!(
            e("{-# resources: { r0: \"0x0102\", r0: \"0x0102\" } #-}"),
            "5:32: duplicate resource 'r0'"
        );
        assert_eq!(
            e("{-# resources: { r0: 12 } #-}"),
            "5:22: expected a hex string like \"0x0A1B\" for resource 'r0', found '12'"
        );
        assert_eq!(
            e("{-# resources: { r0: \"0x0102\" }"),
            "5:32: expected '#-}' to close the resource section, found end of input"
        );
        assert_eq!(
            e("{-# dialect_resources: {} #-}"),
            "5:5: expected 'resources' after '{-#', found 'dialect_resources'"
        );
    }

    #[test]
    fn never_panics_on_truncations_of_valid_text() {
        let src = "module {\n  func @main(%x: tensor<2x4xi4, #layout<msb, tile=1x2>>) -> (y: tensor<2xf16>) {\n    \
                   %0 = constant dense<[1.5, -inf]> : tensor<2xf16>\n    %1 = constant dense_resource<r0> : tensor<2xf16>\n    \
                   %2 = add %0, %1 {overflow = wrap} : (tensor<2xf16>, tensor<2xf16>) -> tensor<2xf16> note {node = \"n\\22\", op_type = \"Add\", what = \"w\", why = \"y\"}\n    return %2\n  }\n}\n\
                   {-#\n  resources: {\n    r0: \"0x0000003C\"\n  }\n#-}\n";
        assert!(parse_module(src).is_ok());
        for (i, _) in src.char_indices().skip(1) {
            let r = parse_module(&src[..i]);
            assert!(
                r.is_err() || i >= src.trim_end().len(),
                "prefix of length {i} parsed"
            );
            let _ = parse_module(&src[i..]);
            let mut mangled = src.to_string();
            mangled.replace_range(i..i + 1, "é");
            let _ = parse_module(&mangled);
        }
    }
}
