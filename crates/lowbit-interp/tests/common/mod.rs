//! Helpers shared by the interpreter's integration tests.
#![allow(dead_code)]

use lowbit_interp::{eval_op, InterpError};
use lowbit_ir::{ElemType, OpKind, Tensor, TensorType};

/// Parses an element type spelling.
pub fn el(s: &str) -> ElemType {
    s.parse().unwrap()
}

/// A type with the default layout.
pub fn ty(elem: &str, shape: &[u64]) -> TensorType {
    TensorType::new(shape.to_vec(), el(elem))
}

/// A tensor of values (encoded nearest-even; integers must be in range).
pub fn t(elem: &str, shape: &[u64], vals: &[f64]) -> Tensor {
    let e = el(elem);
    if e.is_integral() {
        for &v in vals {
            let (lo, hi) = e.int_range().unwrap();
            assert!(v >= lo as f64 && v <= hi as f64, "{v} out of {elem}");
        }
    }
    Tensor::from_f64(e, shape.to_vec(), vals).unwrap()
}

/// A tensor from raw codes.
pub fn codes(elem: &str, shape: &[u64], codes: &[u64]) -> Tensor {
    Tensor::new(el(elem), shape.to_vec(), codes.to_vec()).unwrap()
}

/// Evaluates a one-result op.
pub fn eval(kind: OpKind, ops: &[&Tensor], rt: TensorType) -> Result<Tensor, InterpError> {
    eval_op(&kind, ops, &[rt]).map(|mut v| v.remove(0))
}

/// Evaluates and unwraps, checking the result's type.
pub fn ok(kind: OpKind, ops: &[&Tensor], rt: TensorType) -> Tensor {
    let r = eval(kind, ops, rt.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.shape, rt.shape);
    assert_eq!(r.elem, rt.elem);
    r
}

/// Decoded values (integers as f64).
pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64()
}

/// Decoded integer values.
pub fn ints(t: &Tensor) -> Vec<i128> {
    t.to_i128().unwrap()
}

/// Evaluates, expecting an error whose text contains `needle`.
pub fn err(kind: OpKind, ops: &[&Tensor], rt: TensorType, needle: &str) -> String {
    match eval(kind, ops, rt) {
        Ok(t) => panic!("expected an error containing {needle:?}, got {t:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains(needle), "{s:?} does not contain {needle:?}");
            s
        }
    }
}

/// Distance in units in the last place of `want` (f64).
pub fn ulps(got: f64, want: f64) -> f64 {
    if got == want {
        return 0.0;
    }
    let u = if want == 0.0 {
        f64::from_bits(1)
    } else {
        f64::from_bits(want.abs().to_bits() + 1) - want.abs()
    };
    ((got - want) / u).abs()
}
