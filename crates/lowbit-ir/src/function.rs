//! Modules, functions, values and ops.
//!
//! A function owns two arenas (values and ops) and an op order. Ops removed
//! by a pass leave their arena slot behind but disappear from the order; the
//! printer renumbers densely, so the text never shows the holes. Equality of
//! functions is structural: same signature and the same ops (with their
//! importer notes), in order, on corresponding values (arena numbering and
//! source positions are ignored).

use crate::diag::Span;
use crate::entity::Arena;
use crate::ops::OpKind;
use crate::types::TensorType;
use std::collections::HashMap;

crate::entity!(
    /// An SSA value: a function parameter or an op result.
    Value
);
crate::entity!(
    /// An op in a function.
    Op
);

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The `n`-th function parameter.
    Param(usize),
    /// The `n`-th result of an op.
    Result(Op, usize),
}

/// Per-value data.
#[derive(Clone, Debug)]
pub struct ValueData {
    /// The value's type.
    pub ty: TensorType,
    /// Its definition.
    pub def: ValueDef,
}

/// Per-op data.
#[derive(Clone, Debug)]
pub struct OpData {
    /// What the op does.
    pub kind: OpKind,
    /// Operand values.
    pub operands: Vec<Value>,
    /// Result values.
    pub results: Vec<Value>,
}

/// A note an importer attaches to an op it emitted where quantized data
/// becomes float outside a `dequantize` the optimizer can fuse (and to the
/// op that then consumes the float data in place of a quantized weight):
/// the source node and why, so that `lowbit explain` can say so. It prints
/// after the op's types as `note {node = "...", op_type = "...", what =
/// "...", why = "..."}` and parses back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpNote {
    /// The source node's name (empty when it has none).
    pub node: String,
    /// The source node's op type (`MatMulNBits`, `Cast`, ...).
    pub op_type: String,
    /// What became float (`the u4 weight codes [40, 8] of input 'b'`).
    pub what: String,
    /// Why the importer could not keep it quantized.
    pub why: String,
}

impl std::fmt::Display for OpNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node '{}' ({}): {} dequantized to float at import: {}",
            self.node, self.op_type, self.what, self.why
        )
    }
}

/// A function: named parameters, a list of ops, named outputs.
#[derive(Clone, Debug, Default)]
pub struct Function {
    /// Name (without the `@`).
    pub name: String,
    /// Parameters, with their names (the graph input names).
    pub params: Vec<(String, Value)>,
    /// Outputs, with their names (the graph output names).
    pub outputs: Vec<(String, Value)>,
    values: Arena<Value, ValueData>,
    ops: Arena<Op, OpData>,
    order: Vec<Op>,
    /// Source positions of ops, for diagnostics (filled by the parser).
    pub op_spans: HashMap<Op, Span>,
    /// Source position of the function header.
    pub span: Option<Span>,
    /// Source position of the `return`.
    pub return_span: Option<Span>,
    /// Importer notes on ops (see [`OpNote`]); printed and parsed with the
    /// op, dropped with it.
    pub op_notes: HashMap<Op, OpNote>,
}

impl Function {
    /// An empty function.
    pub fn new(name: impl Into<String>) -> Function {
        Function {
            name: name.into(),
            ..Function::default()
        }
    }

    /// Adds a parameter.
    pub fn add_param(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        let v = self.values.push(ValueData {
            ty,
            def: ValueDef::Param(self.params.len()),
        });
        self.params.push((name.into(), v));
        v
    }

    fn new_op(&mut self, kind: OpKind, operands: Vec<Value>, result_types: Vec<TensorType>) -> Op {
        let op = self.ops.push(OpData {
            kind,
            operands,
            results: Vec::new(),
        });
        let results = result_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                self.values.push(ValueData {
                    ty,
                    def: ValueDef::Result(op, i),
                })
            })
            .collect();
        self.ops[op].results = results;
        op
    }

    /// Appends an op at the end of the function.
    pub fn append_op(
        &mut self,
        kind: OpKind,
        operands: Vec<Value>,
        result_types: Vec<TensorType>,
    ) -> Op {
        let op = self.new_op(kind, operands, result_types);
        self.order.push(op);
        op
    }

    /// Appends a one-result op and returns its result.
    pub fn push(&mut self, kind: OpKind, operands: Vec<Value>, result_type: TensorType) -> Value {
        let op = self.append_op(kind, operands, vec![result_type]);
        self.ops[op].results[0]
    }

    /// Inserts an op right before `before` in the op order.
    pub fn insert_op_before(
        &mut self,
        before: Op,
        kind: OpKind,
        operands: Vec<Value>,
        result_types: Vec<TensorType>,
    ) -> Op {
        let op = self.new_op(kind, operands, result_types);
        let pos = self
            .order
            .iter()
            .position(|&o| o == before)
            .unwrap_or(self.order.len());
        self.order.insert(pos, op);
        op
    }

    /// Removes ops from the order (their results must be unused).
    pub fn remove_ops(&mut self, dead: &std::collections::HashSet<Op>) {
        self.order.retain(|o| !dead.contains(o));
        self.op_spans.retain(|o, _| !dead.contains(o));
        self.op_notes.retain(|o, _| !dead.contains(o));
    }

    /// Attaches a note to the op defining `v` (nothing when `v` is a
    /// parameter).
    pub fn note_value(&mut self, v: Value, note: OpNote) {
        if let Some(op) = self.def_op(v) {
            self.op_notes.insert(op, note);
        }
    }

    /// The notes of the function's ops, in op order.
    pub fn notes_in_order(&self) -> Vec<(Op, &OpNote)> {
        self.order
            .iter()
            .filter_map(|o| self.op_notes.get(o).map(|n| (*o, n)))
            .collect()
    }

    /// Replaces every use of `old` (operands and outputs) with `new`.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        for &op in &self.order {
            for v in &mut self.ops[op].operands {
                if *v == old {
                    *v = new;
                }
            }
        }
        for (_, v) in &mut self.outputs {
            if *v == old {
                *v = new;
            }
        }
    }

    /// Ops in order.
    pub fn ops(&self) -> &[Op] {
        &self.order
    }

    /// An op's data.
    pub fn op(&self, op: Op) -> &OpData {
        &self.ops[op]
    }

    /// An op's data, mutably.
    pub fn op_mut(&mut self, op: Op) -> &mut OpData {
        &mut self.ops[op]
    }

    /// A value's data.
    pub fn value(&self, v: Value) -> &ValueData {
        &self.values[v]
    }

    /// A value's type.
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.values[v].ty
    }

    /// Whether `v` is a value of this function.
    pub fn has_value(&self, v: Value) -> bool {
        self.values.get(v).is_some()
    }

    /// The first result of an op.
    pub fn result(&self, op: Op) -> Value {
        self.ops[op].results[0]
    }

    /// The op defining `v`, if it is an op result.
    pub fn def_op(&self, v: Value) -> Option<Op> {
        match self.values[v].def {
            ValueDef::Result(op, _) => Some(op),
            ValueDef::Param(_) => None,
        }
    }

    /// Number of uses of every value (operands and outputs).
    pub fn use_counts(&self) -> HashMap<Value, usize> {
        let mut m = HashMap::new();
        for &op in &self.order {
            for &v in &self.ops[op].operands {
                *m.entry(v).or_insert(0) += 1;
            }
        }
        for (_, v) in &self.outputs {
            *m.entry(*v).or_insert(0) += 1;
        }
        m
    }

    /// Total payload bytes of all constants (for memory accounting).
    pub fn constant_bytes(&self) -> usize {
        self.order
            .iter()
            .map(|&o| match &self.ops[o].kind {
                OpKind::Constant(c) => c.bytes().len(),
                _ => 0,
            })
            .sum()
    }

    /// Structural equality (see the module docs).
    pub fn structurally_eq(&self, other: &Function) -> bool {
        if self.name != other.name
            || self.params.len() != other.params.len()
            || self.order.len() != other.order.len()
            || self.outputs.len() != other.outputs.len()
        {
            return false;
        }
        let mut map: HashMap<Value, Value> = HashMap::new();
        for ((na, va), (nb, vb)) in self.params.iter().zip(&other.params) {
            if na != nb || self.ty(*va) != other.ty(*vb) {
                return false;
            }
            map.insert(*va, *vb);
        }
        for (&oa, &ob) in self.order.iter().zip(&other.order) {
            let (a, b) = (&self.ops[oa], &other.ops[ob]);
            if a.kind != b.kind
                || self.op_notes.get(&oa) != other.op_notes.get(&ob)
                || a.operands.len() != b.operands.len()
                || a.results.len() != b.results.len()
            {
                return false;
            }
            for (x, y) in a.operands.iter().zip(&b.operands) {
                if map.get(x) != Some(y) {
                    return false;
                }
            }
            for (x, y) in a.results.iter().zip(&b.results) {
                if self.ty(*x) != other.ty(*y) {
                    return false;
                }
                map.insert(*x, *y);
            }
        }
        self.outputs
            .iter()
            .zip(&other.outputs)
            .all(|((na, va), (nb, vb))| na == nb && map.get(va) == Some(vb))
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Function) -> bool {
        self.structurally_eq(other)
    }
}

/// A compilation unit: a list of functions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    /// The functions, in text order.
    pub functions: Vec<Function>,
}

impl Module {
    /// The function with this name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The entry function: `main` if present, else the first.
    pub fn entry(&self) -> Option<&Function> {
        self.function("main").or(self.functions.first())
    }
}
