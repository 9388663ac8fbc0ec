//! Knowledge distillation (Hinton et al. 2015): the student matches the
//! teacher's distribution softened by a temperature T.

use kaiyuan_tensor::Tensor;

use crate::{Result, TrainError};

/// `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over rows
/// (PyTorch's `kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") · T²`).
/// Shapes: student and teacher logits (N, V). The teacher's side records no
/// gradient.
///
/// ```
/// use kaiyuan_tensor::Tensor;
/// use kaiyuan_train::distill::distillation_loss;
/// let s = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
/// let same = distillation_loss(&s, &s, 2.0).unwrap().to_scalar::<f32>().unwrap();
/// assert!(same.abs() < 1e-6);
/// ```
pub fn distillation_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if student.shape() != teacher.shape() || student.rank() != 2 {
        return Err(TrainError::invalid(
            "distill.teacher",
            format!(
                "teacher logits {:?} do not match the student's {:?} (the models must share a vocabulary)",
                teacher.shape(),
                student.shape()
            ),
        ));
    }
    let inv = 1.0 / temperature;
    let log_s = student.affine(inv, 0.0)?.log_softmax(-1)?;
    let log_t = teacher.detach().affine(inv, 0.0)?.log_softmax(-1)?;
    let p_t = log_t.exp()?;
    let kl = p_t
        .mul(&log_t.sub(&log_s)?)?
        .sum(-1, false)?
        .mean(0, false)?;
    Ok(kl.affine(temperature * temperature, 0.0)?)
}
