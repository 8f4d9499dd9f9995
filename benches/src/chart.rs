//! The results page's chart: reads the `RATIO` lines that `benches/peers/flink/compare.sh`
//! prints and draws, per job, the events per second of both engines as bars on a logarithmic
//! scale, into an SVG file (see the `chart` binary).
//!
//! A line is `RATIO job=NAME eichhorn_eps=N flink_eps=N ratio=R eichhorn_rss_kb=N
//! flink_rss_kb=N [more fields]`; the latency jobs (`job=latency-...`) run at a fixed rate, so
//! their events per second say nothing and they are left out of the chart.

use std::fmt;

/// One job's figures from a `RATIO` line.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRatio {
    /// The job's name (`tumbling`, `q5`, ...).
    pub job: String,
    /// Eichhorn's median events per second.
    pub eichhorn_eps: f64,
    /// Flink's median events per second.
    pub flink_eps: f64,
}

/// A `RATIO` line that cannot be read, with its line number (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatioLineError {
    /// The line number, counting from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RatioLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for RatioLineError {}

/// The jobs of every `RATIO` line of `text` (other lines are skipped), latency jobs left out.
///
/// # Errors
///
/// A `RATIO` line without `job=`, `eichhorn_eps=` or `flink_eps=`, or with a figure that is not
/// a positive number.
///
/// # Examples
///
/// ```
/// let text = "CHECK job=q0 outputs ok\n\
///             RATIO job=q0 eichhorn_eps=2000000 flink_eps=400000 ratio=5.00 eichhorn_rss_kb=1 flink_rss_kb=2\n\
///             RATIO job=latency-rolling eichhorn_eps=100000 flink_eps=100000 ratio=1.00 eichhorn_rss_kb=1 flink_rss_kb=2\n";
/// let jobs = eichhorn_benches::chart::parse_ratio_lines(text)?;
/// assert_eq!(jobs.len(), 1);
/// assert_eq!(jobs[0].job, "q0");
/// assert_eq!(jobs[0].flink_eps, 400_000.0);
/// # Ok::<(), eichhorn_benches::chart::RatioLineError>(())
/// ```
pub fn parse_ratio_lines(text: &str) -> Result<Vec<JobRatio>, RatioLineError> {
    let mut jobs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("RATIO ") else {
            continue;
        };
        let error = |reason: String| RatioLineError {
            line: index + 1,
            reason,
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| error(format!("no '{name}=' field")))
        };
        let figure = |name: &str| -> Result<f64, RatioLineError> {
            let text = field(name)?;
            match text.parse::<f64>() {
                Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
                _ => Err(error(format!("'{name}={text}' is not a positive number"))),
            }
        };
        let job = field("job")?.to_string();
        if job.starts_with("latency-") {
            continue;
        }
        jobs.push(JobRatio {
            eichhorn_eps: figure("eichhorn_eps")?,
            flink_eps: figure("flink_eps")?,
            job,
        });
    }
    Ok(jobs)
}

/// The decades a logarithmic axis needs to show every figure: from the power of ten at or
/// below the smallest to the one at or above the largest (at least one decade).
pub fn log_axis_range(jobs: &[JobRatio]) -> (f64, f64) {
    let figures = jobs.iter().flat_map(|j| [j.eichhorn_eps, j.flink_eps]);
    let (low, high) = figures.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || high <= 0.0 {
        return (1.0, 10.0);
    }
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ratio_lines_and_names_bad_ones() {
        let text = "x\nRATIO job=rolling eichhorn_eps=5e7 flink_eps=1000000 ratio=50\n";
        let jobs = parse_ratio_lines(text).expect("valid");
        assert_eq!(
            jobs,
            vec![JobRatio {
                job: "rolling".into(),
                eichhorn_eps: 5e7,
                flink_eps: 1e6
            }]
        );
        let missing = parse_ratio_lines("RATIO job=q1 flink_eps=3").unwrap_err();
        assert_eq!(missing.line, 1);
        assert!(missing.reason.contains("eichhorn_eps"), "{missing}");
        let bad = parse_ratio_lines("\nRATIO job=q1 eichhorn_eps=- flink_eps=3").unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(bad.reason.contains("'eichhorn_eps=-'"), "{bad}");
        assert!(parse_ratio_lines("RATIO job=q1 eichhorn_eps=0 flink_eps=3").is_err());
    }

    #[test]
    fn the_axis_covers_every_figure_in_whole_decades() {
        let jobs = [JobRatio {
            job: "a".into(),
            eichhorn_eps: 23_000_000.0,
            flink_eps: 450_000.0,
        }];
        assert_eq!(log_axis_range(&jobs), (100_000.0, 100_000_000.0));
        assert_eq!(log_axis_range(&[]), (1.0, 10.0));
    }
}
