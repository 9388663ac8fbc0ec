//! Bad shapes, axes, dtypes and ids give errors that name the op and the
//! shapes — never panics. One test per op.

use kaiyuan_tensor::{
    AttentionOptions, DType, RotaryEmbedding, RotaryLayout, Tensor, TensorError,
    scaled_dot_product_attention,
};

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32).unwrap()
}

/// The error's message mentions every needle.
fn says(err: TensorError, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

#[test]
fn construction() {
    says(
        Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).unwrap_err(),
        &["from_vec", "5 elements", "[2, 3]"],
    );
    says(
        Tensor::from_vec(vec![1.0f32; 5], &[usize::MAX, 2]).unwrap_err(),
        &["from_vec"],
    );
    says(
        t(&[2, 3]).to_vec::<f64>().unwrap_err(),
        &["to_vec", "f32", "f64"],
    );
    says(t(&[2, 3]).to_scalar::<f32>().unwrap_err(), &["to_scalar"]);
}

#[test]
fn matmul() {
    says(
        t(&[2, 3]).matmul(&t(&[4, 5])).unwrap_err(),
        &[
            "matmul",
            "[2, 3]",
            "[4, 5]",
            "inner dimensions differ (3 vs 4)",
        ],
    );
    says(
        t(&[3]).matmul(&t(&[3, 2])).unwrap_err(),
        &["matmul", "rank ≥ 2", "[3]"],
    );
    says(
        t(&[2, 2, 3]).matmul(&t(&[3, 3, 4])).unwrap_err(),
        &["matmul", "batch axes"],
    );
    let h = Tensor::zeros(&[3, 4], DType::F16).unwrap();
    says(
        t(&[2, 3]).matmul(&h).unwrap_err(),
        &["matmul", "f32", "f16"],
    );
    let ids = Tensor::zeros(&[3, 3], DType::U32).unwrap();
    says(ids.matmul(&ids).unwrap_err(), &["matmul", "u32"]);
}

#[test]
fn broadcasting_arithmetic() {
    says(
        t(&[2, 3]).add(&t(&[4])).unwrap_err(),
        &["add", "[2, 3]", "[4]", "3 vs 4"],
    );
    says(
        t(&[2, 3]).mul(&t(&[3, 3])).unwrap_err(),
        &["mul", "[2, 3]", "[3, 3]"],
    );
    says(
        t(&[2])
            .sub(&Tensor::zeros(&[2], DType::F64).unwrap())
            .unwrap_err(),
        &["sub", "f32", "f64"],
    );
    says(
        Tensor::zeros(&[2], DType::I64)
            .unwrap()
            .div(&Tensor::zeros(&[2], DType::I64).unwrap())
            .unwrap_err(),
        &["div", "i64"],
    );
    says(
        Tensor::zeros(&[2], DType::U32)
            .unwrap()
            .affine(1.0, 0.0)
            .unwrap_err(),
        &["affine", "u32"],
    );
    says(
        Tensor::zeros(&[2], DType::U32).unwrap().silu().unwrap_err(),
        &["silu", "u32"],
    );
}

#[test]
fn reductions() {
    says(
        t(&[2, 3]).sum(2, false).unwrap_err(),
        &["sum", "axis 2", "[2, 3]"],
    );
    says(
        t(&[2, 3]).mean(-3, false).unwrap_err(),
        &["mean", "axis -3"],
    );
    says(t(&[2, 3]).max(5, true).unwrap_err(), &["max", "axis 5"]);
    says(
        t(&[2, 0]).argmax(1, false).unwrap_err(),
        &["argmax", "empty"],
    );
}

#[test]
fn softmax_and_norms() {
    says(t(&[2, 3]).softmax(2).unwrap_err(), &["softmax", "axis 2"]);
    says(
        t(&[2, 3]).log_softmax(-4).unwrap_err(),
        &["log_softmax", "axis -4"],
    );
    says(
        t(&[2, 3]).rms_norm(&t(&[4]), 1e-5).unwrap_err(),
        &["rms_norm", "[2, 3]", "[4]", "weight"],
    );
    says(
        t(&[]).rms_norm(&t(&[1]), 1e-5).unwrap_err(),
        &["rms_norm", "rank ≥ 1"],
    );
    says(
        t(&[2, 3])
            .layer_norm(None, Some(&t(&[2])), 1e-5)
            .unwrap_err(),
        &["layer_norm", "bias", "[2]"],
    );
    let w16 = Tensor::zeros(&[3], DType::F16).unwrap();
    says(
        t(&[2, 3]).layer_norm(Some(&w16), None, 1e-5).unwrap_err(),
        &["layer_norm", "f16"],
    );
}

#[test]
fn rotary() {
    says(
        RotaryEmbedding::new(7, 10_000.0, RotaryLayout::HalfSplit).unwrap_err(),
        &["rotary", "even"],
    );
    says(
        RotaryEmbedding::new(8, -1.0, RotaryLayout::Interleaved).unwrap_err(),
        &["rotary", "base"],
    );
    says(
        RotaryEmbedding::from_inv_freq(vec![1.0; 3], 8, RotaryLayout::Interleaved).unwrap_err(),
        &["rotary", "3 frequencies"],
    );
    let rope = RotaryEmbedding::new(8, 10_000.0, RotaryLayout::HalfSplit).unwrap();
    says(
        rope.apply(&t(&[1, 2, 3, 6]), 0).unwrap_err(),
        &["rotary", "head dim 6", "rotary_dim 8", "[1, 2, 3, 6]"],
    );
    says(
        rope.apply(&t(&[8]), 0).unwrap_err(),
        &["rotary", "rank ≥ 2", "[8]"],
    );
    says(
        rope.apply_at(&t(&[1, 1, 3, 8]), &[0, 1]).unwrap_err(),
        &["rotary", "2 positions", "T = 3"],
    );
}

#[test]
fn attention() {
    let o = AttentionOptions::default();
    says(
        scaled_dot_product_attention(&t(&[1, 6, 4, 8]), &t(&[1, 4, 4, 8]), &t(&[1, 4, 4, 8]), &o)
            .unwrap_err(),
        &["attention", "6 query heads", "4 key/value heads"],
    );
    says(
        scaled_dot_product_attention(&t(&[6, 4, 8]), &t(&[1, 4, 4, 8]), &t(&[1, 4, 4, 8]), &o)
            .unwrap_err(),
        &["attention", "rank 4 query", "[6, 4, 8]"],
    );
    says(
        scaled_dot_product_attention(&t(&[1, 4, 4, 8]), &t(&[1, 4, 4, 7]), &t(&[1, 4, 4, 8]), &o)
            .unwrap_err(),
        &["attention", "[1, 4, 4, 8]", "[1, 4, 4, 7]", "B and D"],
    );
    says(
        scaled_dot_product_attention(&t(&[1, 4, 4, 8]), &t(&[1, 4, 4, 8]), &t(&[1, 4, 5, 8]), &o)
            .unwrap_err(),
        &["attention", "key and value"],
    );
    let causal = AttentionOptions { causal: true, ..o };
    says(
        scaled_dot_product_attention(
            &t(&[1, 4, 5, 8]),
            &t(&[1, 4, 4, 8]),
            &t(&[1, 4, 4, 8]),
            &causal,
        )
        .unwrap_err(),
        &["attention", "Tq ≤ Tk"],
    );
    let zero_window = AttentionOptions {
        sliding_window: Some(0),
        ..o
    };
    says(
        scaled_dot_product_attention(
            &t(&[1, 4, 4, 8]),
            &t(&[1, 4, 4, 8]),
            &t(&[1, 4, 4, 8]),
            &zero_window,
        )
        .unwrap_err(),
        &["attention", "sliding window"],
    );
    let bad_mask = t(&[1, 1, 3, 4]);
    let masked = AttentionOptions {
        mask: Some(&bad_mask),
        ..o
    };
    says(
        scaled_dot_product_attention(
            &t(&[1, 4, 4, 8]),
            &t(&[1, 4, 4, 8]),
            &t(&[1, 4, 4, 8]),
            &masked,
        )
        .unwrap_err(),
        &["attention", "[1, 1, 3, 4]"],
    );
}

#[test]
fn embedding() {
    let table = t(&[5, 3]);
    let ids = Tensor::from_vec(vec![1u32, 5], &[2]).unwrap();
    says(
        table.embedding(&ids).unwrap_err(),
        &["embedding", "id 5", "position 1", "5 rows"],
    );
    let neg = Tensor::from_vec(vec![-1i64], &[1]).unwrap();
    says(table.embedding(&neg).unwrap_err(), &["embedding", "id -1"]);
    says(
        table.embedding(&t(&[2])).unwrap_err(),
        &["embedding", "f32", "u32 or i64"],
    );
    says(
        t(&[5]).embedding(&ids).unwrap_err(),
        &["embedding", "rank 2", "[5]"],
    );
}

#[test]
fn views() {
    let x = t(&[2, 3, 4]);
    says(
        x.reshape(&[5, 5]).unwrap_err(),
        &["reshape", "[2, 3, 4]", "[5, 5]"],
    );
    says(
        x.transpose(0, 3).unwrap_err(),
        &["transpose", "axis 3", "[2, 3, 4]"],
    );
    says(
        x.permute(&[0, 0, 1]).unwrap_err(),
        &["permute", "[0, 0, 1]"],
    );
    says(x.permute(&[0, 1]).unwrap_err(), &["permute"]);
    says(
        x.narrow(1, 2, 2).unwrap_err(),
        &["narrow", "2..4", "axis 1", "length 3", "[2, 3, 4]"],
    );
    says(x.narrow(1, usize::MAX, 2).unwrap_err(), &["narrow"]);
    says(x.narrow(3, 0, 1).unwrap_err(), &["narrow", "axis 3"]);
    says(
        x.split(2, &[1, 2]).unwrap_err(),
        &["split", "[1, 2]", "length 4"],
    );
    says(x.squeeze(0).unwrap_err(), &["squeeze", "axis 0", "not 1"]);
    says(x.unsqueeze(4).unwrap_err(), &["unsqueeze", "axis 4"]);
    says(
        x.broadcast_as(&[2, 5, 4]).unwrap_err(),
        &["broadcast_as", "[2, 3, 4]", "[2, 5, 4]"],
    );
    says(
        x.t().unwrap().t().unwrap().dim(7).unwrap_err(),
        &["dim", "axis 7"],
    );
    says(t(&[3]).t().unwrap_err(), &["t", "rank ≥ 2"]);
}

#[test]
fn concat() {
    says(
        Tensor::concat(&[], 0).unwrap_err(),
        &["concat", "no tensors"],
    );
    says(
        Tensor::concat(&[&t(&[2, 3]), &t(&[3, 3])], 1).unwrap_err(),
        &["concat", "[2, 3]", "[3, 3]", "all axes but 1"],
    );
    says(
        Tensor::concat(&[&t(&[2, 3]), &t(&[2, 3, 1])], 0).unwrap_err(),
        &["concat", "[2, 3, 1]"],
    );
    let h = Tensor::zeros(&[2, 3], DType::BF16).unwrap();
    says(
        Tensor::concat(&[&t(&[2, 3]), &h], 0).unwrap_err(),
        &["concat", "f32", "bf16"],
    );
    says(
        Tensor::concat(&[&t(&[2, 3])], 2).unwrap_err(),
        &["concat", "axis 2"],
    );
}
