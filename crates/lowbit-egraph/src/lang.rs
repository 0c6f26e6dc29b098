//! The e-graph language over the graph IR, and conversion between a
//! [`Function`] and a [`RecExpr`].
//!
//! A node is either a function parameter ([`Node::Param`]), an op
//! ([`Node::Op`]: a [`HeadId`] naming the op kind with its attributes and
//! result type, and the operand classes), or the root ([`Node::Root`]) that
//! lists the function's outputs in order, so that multi-output graphs are one
//! term. Heads are interned in a [`Heads`] table: two ops with equal kinds
//! (constants by payload), result types and operands are one e-node, which
//! gives common-subexpression elimination for free. Limits: every op has one
//! result (true of the whole IR today).

use egg::{Id, RecExpr};
use lowbit_ir::{Function, Op, OpKind, TensorType, Value};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Index of an interned op head in [`Heads`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeadId(pub u32);

impl fmt::Display for HeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

impl FromStr for HeadId {
    type Err = String;
    fn from_str(s: &str) -> Result<HeadId, String> {
        s.strip_prefix('h')
            .and_then(|d| d.parse().ok())
            .map(HeadId)
            .ok_or_else(|| format!("not an op head: '{s}'"))
    }
}

/// Index of a function parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(pub u32);

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl FromStr for ParamId {
    type Err = String;
    fn from_str(s: &str) -> Result<ParamId, String> {
        s.strip_prefix('p')
            .and_then(|d| d.parse().ok())
            .map(ParamId)
            .ok_or_else(|| format!("not a parameter: '{s}'"))
    }
}

mod node {
    // The variants are described on the enum: the macro takes no docs on them.
    #![allow(missing_docs)]
    use super::{HeadId, ParamId};
    use egg::{define_language, Id};

    define_language! {
        /// An e-node: `Root(outputs)` lists the function's outputs in order,
        /// `Param(p)` is a function parameter, `Op(head, operands)` an op
        /// with its interned head (kind, attributes, result type).
        pub enum Node {
            "root" = Root(Vec<Id>),
            Param(ParamId),
            Op(HeadId, Vec<Id>),
        }
    }
}

pub use node::Node;

/// An op kind with its result type.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// What the op does.
    pub kind: OpKind,
    /// Its result type.
    pub ty: TensorType,
}

/// The interning table of op heads.
#[derive(Debug, Default)]
pub struct Heads {
    heads: Vec<Head>,
    index: HashMap<(String, u64), Vec<HeadId>>,
}

impl Heads {
    /// Interns a head.
    pub fn intern(&mut self, kind: OpKind, ty: TensorType) -> HeadId {
        // Attributes and type print canonically. A constant is keyed by its
        // shared payload's address, not its bytes: hashing megabytes of
        // weights would dominate the run, and equal payloads in different
        // buffers are left to `cse`. Ids are handed out in insertion
        // order, so the address never shows in the result.
        let payload = match &kind {
            OpKind::Constant(c) => c.bytes().as_ptr() as usize as u64,
            _ => 0,
        };
        let key = (format!("{}{:?}{}", kind.name(), kind.attrs(), ty), payload);
        let head = Head { kind, ty };
        let slot = self.index.entry(key).or_default();
        if let Some(id) = slot.iter().find(|id| self.heads[id.0 as usize] == head) {
            return *id;
        }
        let id = HeadId(self.heads.len() as u32);
        self.heads.push(head);
        slot.push(id);
        id
    }

    /// The head with this id.
    pub fn get(&self, id: HeadId) -> &Head {
        &self.heads[id.0 as usize]
    }

    /// Number of interned heads.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

/// Builds the term of a function: one node per reachable op, the root last.
/// Ops whose results no output uses are dropped (they have no effect).
pub fn function_to_recexpr(f: &Function, heads: &mut Heads) -> Result<RecExpr<Node>, String> {
    function_to_recexpr_indexed(f, heads).map(|(e, _)| e)
}

/// A function's term with the term node of every op.
pub type IndexedTerm = (RecExpr<Node>, Vec<(Op, Id)>);

/// [`function_to_recexpr`], with the term node of every op.
pub fn function_to_recexpr_indexed(f: &Function, heads: &mut Heads) -> Result<IndexedTerm, String> {
    let mut at = Vec::with_capacity(f.ops().len());
    let mut expr = RecExpr::default();
    let mut ids: HashMap<Value, Id> = HashMap::new();
    for (i, (_, v)) in f.params.iter().enumerate() {
        ids.insert(*v, expr.add(Node::Param(ParamId(i as u32))));
    }
    for &op in f.ops() {
        let d = f.op(op);
        let [r] = d.results[..] else {
            return Err(format!(
                "'{}' op has {} results; the e-graph handles single-result ops",
                d.kind.name(),
                d.results.len()
            ));
        };
        let mut children = Vec::with_capacity(d.operands.len());
        for v in &d.operands {
            let id = ids.get(v).ok_or_else(|| {
                format!("'{}' op uses a value before its definition", d.kind.name())
            })?;
            children.push(*id);
        }
        let h = heads.intern(d.kind.clone(), f.ty(r).clone());
        let id = expr.add(Node::Op(h, children));
        at.push((op, id));
        ids.insert(r, id);
    }
    let mut outs = Vec::with_capacity(f.outputs.len());
    for (name, v) in &f.outputs {
        outs.push(
            *ids.get(v)
                .ok_or_else(|| format!("output '{name}' is not defined"))?,
        );
    }
    expr.add(Node::Root(outs));
    Ok((expr, at))
}

/// Rebuilds a function from a term whose last node is the root, with the
/// signature (name, parameters, output names) of `template`. Shared
/// subterms become one op.
pub fn recexpr_to_function(
    expr: &RecExpr<Node>,
    heads: &Heads,
    template: &Function,
) -> Result<Function, String> {
    recexpr_to_function_mapped(expr, heads, template).map(|(f, _)| f)
}

/// [`recexpr_to_function`], with the value of every term node (`None` for
/// the root).
pub fn recexpr_to_function_mapped(
    expr: &RecExpr<Node>,
    heads: &Heads,
    template: &Function,
) -> Result<(Function, Vec<Option<Value>>), String> {
    let mut f = Function::new(template.name.clone());
    let params: Vec<Value> = template
        .params
        .iter()
        .map(|(n, v)| f.add_param(n.clone(), template.ty(*v).clone()))
        .collect();
    let nodes = expr.as_ref();
    let mut vals: Vec<Option<Value>> = vec![None; nodes.len()];
    let mut memo: HashMap<(HeadId, Vec<Value>), Value> = HashMap::new();
    let mut root = None;
    for (i, n) in nodes.iter().enumerate() {
        match n {
            Node::Param(p) => {
                let v = params
                    .get(p.0 as usize)
                    .ok_or_else(|| format!("parameter #{} does not exist", p.0))?;
                vals[i] = Some(*v);
            }
            Node::Op(h, children) => {
                let operands = children
                    .iter()
                    .map(|c| vals[usize::from(*c)].ok_or("operand is not a value"))
                    .collect::<Result<Vec<_>, _>>()?;
                let key = (*h, operands);
                let v = match memo.get(&key) {
                    Some(v) => *v,
                    None => {
                        let head = heads.get(*h);
                        let v = f.push(head.kind.clone(), key.1.clone(), head.ty.clone());
                        memo.insert(key, v);
                        v
                    }
                };
                vals[i] = Some(v);
            }
            Node::Root(outs) => root = Some(outs.clone()),
        }
    }
    let outs = root.ok_or("the term has no root")?;
    if outs.len() != template.outputs.len() {
        return Err(format!(
            "the root lists {} outputs, the function has {}",
            outs.len(),
            template.outputs.len()
        ));
    }
    for ((name, _), id) in template.outputs.iter().zip(outs) {
        let v = vals[usize::from(id)].ok_or("output is not a value")?;
        f.outputs.push((name.clone(), v));
    }
    Ok((f, vals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_ir::parser::parse_module;

    #[test]
    fn round_trips_and_shares_equal_ops() {
        let src = "func @main(%x: tensor<2x2xf32>) -> (a: tensor<2x2xf32>, b: tensor<2x2xf32>) {
  %0 = relu %x : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %1 = relu %x : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %2 = add %0, %1 : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
  return %2, %0
}
";
        let m = parse_module(src);
        let m = match m {
            Ok(m) => m,
            Err(d) => panic!("{d:?}"),
        };
        let f = &m.functions[0];
        let mut heads = Heads::default();
        let e = function_to_recexpr(f, &mut heads).unwrap();
        let g = recexpr_to_function(&e, &heads, f).unwrap();
        assert_eq!(g.ops().len(), 2, "the two relus are one op");
        assert_eq!(g.outputs[0].0, "a");
        assert_eq!(g.outputs[1].0, "b");
        assert_eq!(heads.len(), 2);
    }
}
