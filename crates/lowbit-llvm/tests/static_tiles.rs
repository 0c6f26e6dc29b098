//! Which tile functions a kernel module holds, and that the kernels with
//! a static `n` (which compile only the tiles their column walk uses) stay
//! exact: the W8A8/W4A8 panel tiles bit for bit against the interpreter's
//! `matmul` to `i32` (the float tiles: `against_interp.rs`).
//!
//! The module is inspected through its function list (never timings): a
//! tile the walk never calls must not be compiled, since each one costs
//! JIT time. Also: packed weights start on a cache line.

mod common;

use common::{assert_int_kernel_on_1_and_2_threads, int_reference, random_codes, t, Rng};
use inkwell::context::Context;
use lowbit_llvm::codegen::build_module;
use lowbit_llvm::{compile, CpuTarget, Dim, GemmSpec, PackedWeights};
use std::collections::BTreeSet;

/// The tile functions (`tile_RxC`, `vtile_PxC`) defined in `spec`'s module
/// for `target`.
fn tiles(spec: &GemmSpec, target: &CpuTarget) -> BTreeSet<String> {
    let ctx = Context::create();
    let module = build_module(&ctx, spec, target).unwrap();
    module
        .get_functions()
        .filter(|f| f.count_basic_blocks() > 0)
        .map(|f| f.get_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tile_") || n.starts_with("vtile_"))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn static_n_compiles_only_the_tiles_it_uses() {
    let avx512 = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let i8w = |n| GemmSpec::int(4096, 1024, n, t("i8"), t("u8"));
    let i4w = |n| GemmSpec::int(4096, 1024, n, t("i4"), t("u8"));
    // W8A8, 4 panels x 6 columns: a run-time n needs the one-column tiles
    // for its rest; 512 = 85 * 6 + 2 a two-column tile for the last two
    // columns, 12 no rest tile, 1 and 5 one tile exactly that wide.
    let all8 = set(&["vtile_4x6", "vtile_4x1", "vtile_1x6", "vtile_1x1"]);
    assert_eq!(tiles(&i8w(Dim::Dynamic), &avx512), all8);
    assert_eq!(
        tiles(&i8w(Dim::Static(512)), &avx512),
        set(&["vtile_4x6", "vtile_4x2", "vtile_1x6", "vtile_1x2"])
    );
    assert_eq!(
        tiles(&i8w(Dim::Static(5)), &avx512),
        set(&["vtile_4x5", "vtile_1x5"])
    );
    assert_eq!(
        tiles(&i8w(Dim::Static(12)), &avx512),
        set(&["vtile_4x6", "vtile_1x6"])
    );
    assert_eq!(
        tiles(&i8w(Dim::Static(1)), &avx512),
        set(&["vtile_4x1", "vtile_1x1"])
    );
    // W4A8, 2 panels x 11 columns; n = 8 one 8-column tile (each decoded
    // weight vector serves all 8 columns), 15 = 11 + a 4-column tile.
    assert_eq!(
        tiles(&i4w(Dim::Static(22)), &avx512),
        set(&["vtile_2x11", "vtile_1x11"])
    );
    assert_eq!(
        tiles(&i4w(Dim::Static(8)), &avx512),
        set(&["vtile_2x8", "vtile_1x8"])
    );
    assert_eq!(
        tiles(&i4w(Dim::Static(15)), &avx512),
        set(&["vtile_2x11", "vtile_2x4", "vtile_1x11", "vtile_1x4"])
    );
    assert_eq!(
        tiles(&i4w(Dim::Dynamic), &avx512),
        set(&["vtile_2x11", "vtile_2x1", "vtile_1x11", "vtile_1x1"])
    );
    // Float, q4_0-like: n = 8 is one 4x8 tile wide (the 1x1 tile serves
    // the last rows when m is not a multiple of 4 or 8); 12 takes 4x8 then
    // 4x4; n = 1 the 8x1 decoding tile (its last 4 - 7 rows of a range one
    // at a time with 1x1: no 4x1 tile with AVX-512); AVX2's wide tile is
    // 2x4, and there 4x1 is the decoding tile.
    let q4 = |n| GemmSpec::new(4096, 1024, n, t("i4"), 32);
    assert_eq!(
        tiles(&q4(Dim::Static(8)), &avx512),
        set(&["tile_4x8", "tile_1x1"])
    );
    assert_eq!(
        tiles(&q4(Dim::Static(12)), &avx512),
        set(&["tile_4x8", "tile_4x4", "tile_1x1"])
    );
    assert_eq!(
        tiles(&q4(Dim::Static(1)), &avx512),
        set(&["tile_8x1", "tile_1x1"])
    );
    let haswell = CpuTarget::named("x86_64", "haswell").unwrap();
    assert_eq!(
        tiles(&q4(Dim::Static(8)), &haswell),
        set(&["tile_2x4", "tile_1x1"])
    );
    assert_eq!(
        tiles(&q4(Dim::Static(1)), &haswell),
        set(&["tile_4x1", "tile_1x1"])
    );
}

/// A run-time n compiles one wide tile, which also takes the last
/// `n % 8 >= 4` columns (no 4x4 tile), the 8x1 tile for fewer, and
/// 1x1: three tiles where it compiled five (each one costs JIT time).
/// Without the 4x8 tile (groups that do not divide its 16-block chunks,
/// or AVX2) the walk is the static one's.
#[test]
fn dynamic_n_compiles_one_wide_float_tile() {
    let avx512 = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let haswell = CpuTarget::named("x86_64", "haswell").unwrap();
    for (w, group) in [("i4", 32), ("i8", 32), ("f4E2M1FN", 16), ("u4", 128)] {
        let spec = GemmSpec::new(4096, 1024, Dim::Dynamic, t(w), group);
        assert_eq!(
            tiles(&spec, &avx512),
            set(&["tile_4x8", "tile_8x1", "tile_1x1"]),
            "{spec}"
        );
        assert_eq!(
            tiles(&spec, &haswell),
            set(&["tile_2x4", "tile_4x1", "tile_1x1"]),
            "{spec}"
        );
    }
    // Groups of 1024 (32 blocks) do not fit a 16-block chunk: no 4x8.
    let wide_group = GemmSpec::new(4096, 2048, Dim::Dynamic, t("i4"), 1024);
    assert_eq!(
        tiles(&wide_group, &avx512),
        set(&["tile_4x4", "tile_8x1", "tile_1x1"])
    );
}

/// W8A8/W4A8 kernels with a static n (only the tiles its walk uses):
/// ragged m (partial panels, rows split between threads inside a panel)
/// and k (one or several k passes), n a multiple of the wide tile, below it
/// (one tile n wide), and with a remainder of one or several columns (one
/// tile the remainder wide); bit-exact with 1 and 2 threads.
#[test]
fn static_n_integer_kernels_are_bit_exact() {
    let mut rng = Rng(0x05ee_d0f7_11e5);
    for (case_no, (wt, n)) in [
        ("i8", 1),
        ("i8", 5),
        ("i8", 6),
        ("i8", 12),
        ("i8", 13),
        ("i8", 14),
        ("i4", 8),
        ("i4", 11),
        ("i4", 15),
        ("i4", 22),
        ("u4", 3),
        ("u4", 10),
        ("u4", 23),
        ("i8", 4),
    ]
    .into_iter()
    .enumerate()
    {
        let wt = t(wt);
        let act = if case_no % 2 == 0 { t("u8") } else { t("i8") };
        let m = 1 + rng.below(150) as usize;
        // i8 walks k in 4096-element passes: some cases take several.
        let k = 1 + rng.below(if wt == t("i8") { 9000 } else { 2600 }) as usize;
        let spec = GemmSpec::int(m, k, Dim::Static(n), wt, act);
        let w = random_codes(&mut rng, wt, m, k);
        let x = random_codes(&mut rng, act, n, k);
        let want = int_reference(&x, &w);
        let kernel = compile(&spec).unwrap();
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        assert_int_kernel_on_1_and_2_threads(&kernel, &packed, &x, &want, &format!("{spec}"));
    }
}

/// The kernels load weights 64 bytes at a time from panel offsets that are
/// multiples of 64: the packed codes must start on a cache line (else
/// every load straddles two), whatever the allocator returns, for packed
/// and wrapped (`from_raw`) weights and their clones.
#[test]
fn packed_codes_start_on_a_cache_line() {
    let mut rng = Rng(64);
    for (m, k) in [(1, 1), (17, 300), (300, 4100)] {
        let spec = GemmSpec::int(m, k, Dim::Dynamic, t("i8"), t("u8"));
        let w = random_codes(&mut rng, t("i8"), m, k);
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        let raw = PackedWeights::from_raw(&spec, packed.codes().to_vec(), vec![], vec![]).unwrap();
        for p in [&packed, &raw, &packed.clone()] {
            assert_eq!(p.codes().as_ptr() as usize % 64, 0, "{spec}");
            assert_eq!(p.codes(), packed.codes());
        }
    }
}
