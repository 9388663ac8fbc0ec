//! Rényi-DP accounting for DP-SGD with the Poisson-subsampled Gaussian
//! mechanism, numerically matching Opacus' RDP accountant (opacus 1.6.0,
//! `opacus/accountants/analysis/rdp.py` and `RDPAccountant`).
//!
//! One DP-SGD step samples every example with probability `q` (the
//! *sampling rate*), clips per-example gradients to L2 norm 1 and adds
//! Gaussian noise of standard deviation `σ` (the *noise multiplier*). Its
//! Rényi divergence of order `α` is bounded by `ln(A_α) / (α − 1)` (Mironov,
//! Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", arXiv:1908.10530, §3.3), with
//!
//! ```text
//! A_α = E_{z ~ μ0} [ ((1 − q) + q · μ1(z) / μ0(z))^α ],  μ0 = N(0, σ²), μ1 = N(1, σ²).
//! ```
//!
//! * Integer `α`: the binomial expansion gives the finite sum
//!   `A_α = Σ_{k=0..α} C(α, k) q^k (1 − q)^(α−k) exp((k² − k) / (2σ²))`,
//!   summed in log space.
//! * Fractional `α`: the integral is split at
//!   `z0 = σ² ln(1/q − 1) + 1/2` into two generalised-binomial series whose
//!   terms carry `½·erfc` factors; the series run until both terms drop below
//!   `e^−30` (the same stopping rule as Opacus and TF Privacy).
//!
//! RDP composes additively over steps, and an RDP curve is turned into
//! `(ε, δ)`-DP with Balle et al., "Hypothesis testing interpretations and Rényi
//! differential privacy" (AISTATS 2020, arXiv:1905.09982, Theorem 21):
//!
//! ```text
//! ε = min_α [ rdp(α) − (ln δ + ln α) / (α − 1) + ln((α − 1) / α) ].
//! ```
//!
//! Special cases follow Opacus: `q = 0` gives RDP 0, `q = 1` gives the plain
//! Gaussian mechanism `α / (2σ²)`, and `σ = +∞` gives 0. Like Opacus, ε is not
//! clamped at 0 (with the default orders it is always positive).
//!
//! Everything is computed in the same order of floating-point operations as
//! Opacus (including its `e^−30` truncation and the order of summation over
//! runs of steps), so the results agree with it far below any meaningful
//! precision: on the committed fixture `fixtures/train/dp_rdp.json` (made by
//! `fixtures/train/make_dp_reference.py`, checked to 1e-9 relative) ε differs
//! by at most ~3e-12 and per-order RDP by ~6e-11 relative. What remains is
//! rounding: SciPy's binomial coefficients differ from the recurrence used
//! here in the last bit, and Opacus' log-space subtraction cancels badly when
//! `ln A_α` is small, so its own answers carry noise of that size.
//!
//! ```
//! use kaiyuan_train::privacy::RdpAccountant;
//!
//! let mut accountant = RdpAccountant::new();
//! for _ in 0..10_000 {
//!     accountant.step(0.01, 1.1)?;
//! }
//! let (epsilon, order) = accountant.epsilon(1e-5)?;
//! assert!((epsilon - 5.632).abs() < 1e-3);
//! assert_eq!(order, 4.7);
//! # Ok::<(), kaiyuan_train::TrainError>(())
//! ```

use crate::{Result, TrainError};
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, LN_2, SQRT_2};

/// Opacus' default RDP orders (`RDPAccountant.DEFAULT_ALPHAS`):
/// 1.1, 1.2, …, 10.9 (step 0.1), then the integers 12, 13, …, 63.
#[rustfmt::skip]
pub const DEFAULT_ORDERS: &[f64] = &[
    1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0,
    2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0,
    3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0,
    4.1, 4.2, 4.3, 4.4, 4.5, 4.6, 4.7, 4.8, 4.9, 5.0,
    5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 6.0,
    6.1, 6.2, 6.3, 6.4, 6.5, 6.6, 6.7, 6.8, 6.9, 7.0,
    7.1, 7.2, 7.3, 7.4, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0,
    8.1, 8.2, 8.3, 8.4, 8.5, 8.6, 8.7, 8.8, 8.9, 9.0,
    9.1, 9.2, 9.3, 9.4, 9.5, 9.6, 9.7, 9.8, 9.9, 10.0,
    10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7, 10.8, 10.9,
    12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0,
    22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0,
    32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0, 40.0, 41.0,
    42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0,
    52.0, 53.0, 54.0, 55.0, 56.0, 57.0, 58.0, 59.0, 60.0, 61.0,
    62.0, 63.0,
];

/// The largest RDP order accepted. The cost of one order grows linearly with
/// it (the integer-order sum has `α + 1` terms), so orders are capped well
/// above any useful value (TF Privacy's largest customary order is 1024).
pub const MAX_ORDER: f64 = 1.0e6;

/// Stop a fractional-order series that has not converged after this many
/// terms (the slowest realistic case, q = 0.5 and σ = 500, needs ~33 000).
const MAX_SERIES_TERMS: u64 = 10_000_000;

/// Per-step RDP of the Poisson-subsampled Gaussian mechanism, times `steps`,
/// at every order of `orders` (Opacus' `compute_rdp`).
///
/// `sampling_rate` is the probability `q ∈ [0, 1]` that an example is in a
/// batch; `noise_multiplier` is `σ > 0`, the noise standard deviation over
/// the clipping norm (`+∞` is allowed and means no privacy loss). Orders must
/// be finite, in (1, [`MAX_ORDER`]]; integer-valued orders use the exact
/// binomial sum, the others the two-series expansion. The result has one
/// value per order, each `≥ 0` up to rounding, `+∞` where the bound is
/// unusable (σ so small that σ² underflows, or a non-finite intermediate).
/// `steps = 0` gives all zeros.
///
/// # Errors
///
/// [`TrainError::InvalidArgument`] naming `sampling_rate` (outside `[0, 1]`
/// or NaN), `noise_multiplier` (`≤ 0` or NaN) or `orders` (empty, an order
/// outside (1, [`MAX_ORDER`]] or NaN, or — never seen in practice — a
/// fractional-order series that fails to converge).
///
/// ```
/// use kaiyuan_train::privacy::{DEFAULT_ORDERS, rdp_subsampled_gaussian};
///
/// let rdp = rdp_subsampled_gaussian(0.01, 1.1, 10_000, DEFAULT_ORDERS)?;
/// assert_eq!(rdp.len(), DEFAULT_ORDERS.len());
/// // Without subsampling it is the Gaussian mechanism: α / (2σ²) per step.
/// let full = rdp_subsampled_gaussian(1.0, 2.0, 3, &[4.0])?;
/// assert_eq!(full, vec![3.0 * 4.0 / 8.0]);
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
pub fn rdp_subsampled_gaussian(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    orders: &[f64],
) -> Result<Vec<f64>> {
    check_mechanism(sampling_rate, noise_multiplier)?;
    check_orders(orders)?;
    if steps == 0 {
        return Ok(vec![0.0; orders.len()]);
    }
    let per_step = rdp_per_step(sampling_rate, noise_multiplier, orders)?;
    Ok(per_step.iter().map(|r| r * steps as f64).collect())
}

/// Converts an RDP curve into `(ε, best order)` for the target `delta`
/// (Opacus' `get_privacy_spent`, Balle et al. 2020, Theorem 21):
/// `ε = min_α rdp(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)`, the first
/// minimising order on ties.
///
/// `rdp[i]` is the RDP at `orders[i]`; `+∞` is allowed (that order gives no
/// bound; if every value is `+∞` the result is `(+∞, orders[0])`). The
/// minimum is taken over the given orders only; like Opacus, ε is not
/// clamped at 0.
///
/// # Errors
///
/// [`TrainError::InvalidArgument`] naming `orders` (empty, or an order
/// outside (1, [`MAX_ORDER`]] or NaN), `rdp` (a length different from
/// `orders`, a NaN or `−∞`) or `delta` (outside `(0, 1)` or NaN).
///
/// ```
/// use kaiyuan_train::privacy::epsilon_from_rdp;
///
/// let (eps, order) = epsilon_from_rdp(&[2.0, 4.0, 8.0], &[0.1, 0.3, 1.0], 1e-5)?;
/// assert_eq!(order, 8.0);
/// assert!((eps - (1.0 - (1e-5f64.ln() + 8f64.ln()) / 7.0 + (7.0f64 / 8.0).ln())).abs() < 1e-12);
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64)> {
    check_orders(orders)?;
    if rdp.len() != orders.len() {
        return Err(TrainError::invalid(
            "rdp",
            format!(
                "has {} values but there are {} orders",
                rdp.len(),
                orders.len()
            ),
        ));
    }
    if let Some(bad) = rdp.iter().find(|r| r.is_nan() || **r == f64::NEG_INFINITY) {
        return Err(TrainError::invalid(
            "rdp",
            format!("values must not be NaN or -inf, got {bad}"),
        ));
    }
    check_delta(delta)?;
    let log_delta = delta.ln();
    let mut best = (f64::INFINITY, orders[0]);
    for (index, (&alpha, &r)) in orders.iter().zip(rdp).enumerate() {
        let eps = r - (log_delta + alpha.ln()) / (alpha - 1.0) + ((alpha - 1.0) / alpha).ln();
        if index == 0 || eps < best.0 {
            best = (eps, alpha);
        }
    }
    Ok(best)
}

/// Accumulates the RDP of DP-SGD steps whose sampling rate and noise
/// multiplier may change from step to step, like Opacus' `RDPAccountant`.
///
/// Consecutive steps with equal parameters form one run; the RDP of a run is
/// computed once, when it starts, and the runs are summed in order, which
/// reproduces Opacus' arithmetic exactly. So a step with the previous step's
/// parameters costs nothing, and one with new parameters costs one RDP
/// evaluation (about a millisecond for the default orders).
///
/// ```
/// use kaiyuan_train::privacy::RdpAccountant;
///
/// let mut accountant = RdpAccountant::new();
/// assert_eq!(accountant.epsilon(1e-5)?, (0.0, 0.0)); // nothing spent yet
/// for step in 0..1000 {
///     let noise = if step < 500 { 1.1 } else { 0.9 };
///     accountant.step(0.01, noise)?;
/// }
/// assert_eq!(accountant.steps(), 1000);
/// let (epsilon, _order) = accountant.epsilon(1e-5)?;
/// assert!(epsilon > 0.0 && epsilon.is_finite());
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    /// Sum of the RDP of the finished runs, per order.
    closed: Vec<f64>,
    /// The run the next step with the same parameters extends.
    current: Option<Run>,
    steps: u64,
}

/// Consecutive steps with one sampling rate and noise multiplier.
#[derive(Debug, Clone)]
struct Run {
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    rdp_per_step: Vec<f64>,
}

impl Run {
    /// The run's RDP, `rdp_per_step · steps`, added to `total`.
    fn add_to(&self, total: &mut [f64]) {
        for (t, r) in total.iter_mut().zip(&self.rdp_per_step) {
            *t += r * self.steps as f64;
        }
    }
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant over [`DEFAULT_ORDERS`] with no steps recorded.
    ///
    /// ```
    /// use kaiyuan_train::privacy::{DEFAULT_ORDERS, RdpAccountant};
    ///
    /// assert_eq!(RdpAccountant::new().orders(), DEFAULT_ORDERS);
    /// ```
    pub fn new() -> Self {
        Self {
            orders: DEFAULT_ORDERS.to_vec(),
            closed: vec![0.0; DEFAULT_ORDERS.len()],
            current: None,
            steps: 0,
        }
    }

    /// An accountant over the given orders, with no steps recorded.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming `orders` when they are empty or
    /// one is outside (1, [`MAX_ORDER`]] or NaN.
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// let accountant = RdpAccountant::with_orders(&[1.5, 2.0, 4.0, 8.0, 16.0, 32.0])?;
    /// assert_eq!(accountant.orders().len(), 6);
    /// assert!(RdpAccountant::with_orders(&[1.0]).is_err());
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn with_orders(orders: &[f64]) -> Result<Self> {
        check_orders(orders)?;
        Ok(Self {
            orders: orders.to_vec(),
            closed: vec![0.0; orders.len()],
            current: None,
            steps: 0,
        })
    }

    /// Records one step with sampling rate `q ∈ [0, 1]` and noise multiplier
    /// `σ > 0` (`+∞` allowed).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming `sampling_rate` or
    /// `noise_multiplier` when out of range (as [`rdp_subsampled_gaussian`]),
    /// or `steps` past `u64::MAX` steps. On error nothing is recorded.
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// let mut accountant = RdpAccountant::new();
    /// accountant.step(0.004, 0.8)?;
    /// assert!(accountant.step(1.5, 0.8).is_err());
    /// assert_eq!(accountant.steps(), 1);
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn step(&mut self, sampling_rate: f64, noise_multiplier: f64) -> Result<()> {
        check_mechanism(sampling_rate, noise_multiplier)?;
        let steps = self
            .steps
            .checked_add(1)
            .ok_or_else(|| TrainError::invalid("steps", "more than u64::MAX steps recorded"))?;
        match &mut self.current {
            Some(run)
                if run.sampling_rate == sampling_rate
                    && run.noise_multiplier == noise_multiplier =>
            {
                run.steps += 1;
            }
            _ => {
                let rdp_per_step = rdp_per_step(sampling_rate, noise_multiplier, &self.orders)?;
                let next = Run {
                    sampling_rate,
                    noise_multiplier,
                    steps: 1,
                    rdp_per_step,
                };
                if let Some(finished) = self.current.replace(next) {
                    finished.add_to(&mut self.closed);
                }
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// The number of steps recorded.
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// assert_eq!(RdpAccountant::new().steps(), 0);
    /// ```
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The RDP orders this accountant tracks.
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// assert_eq!(RdpAccountant::with_orders(&[2.0, 3.5])?.orders(), &[2.0, 3.5]);
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The RDP accumulated so far, one value per order (all zeros before the
    /// first step).
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// let mut accountant = RdpAccountant::with_orders(&[2.0, 8.0])?;
    /// accountant.step(1.0, 2.0)?;
    /// accountant.step(1.0, 2.0)?;
    /// assert_eq!(accountant.rdp(), vec![2.0 * 2.0 / 8.0, 2.0 * 8.0 / 8.0]);
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn rdp(&self) -> Vec<f64> {
        let mut total = self.closed.clone();
        if let Some(run) = &self.current {
            run.add_to(&mut total);
        }
        total
    }

    /// `(ε, best order)` spent so far for the target `delta ∈ (0, 1)`, as
    /// [`epsilon_from_rdp`] on [`RdpAccountant::rdp`]. Before the first step
    /// it is `(0.0, 0.0)`, as in Opacus.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming `delta` when it is outside
    /// `(0, 1)` or NaN.
    ///
    /// ```
    /// use kaiyuan_train::privacy::RdpAccountant;
    ///
    /// let mut accountant = RdpAccountant::new();
    /// accountant.step(0.01, 1.1)?;
    /// let (eps, _) = accountant.epsilon(1e-5)?;
    /// assert!(eps > 0.0);
    /// assert!(accountant.epsilon(0.0).is_err());
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64)> {
        check_delta(delta)?;
        if self.current.is_none() {
            return Ok((0.0, 0.0));
        }
        epsilon_from_rdp(&self.orders, &self.rdp(), delta)
    }
}

fn check_mechanism(sampling_rate: f64, noise_multiplier: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&sampling_rate) {
        return Err(TrainError::invalid(
            "sampling_rate",
            format!("must be in [0, 1], got {sampling_rate}"),
        ));
    }
    // +inf is allowed (no privacy loss).
    if noise_multiplier.is_nan() || noise_multiplier <= 0.0 {
        return Err(TrainError::invalid(
            "noise_multiplier",
            format!("must be > 0 (or +inf), got {noise_multiplier}"),
        ));
    }
    Ok(())
}

fn check_orders(orders: &[f64]) -> Result<()> {
    if orders.is_empty() {
        return Err(TrainError::invalid("orders", "no RDP orders given"));
    }
    if let Some(bad) = orders.iter().find(|a| !(**a > 1.0 && **a <= MAX_ORDER)) {
        return Err(TrainError::invalid(
            "orders",
            format!("every order must be in (1, {MAX_ORDER}], got {bad}"),
        ));
    }
    Ok(())
}

fn check_delta(delta: f64) -> Result<()> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(TrainError::invalid(
            "delta",
            format!("must be in (0, 1), got {delta}"),
        ));
    }
    Ok(())
}

/// Per-step RDP at every order; inputs already checked.
fn rdp_per_step(q: f64, sigma: f64, orders: &[f64]) -> Result<Vec<f64>> {
    orders
        .iter()
        .map(|&alpha| rdp_at_order(q, sigma, alpha))
        .collect()
}

/// Per-step RDP at one order (Opacus' `_compute_rdp`); inputs already checked.
fn rdp_at_order(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    if q == 0.0 || sigma == f64::INFINITY {
        return Ok(0.0);
    }
    let sigma2 = sigma * sigma;
    if sigma2 == 0.0 {
        // σ² underflows: as Opacus' σ = 0, no privacy at all.
        return Ok(f64::INFINITY);
    }
    if q == 1.0 {
        return Ok(alpha / (2.0 * sigma2));
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma2, alpha)
    } else {
        log_a_fractional(q, sigma, alpha)?
    };
    let rdp = log_a / (alpha - 1.0);
    // A NaN can only come from overflowing intermediates (σ near the
    // underflow limit); report "no bound at this order" rather than NaN.
    Ok(if rdp.is_nan() { f64::INFINITY } else { rdp })
}

/// `ln A_α` for integer `α`, `0 < q < 1`:
/// `A_α = Σ_{k=0..α} C(α, k) q^k (1 − q)^(α−k) exp((k² − k) / (2σ²))`.
fn log_a_integer(q: f64, sigma2: f64, alpha: f64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (1.0 - q).ln();
    let mut binomial = Binomials::new(alpha);
    let mut log_a = f64::NEG_INFINITY;
    let mut k = 0.0;
    while k <= alpha {
        let log_coef = binomial.ln_abs() + k * ln_q + (alpha - k) * ln_1mq;
        let term = log_coef + (k * k - k) / (2.0 * sigma2);
        log_a = log_add(log_a, term);
        binomial.advance();
        k += 1.0;
    }
    log_a
}

/// `ln A_α` for fractional `α`, `0 < q < 1`: `A_α = A0 + A1`, the integrals
/// over `z ≤ z0` and `z ≥ z0`, `z0 = σ² ln(1/q − 1) + 1/2`, each expanded in
/// the generalised binomial series
///
/// ```text
/// A0 = Σ_k C(α,k) q^k (1−q)^(α−k) e^((k²−k)/(2σ²)) · ½ erfc((k − z0)/(√2 σ))
/// A1 = Σ_k C(α,k) q^(α−k) (1−q)^k e^((j²−j)/(2σ²)) · ½ erfc((z0 − j)/(√2 σ)),  j = α − k,
/// ```
///
/// whose coefficients `C(α, k)` alternate in sign once `k > α + 1`. The
/// sums stop after the first `k` whose two terms are both below `e^−30`.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let sigma2 = sigma * sigma;
    let ln_q = q.ln();
    let ln_1mq = (1.0 - q).ln();
    let z0 = sigma2 * (1.0 / q - 1.0).ln() + 0.5;
    let ln_half = 0.5f64.ln();
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let mut binomial = Binomials::new(alpha);
    let mut terms = 0u64;
    loop {
        let k = terms as f64;
        let j = alpha - k;
        let log_coef = binomial.ln_abs();
        let log_t0 = log_coef + k * ln_q + j * ln_1mq;
        let log_t1 = log_coef + j * ln_q + k * ln_1mq;
        let log_e0 = ln_half + ln_erfc((k - z0) / (SQRT_2 * sigma));
        let log_e1 = ln_half + ln_erfc((z0 - j) / (SQRT_2 * sigma));
        let log_s0 = log_t0 + (k * k - k) / (2.0 * sigma2) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma2) + log_e1;
        if binomial.is_negative() {
            log_a0 = log_sub(log_a0, log_s0).ok_or_else(series_failure)?;
            log_a1 = log_sub(log_a1, log_s1).ok_or_else(series_failure)?;
        } else {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        }
        terms += 1;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        if terms >= MAX_SERIES_TERMS {
            return Err(TrainError::invalid(
                "orders",
                format!(
                    "the fractional-order series at order {alpha} (q = {q}, sigma = {sigma}) \
                     did not converge in {MAX_SERIES_TERMS} terms; use integer orders"
                ),
            ));
        }
        binomial.advance();
    }
    Ok(log_add(log_a0, log_a1))
}

fn series_failure() -> TrainError {
    TrainError::invalid(
        "orders",
        "a fractional-order series went negative (rounding); use integer orders",
    )
}

/// The generalised binomial coefficients `C(α, k)`, `k = 0, 1, 2, …`, by the
/// recurrence `C(α, k) = C(α, k−1) · (α − k + 1) / k`, kept as
/// `mantissa · e^log_scale` so that large orders neither overflow nor
/// underflow. For integer `α ≤ 56` every value is exact.
struct Binomials {
    alpha: f64,
    k: f64,
    mantissa: f64,
    log_scale: f64,
}

impl Binomials {
    fn new(alpha: f64) -> Self {
        Self {
            alpha,
            k: 0.0,
            mantissa: 1.0,
            log_scale: 0.0,
        }
    }

    /// `ln |C(α, k)|` (`−∞` for `k > α` when `α` is an integer).
    fn ln_abs(&self) -> f64 {
        self.mantissa.abs().ln() + self.log_scale
    }

    fn is_negative(&self) -> bool {
        self.mantissa < 0.0
    }

    fn advance(&mut self) {
        self.k += 1.0;
        self.mantissa = self.mantissa * (self.alpha - self.k + 1.0) / self.k;
        let magnitude = self.mantissa.abs();
        if magnitude > 1e200 || (magnitude < 1e-200 && magnitude > 0.0) {
            self.log_scale += magnitude.ln();
            self.mantissa = self.mantissa.signum();
        }
    }
}

/// `ln(e^x + e^y)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (small, large) = if x < y { (x, y) } else { (y, x) };
    if small == f64::NEG_INFINITY || large == f64::INFINITY {
        return large;
    }
    (small - large).exp().ln_1p() + large
}

/// `ln(e^x − e^y)`, `None` when `x < y` (the difference would be negative).
fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    let expm1 = (x - y).exp_m1();
    if expm1.is_infinite() {
        // e^x − e^y rounds to e^x.
        return Some(x);
    }
    Some(expm1.ln() + y)
}

/// `ln erfc(x)`, written as `ln 2 + ln Φ(−√2 x)` (`Φ` the standard normal CDF).
fn ln_erfc(x: f64) -> f64 {
    LN_2 + ln_normal_cdf(-x * SQRT_2)
}

/// `ln Φ(a)`, accurate in both tails: for `a < −1` through the scaled
/// `erfcx(t) = e^(t²) erfc(t)`, otherwise as `ln(1 − erfc(a/√2)/2)`.
fn ln_normal_cdf(a: f64) -> f64 {
    let t = a * FRAC_1_SQRT_2;
    if a < -1.0 {
        (erfcx(-t) / 2.0).ln() - t * t
    } else {
        (-erfc(t) / 2.0).ln_1p()
    }
}

/// Below this, erf comes from its power series; above, erfc from the
/// continued fraction (≤ ~190 terms at the switch).
const ERF_SERIES_MAX: f64 = 1.0;

/// `erf(x)` for `|x| ≤ ERF_SERIES_MAX`, from the series with terms of one
/// sign, `erf(x) = 2/√π · e^(−x²) · Σ_{n≥0} 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > sum.abs() * 1e-17 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// `erfcx(x) = e^(x²) erfc(x)` for `x ≥ ERF_SERIES_MAX`, from the continued
/// fraction `erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`
/// evaluated with the modified Lentz method.
fn erfcx_continued_fraction(x: f64) -> f64 {
    let frac_1_sqrt_pi = FRAC_2_SQRT_PI / 2.0;
    if x > 1e8 {
        // The next term of the fraction is below 1e-16 relative.
        return frac_1_sqrt_pi / x;
    }
    // All partial numerators and denominators are positive, so neither
    // `c` nor `d` can vanish.
    let mut value = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..=1000 {
        let a = 0.5 * f64::from(n);
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let factor = c * d;
        value *= factor;
        if (factor - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    frac_1_sqrt_pi / value
}

/// `erfc(x)` for any `x`.
fn erfc(x: f64) -> f64 {
    if x.abs() <= ERF_SERIES_MAX {
        1.0 - erf_series(x)
    } else if x > 0.0 {
        erfcx_continued_fraction(x) * (-x * x).exp()
    } else {
        2.0 - erfcx_continued_fraction(-x) * (-x * x).exp()
    }
}

/// `erfcx(x) = e^(x²) erfc(x)` for `x ≥ 0`.
fn erfcx(x: f64) -> f64 {
    if x <= ERF_SERIES_MAX {
        (x * x).exp() * (1.0 - erf_series(x))
    } else {
        erfcx_continued_fraction(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/train/dp_rdp.json"
    );

    /// ε and per-order RDP agree with Opacus to this relative tolerance (the
    /// observed worst cases are ~3e-12 for ε and ~6e-11 for RDP).
    const RTOL: f64 = 1e-9;
    /// Absolute slack for RDP values that are tiny sums of terms near 1:
    /// per step, rounding of `ln A_α ≈ 0` is ~1e-16 / (α − 1).
    const RDP_ATOL_PER_STEP: f64 = 1e-14;
    const EPS_ATOL: f64 = 1e-12;

    fn fixture() -> Value {
        let text = std::fs::read_to_string(FIXTURE)
            .unwrap_or_else(|e| panic!("cannot read {FIXTURE}: {e}"));
        serde_json::from_str(&text).expect("dp_rdp.json is valid JSON")
    }

    fn f(v: &Value) -> f64 {
        v.as_f64()
            .unwrap_or_else(|| panic!("expected a number, got {v}"))
    }

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|x| if x.is_null() { f64::INFINITY } else { f(x) })
            .collect()
    }

    fn close(x: f64, reference: f64, atol: f64, rtol: f64) -> bool {
        x == reference || (x - reference).abs() <= atol + rtol * reference.abs()
    }

    fn rel(x: f64, reference: f64) -> f64 {
        if x == reference {
            0.0
        } else {
            (x - reference).abs() / reference.abs()
        }
    }

    #[test]
    fn default_orders_match_opacus() {
        let fx = fixture();
        assert_eq!(fx["version"], 1);
        assert_eq!(DEFAULT_ORDERS, floats(&fx["default_orders"]).as_slice());
        assert_eq!(DEFAULT_ORDERS.len(), 99 + 52);
    }

    #[test]
    fn acceptance_case_matches_opacus() {
        let fx = fixture();
        let case = fx["epsilon_cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                f(&c["q"]) == 0.01
                    && f(&c["sigma"]) == 1.1
                    && c["steps"] == 10_000
                    && f(&c["delta"]) == 1e-5
            })
            .expect("the acceptance case is in the fixture");
        let rdp = rdp_subsampled_gaussian(0.01, 1.1, 10_000, DEFAULT_ORDERS).unwrap();
        let (eps, order) = epsilon_from_rdp(DEFAULT_ORDERS, &rdp, 1e-5).unwrap();
        let (ref_eps, ref_order) = (f(&case["epsilon"]), f(&case["best_order"]));
        eprintln!(
            "q=0.01 sigma=1.1 steps=10000 delta=1e-5: kaiyuan eps={eps:?} order={order}, opacus eps={ref_eps:?} order={ref_order}"
        );
        // Two significant digits (the acceptance bar), then the real one.
        assert_eq!(format!("{eps:.1}"), format!("{ref_eps:.1}"));
        assert!(close(eps, ref_eps, EPS_ATOL, RTOL), "{eps} vs {ref_eps}");
        assert_eq!(order, ref_order);
    }

    #[test]
    fn epsilon_grid_matches_opacus() {
        let fx = fixture();
        let cases = fx["epsilon_cases"].as_array().unwrap();
        assert_eq!(cases.len(), 6 * 5 * 3 * 2);
        let mut worst = 0.0f64;
        let mut failures = Vec::new();
        let mut cache: Option<((f64, f64, u64), Vec<f64>)> = None;
        for case in cases {
            let (q, sigma, delta) = (f(&case["q"]), f(&case["sigma"]), f(&case["delta"]));
            let steps = case["steps"].as_u64().unwrap();
            let key = (q, sigma, steps);
            let rdp = match &cache {
                Some((k, rdp)) if *k == key => rdp.clone(),
                _ => {
                    let rdp = rdp_subsampled_gaussian(q, sigma, steps, DEFAULT_ORDERS).unwrap();
                    cache = Some((key, rdp.clone()));
                    rdp
                }
            };
            let (eps, order) = epsilon_from_rdp(DEFAULT_ORDERS, &rdp, delta).unwrap();
            let (ref_eps, ref_order) = (f(&case["epsilon"]), f(&case["best_order"]));
            worst = worst.max(rel(eps, ref_eps));
            if !close(eps, ref_eps, EPS_ATOL, RTOL) || order != ref_order {
                failures.push(format!(
                    "q={q} sigma={sigma} steps={steps} delta={delta}: eps {eps} (order {order}) vs opacus {ref_eps} (order {ref_order})"
                ));
            }
        }
        eprintln!("epsilon grid: worst relative error {worst:e}");
        assert!(
            failures.is_empty(),
            "{} mismatches, first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }

    #[test]
    fn rdp_vectors_match_opacus() {
        let fx = fixture();
        let mut worst = 0.0f64;
        let mut failures = Vec::new();
        for case in fx["rdp_cases"].as_array().unwrap() {
            let (q, sigma) = (f(&case["q"]), f(&case["sigma"]));
            let steps = case["steps"].as_u64().unwrap();
            let orders = if case["orders"] == "default" {
                DEFAULT_ORDERS.to_vec()
            } else {
                floats(&case["orders"])
            };
            let reference = floats(&case["rdp"]);
            assert_eq!(reference.len(), orders.len());
            let rdp = rdp_subsampled_gaussian(q, sigma, steps, &orders).unwrap();
            let atol = RDP_ATOL_PER_STEP * steps as f64;
            for ((alpha, x), r) in orders.iter().zip(&rdp).zip(&reference) {
                worst = worst.max(rel(*x, *r));
                if !close(*x, *r, atol, RTOL) {
                    failures.push(format!(
                        "q={q} sigma={sigma} steps={steps} order={alpha}: {x:e} vs opacus {r:e}"
                    ));
                }
            }
        }
        eprintln!("rdp vectors: worst relative error {worst:e}");
        assert!(
            failures.is_empty(),
            "{} mismatches, first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }

    #[test]
    fn accountant_matches_opacus() {
        let fx = fixture();
        let acc = &fx["accountant"];
        let mut accountant = RdpAccountant::new();
        let mut total = 0;
        for run in acc["runs"].as_array().unwrap() {
            let (q, sigma) = (f(&run[0]), f(&run[1]));
            let steps = run[2].as_u64().unwrap();
            for _ in 0..steps {
                accountant.step(q, sigma).unwrap();
            }
            total += steps;
        }
        assert_eq!(accountant.steps(), total);
        let (eps, order) = accountant.epsilon(f(&acc["delta"])).unwrap();
        let (ref_eps, ref_order) = (f(&acc["epsilon"]), f(&acc["best_order"]));
        eprintln!(
            "accountant: eps {eps:?} vs opacus {ref_eps:?} (relative {:e})",
            rel(eps, ref_eps)
        );
        assert!(close(eps, ref_eps, EPS_ATOL, RTOL), "{eps} vs {ref_eps}");
        assert_eq!(order, ref_order);
    }

    #[test]
    fn accountant_with_fixed_parameters_equals_the_closed_form() {
        let mut accountant = RdpAccountant::new();
        for _ in 0..10_000 {
            accountant.step(0.01, 1.1).unwrap();
        }
        let direct = rdp_subsampled_gaussian(0.01, 1.1, 10_000, DEFAULT_ORDERS).unwrap();
        assert_eq!(accountant.rdp(), direct);
        assert_eq!(
            accountant.epsilon(1e-5).unwrap(),
            epsilon_from_rdp(DEFAULT_ORDERS, &direct, 1e-5).unwrap()
        );
    }

    #[test]
    fn special_cases() {
        let orders = [1.5, 2.0, 3.25, 32.0];
        assert_eq!(
            rdp_subsampled_gaussian(0.0, 1.0, 10, &orders).unwrap(),
            vec![0.0; 4]
        );
        assert_eq!(
            rdp_subsampled_gaussian(0.3, f64::INFINITY, 10, &orders).unwrap(),
            vec![0.0; 4]
        );
        assert_eq!(
            rdp_subsampled_gaussian(0.3, 1.0, 0, &orders).unwrap(),
            vec![0.0; 4]
        );
        let full = rdp_subsampled_gaussian(1.0, 1.5, 7, &orders).unwrap();
        for (alpha, r) in orders.iter().zip(full) {
            assert_eq!(r, alpha / (2.0 * 1.5 * 1.5) * 7.0);
        }
        // σ² underflows: no bound at all.
        assert_eq!(
            rdp_subsampled_gaussian(0.5, 1e-200, 1, &orders).unwrap(),
            vec![f64::INFINITY; 4]
        );
        let (eps, order) = epsilon_from_rdp(&[2.0, 3.0], &[f64::INFINITY; 2], 1e-5).unwrap();
        assert_eq!((eps, order), (f64::INFINITY, 2.0));
        assert_eq!(RdpAccountant::new().epsilon(1e-5).unwrap(), (0.0, 0.0));
    }

    /// The integer-order sum against a naive linear-space sum.
    #[test]
    fn integer_orders_match_a_naive_sum() {
        for &(q, sigma) in &[(0.01f64, 1.1f64), (0.2, 2.0), (0.5, 0.9), (0.9, 3.0)] {
            for alpha in 2..=20u32 {
                let a = f64::from(alpha);
                let mut sum = 0.0;
                let mut binomial = 1.0;
                for k in 0..=alpha {
                    let kf = f64::from(k);
                    if k > 0 {
                        binomial = binomial * (a - kf + 1.0) / kf;
                    }
                    sum += binomial
                        * q.powf(kf)
                        * (1.0 - q).powf(a - kf)
                        * ((kf * kf - kf) / (2.0 * sigma * sigma)).exp();
                }
                let naive = sum.ln() / (a - 1.0);
                let got = rdp_subsampled_gaussian(q, sigma, 1, &[a]).unwrap()[0];
                assert!(
                    close(got, naive, 1e-15, 1e-11),
                    "q={q} sigma={sigma} alpha={a}: {got} vs {naive}"
                );
            }
        }
    }

    /// The two-series expansion is valid at integer orders too, where it
    /// must agree with the finite binomial sum: a check of the erfc machinery
    /// independent of Opacus.
    #[test]
    fn fractional_series_agrees_with_integer_sum_at_integers() {
        for &(q, sigma) in &[
            (0.001, 5.0),
            (0.01, 1.1),
            (0.1, 0.8),
            (0.5, 0.5),
            (0.5, 2.0),
            (0.9, 1.0),
        ] {
            for alpha in [2.0, 3.0, 5.0, 8.0, 13.0] {
                let series = log_a_fractional(q, sigma, alpha).unwrap();
                let sum = log_a_integer(q, sigma * sigma, alpha);
                assert!(
                    close(series, sum, 1e-14, 1e-10),
                    "q={q} sigma={sigma} alpha={alpha}: {series} vs {sum}"
                );
            }
        }
    }

    /// `ln Φ` and `erfc` against mpmath 1.4.1 (60 digits) rounded to f64.
    #[test]
    fn normal_cdf_and_erfc_match_high_precision_values() {
        let ln_phi = [
            (-40.0, -804.6084420137538),
            (-10.0, -53.23128515051247),
            (-3.0, -6.607726221510349),
            (-1.5, -2.7059444008238898),
            (-1.0, -1.8410216450092636),
            (-0.999, -1.839496910164778),
            (-0.5, -1.1759117615936185),
            (0.0, -LN_2),
            (0.5, -0.3689464152886564),
            (1.0, -0.17275377902344988),
            (2.0, -0.02301290932896349),
            (5.0, -2.866516129637636e-7),
            (9.0, -1.1285884059538405e-19),
        ];
        for (a, reference) in ln_phi {
            let got = ln_normal_cdf(a);
            assert!(
                close(got, reference, 0.0, 1e-14),
                "ln Phi({a}) = {got:e}, want {reference:e}"
            );
        }
        let erfc_values = [
            (-0.75, 1.7111556336535152),
            (-0.25, 1.276326390168237),
            (0.1, 0.8875370839817152),
            (0.9, 0.20309178757716786),
            (1.0, 0.15729920705028513),
            (1.5, 0.033894853524689274),
            (3.0, 2.209049699858544e-5),
            (6.0, 2.1519736712498913e-17),
            (26.0, 5.663192408856143e-296),
        ];
        for (x, reference) in erfc_values {
            let got = erfc(x);
            assert!(
                close(got, reference, 0.0, 1e-13),
                "erfc({x}) = {got:e}, want {reference:e}"
            );
        }
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert_eq!(ln_normal_cdf(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(ln_normal_cdf(f64::INFINITY), 0.0);
    }

    fn eps(q: f64, sigma: f64, steps: u64) -> f64 {
        let rdp = rdp_subsampled_gaussian(q, sigma, steps, DEFAULT_ORDERS).unwrap();
        epsilon_from_rdp(DEFAULT_ORDERS, &rdp, 1e-5).unwrap().0
    }

    #[test]
    fn monotone_in_steps_sampling_rate_and_noise() {
        let orders = DEFAULT_ORDERS;
        // RDP is linear in steps; ε grows with steps.
        let one = rdp_subsampled_gaussian(0.02, 1.3, 1, orders).unwrap();
        let many = rdp_subsampled_gaussian(0.02, 1.3, 250, orders).unwrap();
        for (a, b) in one.iter().zip(&many) {
            assert!(close(*b, a * 250.0, 0.0, 1e-15));
        }
        let by_steps: Vec<f64> = [1, 10, 100, 1000, 10_000]
            .iter()
            .map(|&s| eps(0.02, 1.3, s))
            .collect();
        assert!(by_steps.windows(2).all(|w| w[0] < w[1]), "{by_steps:?}");
        // Per-order RDP and ε grow with q and shrink with σ.
        let qs = [0.0, 0.001, 0.004, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0];
        let sigmas = [0.5, 0.7, 0.8, 1.1, 1.5, 2.0, 3.0, 5.0, 10.0];
        for &sigma in &sigmas {
            let curves: Vec<Vec<f64>> = qs
                .iter()
                .map(|&q| rdp_subsampled_gaussian(q, sigma, 1, orders).unwrap())
                .collect();
            for pair in curves.windows(2) {
                for (a, b) in pair[0].iter().zip(&pair[1]) {
                    assert!(
                        a <= b,
                        "rdp not increasing in q at sigma={sigma}: {a} > {b}"
                    );
                }
            }
        }
        for &q in &qs[1..] {
            let curves: Vec<Vec<f64>> = sigmas
                .iter()
                .map(|&sigma| rdp_subsampled_gaussian(q, sigma, 1, orders).unwrap())
                .collect();
            for pair in curves.windows(2) {
                for (a, b) in pair[0].iter().zip(&pair[1]) {
                    assert!(a >= b, "rdp not decreasing in sigma at q={q}: {a} < {b}");
                }
            }
            let by_sigma: Vec<f64> = sigmas.iter().map(|&s| eps(q, s, 100)).collect();
            assert!(
                by_sigma.windows(2).all(|w| w[0] >= w[1]),
                "q={q}: {by_sigma:?}"
            );
        }
        // RDP grows with the order.
        let curve = rdp_subsampled_gaussian(0.01, 1.1, 1, orders).unwrap();
        assert!(curve.windows(2).all(|w| w[0] <= w[1]));
        // Smaller δ costs more ε.
        let rdp = rdp_subsampled_gaussian(0.01, 1.1, 1000, orders).unwrap();
        assert!(
            epsilon_from_rdp(orders, &rdp, 1e-6).unwrap().0
                > epsilon_from_rdp(orders, &rdp, 1e-5).unwrap().0
        );
    }

    fn invalid(result: Result<impl std::fmt::Debug>, what: &str) {
        match result {
            Err(TrainError::InvalidArgument { what: got, .. }) => assert_eq!(got, what),
            other => panic!("expected invalid `{what}`, got {other:?}"),
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let orders = DEFAULT_ORDERS;
        for q in [
            -0.1,
            1.0 + 1e-12,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            invalid(rdp_subsampled_gaussian(q, 1.0, 1, orders), "sampling_rate");
        }
        for sigma in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            invalid(
                rdp_subsampled_gaussian(0.1, sigma, 1, orders),
                "noise_multiplier",
            );
        }
        invalid(rdp_subsampled_gaussian(0.1, 1.0, 1, &[]), "orders");
        for order in [1.0, 0.5, -2.0, f64::NAN, f64::INFINITY, 2e6] {
            invalid(
                rdp_subsampled_gaussian(0.1, 1.0, 1, &[2.0, order]),
                "orders",
            );
            invalid(epsilon_from_rdp(&[2.0, order], &[0.1, 0.1], 1e-5), "orders");
            invalid(RdpAccountant::with_orders(&[order]), "orders");
        }
        invalid(epsilon_from_rdp(&[], &[], 1e-5), "orders");
        invalid(epsilon_from_rdp(&[2.0, 3.0], &[0.1], 1e-5), "rdp");
        invalid(epsilon_from_rdp(&[2.0], &[f64::NAN], 1e-5), "rdp");
        invalid(epsilon_from_rdp(&[2.0], &[f64::NEG_INFINITY], 1e-5), "rdp");
        for delta in [0.0, 1.0, -1e-5, 1.5, f64::NAN, f64::INFINITY] {
            invalid(epsilon_from_rdp(&[2.0], &[0.1], delta), "delta");
            invalid(RdpAccountant::new().epsilon(delta), "delta");
        }
        let mut accountant = RdpAccountant::new();
        accountant.step(0.01, 1.1).unwrap();
        let before = accountant.rdp();
        invalid(accountant.step(2.0, 1.1), "sampling_rate");
        invalid(accountant.step(0.01, 0.0), "noise_multiplier");
        assert_eq!(accountant.steps(), 1);
        assert_eq!(accountant.rdp(), before);
    }
}
