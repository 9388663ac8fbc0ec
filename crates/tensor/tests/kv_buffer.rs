//! `KvBuffer` (a KV cache appended in place) against concatenated tensors:
//! its contents, kept rows, and attention read in place from it, bit for
//! bit the attention on the concatenated tensors.

use kaiyuan_tensor::{
    AttentionOptions, DType, KvBuffer, Tensor, scaled_dot_product_attention,
    scaled_dot_product_attention_cached,
};
use proptest::prelude::*;

fn random(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed)
        .unwrap()
        .cast(dtype)
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.cast(DType::F64)
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_equal_concatenation_and_attention_reads_them_in_place(
        b in 1usize..3,
        hkv in 1usize..3,
        group in 1usize..3,
        d in prop_oneof![Just(1usize), Just(4), Just(8), Just(13)],
        chunks in prop::collection::vec(1usize..6, 1..6),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::F16), Just(DType::BF16)],
        window in prop_oneof![Just(None), Just(Some(2usize)), Just(Some(5))],
        masked in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut k_buf: Option<KvBuffer> = None;
        let mut v_buf: Option<KvBuffer> = None;
        let mut k_all: Option<Tensor> = None;
        let mut v_all: Option<Tensor> = None;
        for (i, &t) in chunks.iter().enumerate() {
            let s = seed.wrapping_add(10 * i as u64);
            let k = random(&[b, hkv, t, d], dtype, s);
            let v = random(&[b, hkv, t, d + 1], dtype, s + 1);
            match (&mut k_buf, &mut v_buf) {
                (Some(kb), Some(vb)) => {
                    kb.append(&k).unwrap();
                    vb.append(&v).unwrap();
                }
                _ => {
                    k_buf = Some(KvBuffer::new(&k).unwrap());
                    v_buf = Some(KvBuffer::new(&v).unwrap());
                    // Before an append it holds the tensor as it is.
                    let held = k_buf.as_ref().unwrap().byte_size();
                    prop_assert_eq!(held, k.elem_count() * dtype.size_in_bytes());
                }
            }
            k_all = Some(match k_all {
                Some(prev) => Tensor::concat(&[&prev, &k], 2).unwrap(),
                None => k,
            });
            v_all = Some(match v_all {
                Some(prev) => Tensor::concat(&[&prev, &v], 2).unwrap(),
                None => v,
            });
            let (kb, vb) = (k_buf.as_ref().unwrap(), v_buf.as_ref().unwrap());
            let (ka, va) = (k_all.as_ref().unwrap(), v_all.as_ref().unwrap());
            prop_assert_eq!(kb.shape(), [b, hkv, ka.shape()[2], d]);
            prop_assert!(kb.capacity() >= kb.len());
            prop_assert_eq!(bits(&kb.to_tensor()), bits(ka));
            prop_assert_eq!(kb.to_tensor().dtype(), dtype);
            // This chunk's queries attend to everything so far.
            let tk = ka.shape()[2];
            let q = random(&[b, hkv * group, t, d], dtype, s + 2);
            let mask = random(&[b, 1, t, tk], dtype, s + 3);
            let opts = AttentionOptions {
                causal: true,
                sliding_window: window,
                scale: None,
                mask: masked.then_some(&mask),
            };
            let cached = scaled_dot_product_attention_cached(&q, kb, vb, &opts).unwrap();
            let plain = scaled_dot_product_attention(&q, ka, va, &opts).unwrap();
            prop_assert_eq!(cached.shape(), plain.shape());
            prop_assert_eq!(bits(&cached), bits(&plain));
        }
        // Keeping rows equals narrowing the concatenation.
        let (mut kb, ka) = (k_buf.unwrap(), k_all.unwrap());
        let rows: Vec<usize> = (0..b).rev().collect();
        kb.retain_rows(&rows).unwrap();
        let parts: Vec<Tensor> = rows.iter().map(|&r| ka.narrow(0, r, 1).unwrap()).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        prop_assert_eq!(bits(&kb.to_tensor()), bits(&Tensor::concat(&refs, 0).unwrap()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// f32 keys and values stored as f16 or bf16 (llama.cpp's
    /// `--cache-type-k f16`): the buffer holds each value rounded once, and
    /// attention read in place equals attention on the rounded tensors, bit
    /// for bit, before and after appends, with room reserved or not.
    #[test]
    fn narrower_storage_holds_the_rounded_values(
        hkv in 1usize..3,
        group in 1usize..4,
        d in prop_oneof![Just(4usize), Just(8), Just(13), Just(64)],
        chunks in prop::collection::vec(1usize..5, 1..5),
        storage in prop_oneof![Just(DType::F16), Just(DType::BF16)],
        reserve in 0usize..24,
        seed in any::<u64>(),
    ) {
        let round = |t: &Tensor| t.cast(storage).unwrap().cast(DType::F32).unwrap();
        let mut bufs: Option<(KvBuffer, KvBuffer)> = None;
        let mut all: Option<(Tensor, Tensor)> = None;
        for (i, &t) in chunks.iter().enumerate() {
            let s = seed.wrapping_add(10 * i as u64);
            let k = random(&[1, hkv, t, d], DType::F32, s).affine(8.0, 0.0).unwrap();
            let v = random(&[1, hkv, t, d], DType::F32, s + 1);
            match &mut bufs {
                Some((kb, vb)) => {
                    kb.append(&k).unwrap();
                    vb.append(&v).unwrap();
                }
                None => {
                    let kb = KvBuffer::with_storage(&k, reserve, storage).unwrap();
                    let vb = KvBuffer::with_storage(&v, reserve, storage).unwrap();
                    prop_assert_eq!(kb.storage_dtype(), storage);
                    prop_assert_eq!(kb.byte_size(), hkv * reserve.max(t) * d * 2);
                    bufs = Some((kb, vb));
                }
            }
            all = Some(match all {
                Some((ka, va)) => (
                    Tensor::concat(&[&ka, &round(&k)], 2).unwrap(),
                    Tensor::concat(&[&va, &round(&v)], 2).unwrap(),
                ),
                None => (round(&k), round(&v)),
            });
            let ((kb, vb), (ka, va)) = (bufs.as_ref().unwrap(), all.as_ref().unwrap());
            prop_assert_eq!(kb.to_tensor().dtype(), DType::F32);
            prop_assert_eq!(bits(&kb.to_tensor()), bits(ka));
            prop_assert_eq!(bits(&vb.to_tensor()), bits(va));
            let tk = ka.shape()[2];
            for tq in [1, t.min(tk)] {
                let q = random(&[1, hkv * group, tq, d], DType::F32, s + 2);
                let opts = AttentionOptions { causal: true, ..Default::default() };
                let cached = scaled_dot_product_attention_cached(&q, kb, vb, &opts).unwrap();
                let plain = scaled_dot_product_attention(&q, ka, va, &opts).unwrap();
                prop_assert_eq!(bits(&cached), bits(&plain));
            }
        }
    }
}

/// Storage that cannot hold the values is refused.
#[test]
fn storage_must_hold_the_values() {
    let f64s = random(&[1, 1, 2, 4], DType::F64, 1);
    let f32s = random(&[1, 1, 2, 4], DType::F32, 1);
    for (first, storage) in [
        (&f64s, DType::F32),
        (&f64s, DType::F16),
        (&f32s, DType::F64),
        (&f32s, DType::U32),
    ] {
        let err = KvBuffer::with_storage(first, 4, storage)
            .unwrap_err()
            .to_string();
        assert!(err.contains(storage.name()), "{err}");
    }
    // An f16 model's cache holds f32 unless told to hold f16, which keeps
    // its values exactly in half the bytes.
    let f16s = random(&[1, 1, 2, 4], DType::F16, 1);
    let kb = KvBuffer::with_capacity(&f16s, 8).unwrap();
    assert_eq!(
        (kb.storage_dtype(), kb.byte_size()),
        (DType::F32, 8 * 4 * 4)
    );
    let kb = KvBuffer::with_storage(&f16s, 8, DType::F16).unwrap();
    assert_eq!(
        (kb.storage_dtype(), kb.byte_size()),
        (DType::F16, 8 * 4 * 2)
    );
    assert_eq!(bits(&kb.to_tensor()), bits(&f16s));
}

/// Wrong shapes, dtypes and rows are refused, naming what is wrong.
#[test]
fn bad_appends_are_refused() {
    let mut kb = KvBuffer::new(&random(&[1, 2, 3, 4], DType::F32, 1)).unwrap();
    let says = |e: kaiyuan_tensor::TensorError, needle: &str| {
        let msg = e.to_string();
        assert!(msg.contains(needle), "{msg}");
    };
    says(
        kb.append(&random(&[1, 3, 1, 4], DType::F32, 2))
            .unwrap_err(),
        "B, H and D",
    );
    says(
        kb.append(&random(&[1, 2, 1, 4], DType::F64, 2))
            .unwrap_err(),
        "f64",
    );
    says(
        kb.append(&random(&[2, 4], DType::F32, 2)).unwrap_err(),
        "rank 4",
    );
    says(kb.retain_rows(&[1]).unwrap_err(), "row 1 of a batch of 1");
    says(
        KvBuffer::new(&Tensor::zeros(&[1, 1, 1, 1], DType::U32).unwrap()).unwrap_err(),
        "u32",
    );
    assert_eq!(kb.len(), 3, "a refused append changes nothing");
    let q = random(&[1, 2, 1, 5], DType::F32, 3);
    let opts = AttentionOptions::default();
    assert!(scaled_dot_product_attention_cached(&q, &kb, &kb, &opts).is_err());
}
