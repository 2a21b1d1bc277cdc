//! The run as a PNG (plotters): throughput per second above, latency percentiles per second below.

use std::path::Path;

use plotters::prelude::*;

/// One second of the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    pub fixes_sent: u64,
    pub fixes_acked: u64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    pub fanout_p50_ms: Option<f64>,
    pub fanout_p99_ms: Option<f64>,
}

pub fn draw(path: &Path, title: &str, seconds: &[Second]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1100, 750)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(360);
    let t_max = seconds.last().map_or(1, |s| s.t + 1);

    let rate_max = seconds
        .iter()
        .map(|s| s.fixes_sent.max(s.fixes_acked))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut rate = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .caption("throughput", ("sans-serif", 16))
        .build_cartesian_2d(0u64..t_max, 0f64..rate_max)?;
    rate.configure_mesh().x_desc("s").y_desc("fixes/s").draw()?;
    for (name, colour, get) in [
        (
            "sent",
            BLUE,
            (|s: &Second| s.fixes_sent) as fn(&Second) -> u64,
        ),
        ("acked", GREEN, |s: &Second| s.fixes_acked),
    ] {
        rate.draw_series(LineSeries::new(
            seconds.iter().map(|s| (s.t, get(s) as f64)),
            colour.stroke_width(2),
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    rate.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    type Get = fn(&Second) -> Option<f64>;
    let series: [(&str, RGBColor, Get); 4] = [
        ("ack p50", GREEN, |s| s.ack_p50_ms),
        ("ack p99", RGBColor(0, 100, 0), |s| s.ack_p99_ms),
        ("fan-out p50", RGBColor(255, 140, 0), |s| s.fanout_p50_ms),
        ("fan-out p99", RED, |s| s.fanout_p99_ms),
    ];
    let lat_max = seconds
        .iter()
        .flat_map(|s| series.iter().filter_map(move |(_, _, get)| get(s)))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut latency = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .caption("latency", ("sans-serif", 16))
        .build_cartesian_2d(0u64..t_max, 0f64..lat_max)?;
    latency.configure_mesh().x_desc("s").y_desc("ms").draw()?;
    for (name, colour, get) in series {
        latency
            .draw_series(LineSeries::new(
                seconds.iter().filter_map(|s| get(s).map(|v| (s.t, v))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    latency
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
