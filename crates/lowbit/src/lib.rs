//! The lowbit library facade
