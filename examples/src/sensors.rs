//! Sensor readings: the CSV format the `sensor_windows` and `freezing_monitor` examples read,
//! its parser, and the functions both jobs are made of.
//!
//! ## The input format
//!
//! One reading per line, `sensor_id,timestamp_ms,temperature`, no header:
//!
//! - `sensor_id`: any non-empty text without a comma;
//! - `timestamp_ms`: an integer (`i64`), the event time in milliseconds;
//! - `temperature`: a finite decimal number (`f64`; `nan` and `inf` are rejected, so every
//!   minimum is well defined).
//!
//! Spaces around a field are ignored (`s1, 100, 21.5` is the reading of `s1,100,21.5`), so are
//! the line terminators `\n` and `\r\n`. Any other line is *malformed*: an empty (or blank) line,
//! a line with another number of fields, or a field that does not parse. For a windowed job
//! ([`parse_readings_for_windows`]), so is a reading whose timestamp no window can hold (one
//! within a window size of the limits of `i64`, such as `9223372036854775807`).
//!
//! ## Malformed lines are reported and counted, never dropped silently
//!
//! [`parse_readings`] numbers the lines itself (it runs at parallelism 1, chained to the
//! non-parallel file source, so it sees them in file order) and sends every malformed line to
//! the side output [`MALFORMED_LINES_TAG`], read by a print-to-stderr sink named
//! [`MALFORMED_SINK_NAME`] that writes `line N: <reason>: <line>`. That sink's `records_in` in
//! the [`JobResult`] is the number of malformed lines ([`malformed_line_count`]): the count
//! comes from the job's own metrics, not from a side channel.
//!
//! ## Minimum temperatures
//!
//! [`colder`] orders temperatures with [`f64::total_cmp`], so `-0.0` is colder than `0.0` and
//! the minimum of a window does not depend on the order its readings arrived in. Results print
//! temperatures with Rust's default `f64` `Display`: the shortest text that parses back to the
//! same number, without exponent (`21.5`, `-3`, `-0`, `0.1`, `100000000000000000000`).

use std::fmt;
use std::str::FromStr;

use eichhorn::operator::window::{
    TimeDomain, TimeWindow, WindowAssign, WindowAssigner, WindowContext, WindowError,
};
use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

/// The id of the side output that carries malformed lines out of [`ParseReadings`].
pub const MALFORMED_LINES_TAG: &str = "malformed-lines";

/// The name of the sink that reports malformed lines on stderr; its `records_in` in the job
/// result counts them.
pub const MALFORMED_SINK_NAME: &str = "Sink: Malformed Lines";

/// The name of the operator that parses lines into readings; its `records_in` counts the lines
/// read.
pub const PARSE_OPERATOR_NAME: &str = "Parse Readings";

/// The id of the freezing monitor's alarm side output (as in the Flink book's example).
pub const FREEZING_ALARMS_TAG: &str = "freezing-alarms";

/// The freezing point of water in °F: readings below it raise an alarm by default.
pub const FREEZING_THRESHOLD_F: f64 = 32.0;

/// One temperature reading, with the line it was parsed from; keyed by its sensor
/// (`stream.keyed()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KeyBy)]
pub struct SensorReading {
    /// The sensor's id: the key.
    #[key]
    pub sensor_id: String,
    /// The event time, in milliseconds.
    pub timestamp_ms: i64,
    /// The temperature (finite).
    pub temperature: f64,
    /// The number of the input line, counting from 1.
    pub line_number: u64,
    /// The input line as it was read (without its line terminator).
    pub line: String,
}

impl SensorReading {
    /// Parses line `line_number` of the input (see the module docs for the format).
    ///
    /// # Errors
    ///
    /// [`MalformedReading`] says what is wrong with the line.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn_examples::sensors::{MalformedReading, SensorReading};
    ///
    /// let reading = SensorReading::parse("sensor_1, 1000, 21.5", 7).unwrap();
    /// assert_eq!((reading.sensor_id.as_str(), reading.timestamp_ms), ("sensor_1", 1_000));
    /// assert_eq!((reading.temperature, reading.line_number), (21.5, 7));
    /// assert_eq!(reading.line, "sensor_1, 1000, 21.5");
    ///
    /// assert_eq!(SensorReading::parse("", 1), Err(MalformedReading::EmptyLine));
    /// assert_eq!(
    ///     SensorReading::parse("s,1", 1),
    ///     Err(MalformedReading::FieldCount { found: 2 })
    /// );
    /// ```
    pub fn parse(line: &str, line_number: u64) -> Result<Self, MalformedReading> {
        if line.trim().is_empty() {
            return Err(MalformedReading::EmptyLine);
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [sensor_id, timestamp, temperature] = fields[..] else {
            return Err(MalformedReading::FieldCount {
                found: fields.len(),
            });
        };
        if sensor_id.is_empty() {
            return Err(MalformedReading::EmptySensorId);
        }
        let timestamp_ms =
            timestamp
                .parse::<i64>()
                .map_err(|error| MalformedReading::Timestamp {
                    value: timestamp.to_string(),
                    reason: error.to_string(),
                })?;
        let temperature_value =
            temperature
                .parse::<f64>()
                .map_err(|_| MalformedReading::Temperature {
                    value: temperature.to_string(),
                })?;
        if !temperature_value.is_finite() {
            return Err(MalformedReading::NonFiniteTemperature {
                value: temperature.to_string(),
            });
        }
        Ok(Self {
            sensor_id: sensor_id.to_string(),
            timestamp_ms,
            temperature: temperature_value,
            line_number,
            line: line.to_string(),
        })
    }
}

/// Why a line is not a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReading {
    /// The line is empty or blank.
    #[error("empty line")]
    EmptyLine,
    /// The line does not have exactly three comma-separated fields.
    #[error("expected 3 fields (sensor_id,timestamp_ms,temperature), found {found}")]
    FieldCount {
        /// The number of fields found.
        found: usize,
    },
    /// The sensor id is empty.
    #[error("empty sensor_id")]
    EmptySensorId,
    /// The timestamp is not an `i64`.
    #[error("timestamp_ms '{value}' is not an integer ({reason})")]
    Timestamp {
        /// The field's text.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The temperature is not a number.
    #[error("temperature '{value}' is not a decimal number")]
    Temperature {
        /// The field's text.
        value: String,
    },
    /// The temperature is NaN or infinite.
    #[error("temperature '{value}' is not a finite number")]
    NonFiniteTemperature {
        /// The field's text.
        value: String,
    },
    /// The timestamp is so close to the limits of `i64` that the job's windows cannot hold it.
    #[error("timestamp_ms {timestamp_ms} cannot be placed in a window: {reason}")]
    UnplaceableTimestamp {
        /// The timestamp.
        timestamp_ms: i64,
        /// Why no window holds it (the window assigner's error).
        reason: String,
    },
}

/// A malformed input line: where it is, why it is malformed, and what it says.
///
/// Displays as the report the examples print on stderr: `line N: <reason>: <line>`.
///
/// # Examples
///
/// ```
/// use eichhorn_examples::sensors::MalformedLine;
///
/// let malformed = MalformedLine { line_number: 3, reason: "empty line".into(), line: String::new() };
/// assert_eq!(malformed.to_string(), "line 3: empty line: ");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedLine {
    /// The line's number, counting from 1.
    pub line_number: u64,
    /// Why the line is not a reading.
    pub reason: String,
    /// The line as it was read.
    pub line: String,
}

impl fmt::Display for MalformedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line_number, self.reason, self.line
        )
    }
}

/// Parses input lines into [`SensorReading`]s and sends malformed lines to a side output.
///
/// It numbers the lines it sees, so it must see all of them in file order: it runs at
/// parallelism 1 behind a non-parallel source (`open` fails at any other parallelism).
/// `ParseReadings::new(malformed, windows)` emits malformed lines to `malformed`; with
/// `Some(assigner)`, a reading whose timestamp no window of `assigner` can hold (one too close
/// to the limits of `i64`) is a malformed line too
/// ([`MalformedReading::UnplaceableTimestamp`]), so it is reported with its line number instead
/// of reaching the windows (where it would also push the watermark to the end of time).
#[operator]
#[derive(Debug, Clone)]
pub struct ParseReadings {
    /// Where malformed lines go.
    malformed: OutputTag<MalformedLine>,
    /// The windows every reading must fit in, if any.
    windows: Option<WindowAssigner>,
    #[transient]
    lines_seen: u64,
    /// Scratch space for the windows of a reading.
    #[transient]
    assigned: Vec<TimeWindow>,
}

impl ParseReadings {
    /// Parses line `line_number` and checks that the windows can hold its timestamp.
    fn reading(&mut self, line: &str, line_number: u64) -> Result<SensorReading, MalformedReading> {
        let reading = SensorReading::parse(line, line_number)?;
        if let Some(windows) = &self.windows {
            self.assigned.clear();
            windows
                .assign(reading.timestamp_ms, &mut self.assigned)
                .map_err(|error| MalformedReading::UnplaceableTimestamp {
                    timestamp_ms: reading.timestamp_ms,
                    reason: error.to_string(),
                })?;
        }
        Ok(reading)
    }
}

impl ProcessFunction<String> for ParseReadings {
    type Out = SensorReading;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        if ctx.parallelism != 1 {
            return Err(format!(
                "'{}' numbers the input lines, so it must run at parallelism 1, not {}",
                ctx.operator_name, ctx.parallelism
            )
            .into());
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        line: String,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, SensorReading>,
    ) {
        self.lines_seen += 1;
        match self.reading(&line, self.lines_seen) {
            Ok(reading) => out.collect(reading),
            Err(malformed) => ctx.output(
                &self.malformed,
                MalformedLine {
                    line_number: self.lines_seen,
                    reason: malformed.to_string(),
                    line,
                },
            ),
        }
    }
}

/// The readings in `lines`: parses them at parallelism 1 (operator [`PARSE_OPERATOR_NAME`]) and
/// reports every malformed line on stderr through the sink [`MALFORMED_SINK_NAME`], which
/// counts them in the job result (see [`malformed_line_count`]).
///
/// `lines` must come from a non-parallel source (such as `read_text_file`), in file order.
pub fn parse_readings(lines: DataStream<String>) -> DataStream<SensorReading> {
    parse_readings_into(lines, None)
}

/// As [`parse_readings`], for readings that go into event-time windows of `windows`: a reading
/// whose timestamp none of them can hold (one within a window size of the limits of `i64`) is
/// reported and counted as a malformed line (`line N: timestamp_ms ... cannot be placed in a
/// window: ...`) and skipped, like any other.
pub fn parse_readings_for_windows(
    lines: DataStream<String>,
    windows: WindowAssigner,
) -> DataStream<SensorReading> {
    parse_readings_into(lines, Some(windows))
}

/// [`parse_readings`] with an optional window check.
fn parse_readings_into(
    lines: DataStream<String>,
    windows: Option<WindowAssigner>,
) -> DataStream<SensorReading> {
    let malformed = OutputTag::<MalformedLine>::new(MALFORMED_LINES_TAG);
    let readings = lines
        .process(ParseReadings::new(malformed.clone(), windows))
        .name(PARSE_OPERATOR_NAME)
        .set_parallelism(1);
    // Parallelism 1: the print sink prefixes lines with the subtask number above 1.
    readings
        .side_output(&malformed)
        .print_to_err()
        .name(MALFORMED_SINK_NAME)
        .set_parallelism(1);
    readings
}

/// The `records_in` of the operator called `name` in `result`.
///
/// # Errors
///
/// The job has no such operator.
pub fn records_in(result: &JobResult, name: &str) -> anyhow::Result<u64> {
    result
        .operator(name)
        .map(|metrics| metrics.records_in)
        .ok_or_else(|| anyhow::anyhow!("the job result has no operator named '{name}'"))
}

/// How many malformed lines a job built with [`parse_readings`] reported.
///
/// # Errors
///
/// The job was not built with [`parse_readings`].
pub fn malformed_line_count(result: &JobResult) -> anyhow::Result<u64> {
    records_in(result, MALFORMED_SINK_NAME)
}

/// The reading with the lower temperature by [`f64::total_cmp`]; `a` on ties (which are then
/// bitwise equal temperatures).
///
/// # Examples
///
/// ```
/// use eichhorn_examples::sensors::{SensorReading, colder};
///
/// let a = SensorReading::parse("s,1,0.0", 1).unwrap();
/// let b = SensorReading::parse("s,2,-0.0", 2).unwrap();
/// assert_eq!(colder(a.clone(), b.clone()).line_number, 2);
/// assert_eq!(colder(b, a).line_number, 2);
/// ```
pub fn colder(a: SensorReading, b: SensorReading) -> SensorReading {
    if b.temperature.total_cmp(&a.temperature).is_lt() {
        b
    } else {
        a
    }
}

/// A window specification from the command line: `tumbling:SIZE_MS`,
/// `sliding:SIZE_MS:SLIDE_MS` or `session:GAP_MS`, all in event time.
///
/// # Examples
///
/// ```
/// use eichhorn_examples::sensors::WindowSpec;
///
/// let spec: WindowSpec = "sliding:10000:5000".parse().unwrap();
/// assert_eq!(spec, WindowSpec::Sliding { size_ms: 10_000, slide_ms: 5_000 });
/// assert!("session:0".parse::<WindowSpec>().is_err());
/// assert!("hopping:10".parse::<WindowSpec>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Tumbling windows of `size_ms`.
    Tumbling {
        /// The window size.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms`.
    Sliding {
        /// The window size.
        size_ms: i64,
        /// The distance between window starts.
        slide_ms: i64,
    },
    /// Session windows closing after `gap_ms` without readings.
    Session {
        /// The session gap.
        gap_ms: i64,
    },
}

impl WindowSpec {
    /// The event-time window assigner of this spec (offset 0).
    ///
    /// # Errors
    ///
    /// The parameters are out of range (a size, slide or gap `<= 0`, too many sliding windows
    /// per reading).
    pub fn assigner(self) -> Result<WindowAssigner, WindowError> {
        match self {
            Self::Tumbling { size_ms } => {
                WindowAssigner::tumbling(TimeDomain::EventTime, size_ms, 0)
            }
            Self::Sliding { size_ms, slide_ms } => {
                WindowAssigner::sliding(TimeDomain::EventTime, size_ms, slide_ms, 0)
            }
            Self::Session { gap_ms } => WindowAssigner::session(TimeDomain::EventTime, gap_ms),
        }
    }
}

impl FromStr for WindowSpec {
    type Err = WindowSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |index: usize, name: &'static str| {
            parts[index]
                .parse::<i64>()
                .map_err(|_| WindowSpecError::NotANumber {
                    name,
                    value: parts[index].to_string(),
                })
        };
        let spec = match (parts[0], parts.len()) {
            ("tumbling", 2) => Self::Tumbling {
                size_ms: number(1, "SIZE_MS")?,
            },
            ("sliding", 3) => Self::Sliding {
                size_ms: number(1, "SIZE_MS")?,
                slide_ms: number(2, "SLIDE_MS")?,
            },
            ("session", 2) => Self::Session {
                gap_ms: number(1, "GAP_MS")?,
            },
            ("tumbling" | "sliding" | "session", _) => {
                return Err(WindowSpecError::WrongArity {
                    kind: parts[0].to_string(),
                });
            }
            _ => {
                return Err(WindowSpecError::UnknownKind {
                    kind: parts[0].to_string(),
                });
            }
        };
        // Checked here so that a bad spec is rejected with the other argument errors.
        spec.assigner()?;
        Ok(spec)
    }
}

/// A window specification that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowSpecError {
    /// Not one of the three kinds.
    #[error(
        "unknown window kind '{kind}': expected tumbling:SIZE_MS, sliding:SIZE_MS:SLIDE_MS or \
         session:GAP_MS"
    )]
    UnknownKind {
        /// The kind given.
        kind: String,
    },
    /// A known kind with the wrong number of parameters.
    #[error(
        "wrong number of parameters for '{kind}': expected tumbling:SIZE_MS, \
         sliding:SIZE_MS:SLIDE_MS or session:GAP_MS"
    )]
    WrongArity {
        /// The kind given.
        kind: String,
    },
    /// A parameter that is not an integer.
    #[error("{name} '{value}' is not an integer number of milliseconds")]
    NotANumber {
        /// The parameter's name, e.g. `SIZE_MS`.
        name: &'static str,
        /// The text given.
        value: String,
    },
    /// The assigner rejects the parameters.
    #[error(transparent)]
    OutOfRange(#[from] WindowError),
}

/// One window firing: the window of a sensor and its minimum temperature so far.
///
/// Displays as the output line `sensor_id,window_start_ms,window_end_ms,min_temperature`
/// (`window_end_ms` exclusive, the temperature in `f64` `Display`).
///
/// # Examples
///
/// ```
/// use eichhorn_examples::sensors::WindowMinimum;
///
/// let firing = WindowMinimum {
///     sensor_id: "s1".into(),
///     window_start_ms: 0,
///     window_end_ms: 5_000,
///     min_temperature: -3.0,
/// };
/// assert_eq!(firing.to_string(), "s1,0,5000,-3");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowMinimum {
    /// The sensor.
    pub sensor_id: String,
    /// The window's first millisecond.
    pub window_start_ms: i64,
    /// The first millisecond after the window.
    pub window_end_ms: i64,
    /// The lowest temperature in the window.
    pub min_temperature: f64,
}

impl fmt::Display for WindowMinimum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.sensor_id, self.window_start_ms, self.window_end_ms, self.min_temperature
        )
    }
}

/// The window half of `reduce_with_process(colder, MinTemperature)`: turns a window's coldest
/// reading into a [`WindowMinimum`] with the window's bounds.
#[operator]
#[derive(Debug, Clone, Copy, Default)]
pub struct MinTemperature;

impl ProcessWindowFunction<String, SensorReading> for MinTemperature {
    type Out = WindowMinimum;

    fn process(
        &mut self,
        sensor_id: &String,
        ctx: &WindowContext,
        elements: Vec<SensorReading>,
        out: &mut Collector<'_, WindowMinimum>,
    ) {
        // After an incremental reduce there is exactly one element; emitting one firing per
        // element keeps the output honest if that ever changed.
        for coldest in elements {
            out.collect(WindowMinimum {
                sensor_id: sensor_id.clone(),
                window_start_ms: ctx.window.start,
                window_end_ms: ctx.window.end,
                min_temperature: coldest.temperature,
            });
        }
    }
}

/// The Flink book's `FreezingMonitor`: emits every reading unchanged and, for a reading below
/// the threshold, the alarm `Freezing Alarm for <sensor_id>` to a side output.
///
/// `FreezingMonitor::new(alarms, threshold)` raises alarms into `alarms` for temperatures
/// below `threshold`.
#[operator]
#[derive(Debug, Clone)]
pub struct FreezingMonitor {
    /// The side output of the alarms.
    alarms: OutputTag<String>,
    /// Readings below this temperature raise an alarm.
    threshold: f64,
}

impl ProcessFunction<SensorReading> for FreezingMonitor {
    type Out = SensorReading;

    fn process_element(
        &mut self,
        reading: SensorReading,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, SensorReading>,
    ) {
        if reading.temperature < self.threshold {
            ctx.output(
                &self.alarms,
                format!("Freezing Alarm for {}", reading.sensor_id),
            );
        }
        out.collect(reading);
    }
}

/// A sink that drops what it gets; its `records_in` in the job result still counts it.
#[operator]
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl<T> SinkFunction<T> for DiscardSink {
    fn invoke(&mut self, _value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(line: &str) -> MalformedReading {
        SensorReading::parse(line, 1).unwrap_err()
    }

    #[test]
    fn parses_fields_with_surrounding_spaces() {
        let reading = SensorReading::parse(" s 1 ,-20, -0.5e1 \r", 4).unwrap();
        assert_eq!(reading.sensor_id, "s 1");
        assert_eq!(reading.timestamp_ms, -20);
        assert_eq!(reading.temperature, -5.0);
        assert_eq!(reading.line, " s 1 ,-20, -0.5e1 \r");
    }

    #[test]
    fn rejects_every_kind_of_malformed_line() {
        assert_eq!(malformed(""), MalformedReading::EmptyLine);
        assert_eq!(malformed(" \t"), MalformedReading::EmptyLine);
        assert_eq!(malformed("s"), MalformedReading::FieldCount { found: 1 });
        assert_eq!(
            malformed("s,1,2,3"),
            MalformedReading::FieldCount { found: 4 }
        );
        assert_eq!(malformed(",1,2"), MalformedReading::EmptySensorId);
        assert!(matches!(
            malformed("s,1.5,2"),
            MalformedReading::Timestamp { .. }
        ));
        assert!(matches!(
            malformed("s,,2"),
            MalformedReading::Timestamp { .. }
        ));
        assert!(matches!(
            malformed("s,99999999999999999999,2"),
            MalformedReading::Timestamp { .. }
        ));
        assert!(matches!(
            malformed("s,1,warm"),
            MalformedReading::Temperature { .. }
        ));
        assert!(matches!(
            malformed("s,1,NaN"),
            MalformedReading::NonFiniteTemperature { .. }
        ));
        assert!(matches!(
            malformed("s,1,-inf"),
            MalformedReading::NonFiniteTemperature { .. }
        ));
    }

    #[test]
    fn malformed_reasons_name_the_field_and_value() {
        assert_eq!(
            malformed("s,1,warm").to_string(),
            "temperature 'warm' is not a decimal number"
        );
        assert!(
            malformed("s,12x,1")
                .to_string()
                .starts_with("timestamp_ms '12x'")
        );
    }

    #[test]
    fn window_specs_parse_and_validate() {
        assert_eq!(
            "tumbling:5000".parse(),
            Ok(WindowSpec::Tumbling { size_ms: 5_000 })
        );
        assert_eq!(
            "session:250".parse(),
            Ok(WindowSpec::Session { gap_ms: 250 })
        );
        for bad in [
            "",
            "tumbling",
            "tumbling:",
            "tumbling:5s",
            "tumbling:0",
            "tumbling:5:5",
            "sliding:10",
            "sliding:10:0",
            "sliding:10:-1",
            "session:-5",
            "Tumbling:5",
            "hopping:10:5",
        ] {
            assert!(bad.parse::<WindowSpec>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn colder_uses_the_total_order() {
        let reading = |temperature: f64, line_number| SensorReading {
            sensor_id: "s".into(),
            timestamp_ms: 0,
            temperature,
            line_number,
            line: String::new(),
        };
        assert_eq!(colder(reading(1.0, 1), reading(1.0, 2)).line_number, 1);
        assert_eq!(colder(reading(2.0, 1), reading(-1.0, 2)).line_number, 2);
        assert_eq!(colder(reading(-0.0, 1), reading(0.0, 2)).line_number, 1);
    }
}

/// The seed's `TempIncreaseAlertFunction`, in event time: per sensor, a first reading or a
/// reading lower than the previous one deletes the pending timer; a reading higher than the
/// previous one, when no timer is pending, registers an event-time timer at
/// `timestamp + interval_ms`; equal readings change nothing. When a timer fires (the watermark
/// reached it, never at registration) it emits `sensor_id,timer_timestamp_ms` and is forgotten.
///
/// `TempIncreaseAlert::new(interval_ms)` alerts on temperatures rising for `interval_ms` of
/// event time.
#[operator(uid = "temperature-increase-alert")]
#[derive(Debug, Clone)]
pub struct TempIncreaseAlert {
    /// The sensor's previous temperature.
    #[state(name = "last-temperature")]
    last_temperature: ValueState<f64>,
    /// The pending timer's timestamp, if one is registered.
    #[state(name = "pending-timer")]
    timer: ValueState<i64>,
    /// How long (event time, ms) a rise must last before it alerts.
    interval_ms: i64,
}

impl KeyedProcessFunction for TempIncreaseAlert {
    type Key = String;
    type In = SensorReading;
    type Out = String;

    fn process_element(
        &mut self,
        reading: SensorReading,
        ctx: &mut KeyedContext<'_, '_, String>,
        _out: &mut Collector<'_, String>,
    ) {
        let previous = self.last_temperature.value(ctx);
        self.last_temperature.update(ctx, reading.temperature);
        let pending = self.timer.value(ctx);
        match previous {
            Some(previous) if reading.temperature > previous => {
                if pending.is_none() {
                    let at = reading.timestamp_ms.saturating_add(self.interval_ms);
                    ctx.register_event_time_timer(at);
                    self.timer.update(ctx, at);
                }
            }
            // Equal readings change nothing.
            Some(previous) if reading.temperature == previous => {}
            // The first reading, or a drop: no rise is in progress.
            _ => {
                if let Some(at) = pending {
                    ctx.delete_event_time_timer(at);
                }
                self.timer.clear(ctx);
            }
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, String>,
        out: &mut Collector<'_, String>,
    ) {
        out.collect(format!("{},{timestamp}", ctx.current_key()));
        self.timer.clear(ctx);
    }
}

/// The Flink book's `TemperatureAlertFunction`, a flat map with keyed state: per sensor, it
/// remembers the last temperature and emits `sensor_id,temperature,change` when a reading
/// differs from the previous one by more than `threshold` (the first reading of a sensor only
/// sets the baseline).
///
/// `TemperatureAlert::new(threshold)` alerts on changes larger than `threshold`.
#[operator(uid = "temperature-alert")]
#[derive(Debug, Clone)]
pub struct TemperatureAlert {
    /// The sensor's previous temperature.
    #[state(name = "last-temperature")]
    last_temperature: ValueState<f64>,
    /// Changes larger than this (in either direction) alert.
    threshold: f64,
}

impl KeyedFlatMapFunction for TemperatureAlert {
    type Key = String;
    type In = SensorReading;
    type Out = String;

    fn flat_map(
        &mut self,
        reading: SensorReading,
        ctx: &mut KeyedContext<'_, '_, String>,
        out: &mut Collector<'_, String>,
    ) {
        if let Some(last) = self.last_temperature.value(ctx) {
            let change = reading.temperature - last;
            if change.abs() > self.threshold {
                out.collect(format!(
                    "{},{},{change}",
                    reading.sensor_id, reading.temperature
                ));
            }
        }
        self.last_temperature.update(ctx, reading.temperature);
    }
}
