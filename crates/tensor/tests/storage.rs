//! Owned and memory-mapped storage, ndarray interop, casts and basic views.

use std::io::Write;
use std::sync::Arc;

use half::{bf16, f16};
use kaiyuan_tensor::{DType, Tensor};

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kaiyuan-tensor-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    path
}

#[test]
fn memory_mapped_tensors_are_zero_copy() {
    // 16 header bytes, then 6 f32 values, then 4 f16 values.
    let mut bytes = vec![0u8; 16];
    for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0.5f32, 1.5, -2.0, 8.0] {
        bytes.extend_from_slice(&f16::from_f32(v).to_le_bytes());
    }
    let path = temp_file("mapped.bin", &bytes);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the test owns the file and nothing modifies it while mapped.
    let mmap = Arc::new(unsafe { memmap2::Mmap::map(&file) }.unwrap());
    let x = Tensor::from_mmap(Arc::clone(&mmap), 16..40, DType::F32, &[2, 3]).unwrap();
    assert!(x.is_memory_mapped());
    assert_eq!(
        x.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    // Views stay on the map; ops read it in place.
    let xt = x.t().unwrap();
    assert!(xt.shares_storage_with(&x) && xt.is_memory_mapped());
    assert_eq!(
        xt.to_vec::<f32>().unwrap(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    let y = x.matmul(&xt).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
    let h = Tensor::from_mmap(Arc::clone(&mmap), 40..48, DType::F16, &[4]).unwrap();
    assert_eq!(
        h.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(),
        vec![0.5, 1.5, -2.0, 8.0]
    );

    // Errors: misaligned, wrong element count, outside the map.
    let e = Tensor::from_mmap(Arc::clone(&mmap), 17..41, DType::F32, &[6]).unwrap_err();
    assert!(e.to_string().contains("not aligned"), "{e}");
    let e = Tensor::from_mmap(Arc::clone(&mmap), 16..40, DType::F32, &[7]).unwrap_err();
    assert!(e.to_string().contains("from_mmap"), "{e}");
    let e = Tensor::from_mmap(Arc::clone(&mmap), 16..4000, DType::F32, &[996]).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let e = Tensor::from_mmap(mmap, 16..18, DType::F32, &[1]).unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn ndarray_round_trip_and_views_share_storage() {
    let a = ndarray::Array::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64).into_dyn();
    let t = Tensor::from_ndarray(a.clone());
    assert_eq!(t.dtype(), DType::F64);
    assert_eq!(t.to_ndarray::<f64>().unwrap(), a);
    let v = t.narrow(1, 1, 2).unwrap();
    assert!(v.shares_storage_with(&t));
    assert!(!v.is_contiguous());
    assert!(!v.contiguous().unwrap().shares_storage_with(&t));
    let r = t.reshape(&[4, 3]).unwrap();
    assert!(
        r.shares_storage_with(&t),
        "reshape of a contiguous tensor is a view"
    );
    assert_eq!(v.unsqueeze(0).unwrap().shape(), &[1, 3, 2]);
    assert_eq!(
        v.unsqueeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec::<f64>()
            .unwrap(),
        v.to_vec::<f64>().unwrap()
    );
    let b = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3, 1])
        .unwrap()
        .broadcast_as(&[2, 3, 4])
        .unwrap();
    assert_eq!(
        b.to_vec::<f64>().unwrap()[..8],
        [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    );
}

#[test]
fn casts_round_and_saturate() {
    let x = Tensor::from_vec(vec![1.5f32, -2.7, 1e10, f32::NAN, 65504.0, 1.0 / 3.0], &[6]).unwrap();
    let i = x.cast(DType::I64).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(i, vec![1, -2, 10_000_000_000, 0, 65504, 0]);
    let u = x.cast(DType::U32).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(u, vec![1, 0, u32::MAX, 0, 65504, 0]);
    let h = x.cast(DType::F16).unwrap().to_vec::<f16>().unwrap();
    assert_eq!(h[0], f16::from_f32(1.5));
    assert_eq!(h[5], f16::from_f32(1.0 / 3.0));
    let b = x.cast(DType::BF16).unwrap().to_vec::<bf16>().unwrap();
    assert_eq!(b[1], bf16::from_f32(-2.7));
    // Past a tie by the last mantissa bit: rounds up (nearest), where
    // `bf16::from_f64` truncates that bit away and rounds to even.
    let above_tie = Tensor::from_vec(vec![f32::from_bits(0x3EA4_8001)], &[1]).unwrap();
    let b = above_tie
        .cast(DType::BF16)
        .unwrap()
        .to_vec::<bf16>()
        .unwrap();
    assert_eq!(b[0].to_bits(), 0x3EA5);
    let back = Tensor::from_vec(vec![-5i64, 7, 1 << 40], &[3])
        .unwrap()
        .cast(DType::U32)
        .unwrap();
    assert_eq!(back.to_vec::<u32>().unwrap(), vec![0, 7, u32::MAX]);
    assert_eq!(
        Tensor::arange(4, DType::U32)
            .unwrap()
            .to_vec::<u32>()
            .unwrap(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn softmax_edge_cases_match_pytorch_conventions() {
    // A row of −∞ gives NaN; a row with one finite value gives a one-hot row.
    let x = Tensor::from_vec(
        vec![f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0],
        &[2, 2],
    )
    .unwrap();
    let p = x.softmax(-1).unwrap().to_vec::<f32>().unwrap();
    assert!(p[0].is_nan() && p[1].is_nan());
    assert_eq!(&p[2..], &[0.0, 1.0]);
    // +∞ or NaN anywhere makes the row NaN, as exp(∞ − ∞) does.
    let inf = Tensor::from_vec(vec![f32::INFINITY, 1.0, f32::NAN, 2.0], &[2, 2]).unwrap();
    assert!(
        inf.softmax(-1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
    // Large logits do not overflow.
    let big = Tensor::from_vec(vec![1000.0f32, 1000.0], &[2]).unwrap();
    assert_eq!(
        big.softmax(0).unwrap().to_vec::<f32>().unwrap(),
        vec![0.5, 0.5]
    );
    assert_eq!(
        big.log_softmax(0).unwrap().to_vec::<f32>().unwrap(),
        vec![-std::f32::consts::LN_2; 2]
    );
}
