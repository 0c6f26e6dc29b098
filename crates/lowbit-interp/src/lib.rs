//! Reference interpreter: the bit-exact semantics of every lowbit op
