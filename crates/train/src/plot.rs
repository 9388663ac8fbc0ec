//! The loss curve as an SVG (plotters' SVG backend: no system fonts needed).

use std::path::Path;

use plotters::prelude::*;

use crate::{Result, TrainError};

/// Draws training loss per step (and validation loss where measured) into
/// an SVG file at `path`, written atomically. `history` holds
/// `(step, training loss, validation loss)`.
pub fn loss_svg(path: &Path, history: &[(u64, f64, Option<f64>)]) -> Result<()> {
    let fail =
        |e: &dyn std::fmt::Display| TrainError::invalid(path.display().to_string(), e.to_string());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let finite: Vec<f64> = history
            .iter()
            .flat_map(|&(_, l, v)| std::iter::once(l).chain(v))
            .filter(|x| x.is_finite())
            .collect();
        let (lo, hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let (lo, hi) = if lo.is_finite() {
            (lo.min(hi) * 0.95, hi * 1.05 + 1e-9)
        } else {
            (0.0, 1.0)
        };
        let last = history.last().map_or(1, |h| h.0.max(1));
        let mut chart = ChartBuilder::on(&root)
            .caption("loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0u64..last, lo..hi)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("cross-entropy")
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|&(s, l, _)| (s, l)),
                &BLUE,
            ))
            .map_err(|e| fail(&e))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                history.iter().filter_map(|&(s, _, v)| v.map(|v| (s, v))),
                &RED,
            ))
            .map_err(|e| fail(&e))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    crate::checkpoint::write_atomic(path, svg.as_bytes())
}
