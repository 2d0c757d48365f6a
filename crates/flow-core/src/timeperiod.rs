//! Synergy's `YYYYMMDDHH` timeperiods.
//!
//! A timeperiod names the slice of time a flow processes: `2026112807`
//! (hourly), `2026112800` (daily), `2026110000` (monthly), `2026000000`
//! (yearly). The qualifier decides which digits must be zero.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The length of one period of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeQualifier {
    /// One hour: `YYYYMMDDHH`.
    #[default]
    Hourly,
    /// One day: `YYYYMMDD00`.
    Daily,
    /// One month: `YYYYMM0000`.
    Monthly,
    /// One year: `YYYY000000`.
    Yearly,
}

impl TimeQualifier {
    /// The name flow files use: `hourly`, `daily`, `monthly`, `yearly`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeQualifier::Hourly => "hourly",
            TimeQualifier::Daily => "daily",
            TimeQualifier::Monthly => "monthly",
            TimeQualifier::Yearly => "yearly",
        }
    }
}

/// Why a timeperiod string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeperiodError {
    #[error("timeperiod '{text}' is not 10 digits in the form YYYYMMDDHH")]
    /// Not ten digits.
    Shape {
        /// The timeperiod as given.
        text: String,
    },
    #[error("timeperiod '{text}' is not a real date and hour: {reason}")]
    /// Not a real date and hour.
    Calendar {
        /// The timeperiod as given.
        text: String,
        /// Why.
        reason: &'static str,
    },
    /// Not on the qualifier's grid (e.g. a daily one with an hour).
    #[error("timeperiod '{text}' is not {qualifier}: {reason}")]
    Qualifier {
        /// The timeperiod as given.
        text: String,
        /// The time qualifier, e.g. `daily`.
        qualifier: &'static str,
        /// Why.
        reason: &'static str,
    },
    #[error("window end '{end}' is not after its start '{start}'")]
    /// A window whose end is not after its start.
    EmptyWindow {
        /// The start.
        start: String,
        /// The end.
        end: String,
    },
    /// The next period would start in year 10000.
    #[error("the {qualifier} period after '{text}' starts in year 10000, which a timeperiod (YYYYMMDDHH) cannot represent; the last period that can be processed ends before 9999-12-31 23:00")]
    Unrepresentable {
        /// The timeperiod as given.
        text: String,
        /// The time qualifier, e.g. `daily`.
        qualifier: &'static str,
    },
}

/// A point on Synergy's timeperiod grid. Ordering is chronological.
///
/// Written `YYYYMMDDHH`: `2026112807` (hourly), `2026112800` (daily),
/// `2026110000` (monthly), `2026000000` (yearly). A run processes the
/// window `[start, end)`, by default one period of the flow's
/// [`TimeQualifier`]:
///
/// ```
/// use flow_core::{TimeQualifier, Timeperiod};
///
/// let day: Timeperiod = "2026112800".parse()?;
/// assert_eq!(day.next(TimeQualifier::Daily).to_string(), "2026112900");
/// // Periods roll over months and years.
/// let last: Timeperiod = "2026123123".parse()?;
/// assert_eq!(last.next(TimeQualifier::Hourly).to_string(), "2027010100");
/// let month = Timeperiod::parse_for("2026110000", TimeQualifier::Monthly)?;
/// assert_eq!(month.next(TimeQualifier::Monthly).to_string(), "2026120000");
///
/// // A daily timeperiod ends in 00; an impossible date is refused.
/// assert!(Timeperiod::parse_for("2026112807", TimeQualifier::Daily).is_err());
/// assert!("2026023000".parse::<Timeperiod>().is_err());
///
/// // A window must end after it starts.
/// let end = day.next(TimeQualifier::Daily);
/// assert!(Timeperiod::check_window(day, end).is_ok());
/// assert!(Timeperiod::check_window(end, day).is_err());
/// # Ok::<(), flow_core::TimeperiodError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeperiod {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
}

impl Timeperiod {
    /// A valid timeperiod (2026010100), for rendering templates whose
    /// shape does not depend on the value.
    pub const SAMPLE: Timeperiod = Timeperiod {
        year: 2026,
        month: 1,
        day: 1,
        hour: 0,
    };

    /// Parses `text` and checks that it fits `qualifier` (e.g. a daily
    /// timeperiod ends in `00`).
    pub fn parse_for(text: &str, qualifier: TimeQualifier) -> Result<Self, TimeperiodError> {
        let tp: Timeperiod = text.parse()?;
        let bad = |reason| TimeperiodError::Qualifier {
            text: text.to_string(),
            qualifier: qualifier.as_str(),
            reason,
        };
        match qualifier {
            TimeQualifier::Hourly if tp.day == 0 => Err(bad("an hourly timeperiod needs a day")),
            TimeQualifier::Daily if tp.day == 0 => Err(bad("a daily timeperiod needs a day")),
            TimeQualifier::Daily if tp.hour != 0 => Err(bad("a daily timeperiod ends in 00")),
            TimeQualifier::Monthly if tp.month == 0 => {
                Err(bad("a monthly timeperiod needs a month"))
            }
            TimeQualifier::Monthly if tp.day != 0 || tp.hour != 0 => {
                Err(bad("a monthly timeperiod ends in 0000"))
            }
            TimeQualifier::Yearly if tp.month != 0 || tp.day != 0 || tp.hour != 0 => {
                Err(bad("a yearly timeperiod ends in 000000"))
            }
            _ => Ok(tp),
        }
    }

    /// The start of the next period of `qualifier` after this one. Past
    /// the last representable period (year 9999) it returns `self`, which
    /// makes an empty window that [`Timeperiod::check_window`] refuses; use
    /// [`Timeperiod::checked_next`] to say why.
    pub fn next(self, qualifier: TimeQualifier) -> Timeperiod {
        self.checked_next(qualifier).unwrap_or(self)
    }

    /// The start of the next period of `qualifier` after this one, or an
    /// error when it would be in year 10000 (11 digits, not a timeperiod).
    pub fn checked_next(self, qualifier: TimeQualifier) -> Result<Timeperiod, TimeperiodError> {
        let next = self.unchecked_next(qualifier);
        if next.year > 9999 || next <= self {
            return Err(TimeperiodError::Unrepresentable {
                text: self.to_string(),
                qualifier: qualifier.as_str(),
            });
        }
        Ok(next)
    }

    fn unchecked_next(self, qualifier: TimeQualifier) -> Timeperiod {
        match qualifier {
            TimeQualifier::Yearly => Timeperiod {
                year: self.year + 1,
                month: 0,
                day: 0,
                hour: 0,
            },
            TimeQualifier::Monthly => {
                let (year, month) = if self.month >= 12 {
                    (self.year + 1, 1)
                } else {
                    (self.year, self.month.max(1) + u8::from(self.month != 0))
                };
                Timeperiod {
                    year,
                    month,
                    day: 0,
                    hour: 0,
                }
            }
            TimeQualifier::Daily => self.add_days(1, 0),
            TimeQualifier::Hourly => {
                if self.hour >= 23 {
                    self.add_days(1, 0)
                } else {
                    Timeperiod {
                        hour: self.hour + 1,
                        ..self
                    }
                }
            }
        }
    }

    fn add_days(self, days: u64, hour: u8) -> Timeperiod {
        let date = NaiveDate::from_ymd_opt(
            i32::from(self.year),
            u32::from(self.month.max(1)),
            u32::from(self.day.max(1)),
        )
        .and_then(|d| d.checked_add_days(chrono::Days::new(days)));
        match date {
            Some(d) => Timeperiod {
                year: d.year() as u16,
                month: d.month() as u8,
                day: d.day() as u8,
                hour,
            },
            // Only reachable past year 9999; saturate rather than wrap.
            None => self,
        }
    }

    /// The instant this timeperiod starts, in UTC (`2026112807` is
    /// 2026-11-28T07:00:00Z; a month or day of `00` counts as the first).
    pub fn start(self) -> chrono::DateTime<chrono::Utc> {
        NaiveDate::from_ymd_opt(
            i32::from(self.year),
            u32::from(self.month.max(1)),
            u32::from(self.day.max(1)),
        )
        .and_then(|d| d.and_hms_opt(u32::from(self.hour), 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
    }

    /// The period of `qualifier` that holds this timeperiod's start (the day
    /// `2026112800` of the hour `2026112807`, say).
    pub fn within(self, qualifier: TimeQualifier) -> Timeperiod {
        match qualifier {
            TimeQualifier::Hourly => self,
            TimeQualifier::Daily => Timeperiod { hour: 0, ..self },
            TimeQualifier::Monthly => Timeperiod {
                day: 0,
                hour: 0,
                ..self
            },
            TimeQualifier::Yearly => Timeperiod {
                month: 0,
                day: 0,
                hour: 0,
                ..self
            },
        }
        .at_least(qualifier)
    }

    /// The period of `qualifier` that holds the instant `at`.
    pub fn containing(at: chrono::DateTime<chrono::Utc>, qualifier: TimeQualifier) -> Timeperiod {
        use chrono::Timelike;
        Timeperiod {
            year: at.year().clamp(1, 9999) as u16,
            month: at.month() as u8,
            day: at.day() as u8,
            hour: at.hour() as u8,
        }
        .within(qualifier)
    }

    /// An hourly or daily period needs a day and a month, a monthly one a
    /// month: fills in the first where a coarser timeperiod left `00`.
    fn at_least(self, qualifier: TimeQualifier) -> Timeperiod {
        match qualifier {
            TimeQualifier::Hourly | TimeQualifier::Daily => Timeperiod {
                month: self.month.max(1),
                day: self.day.max(1),
                ..self
            },
            TimeQualifier::Monthly => Timeperiod {
                month: self.month.max(1),
                ..self
            },
            TimeQualifier::Yearly => self,
        }
    }

    /// Checks that `[start, end)` is a non-empty window.
    pub fn check_window(start: Timeperiod, end: Timeperiod) -> Result<(), TimeperiodError> {
        if end <= start {
            return Err(TimeperiodError::EmptyWindow {
                start: start.to_string(),
                end: end.to_string(),
            });
        }
        Ok(())
    }
}

impl FromStr for Timeperiod {
    type Err = TimeperiodError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TimeperiodError::Shape {
                text: text.to_string(),
            });
        }
        let num = |range: std::ops::Range<usize>| text[range].parse::<u16>().unwrap_or(0);
        let (year, month, day, hour) = (num(0..4), num(4..6), num(6..8), num(8..10));
        let bad = |reason| TimeperiodError::Calendar {
            text: text.to_string(),
            reason,
        };
        if year == 0 {
            return Err(bad("year 0000 does not exist"));
        }
        if month > 12 {
            return Err(bad("month is above 12"));
        }
        if hour > 23 {
            return Err(bad("hour is above 23"));
        }
        if month == 0 && (day != 0 || hour != 0) {
            return Err(bad("a day or hour without a month"));
        }
        if day == 0 && hour != 0 {
            return Err(bad("an hour without a day"));
        }
        if day != 0
            && NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day)).is_none()
        {
            return Err(bad("no such day in that month"));
        }
        Ok(Timeperiod {
            year,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
        })
    }
}

impl fmt::Display for Timeperiod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour
        )
    }
}

impl Serialize for Timeperiod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timeperiod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_and_contain() {
        let hour: Timeperiod = "2026112807".parse().unwrap();
        assert_eq!(hour.start().to_rfc3339(), "2026-11-28T07:00:00+00:00");
        assert_eq!(hour.within(TimeQualifier::Daily).to_string(), "2026112800");
        assert_eq!(
            hour.within(TimeQualifier::Monthly).to_string(),
            "2026110000"
        );
        assert_eq!(hour.within(TimeQualifier::Yearly).to_string(), "2026000000");
        let year: Timeperiod = "2026000000".parse().unwrap();
        assert_eq!(year.within(TimeQualifier::Hourly).to_string(), "2026010100");
        assert_eq!(year.start().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let at = hour.start() + chrono::TimeDelta::minutes(59);
        assert_eq!(Timeperiod::containing(at, TimeQualifier::Hourly), hour);
        assert_eq!(
            Timeperiod::containing(at, TimeQualifier::Daily).to_string(),
            "2026112800"
        );
    }

    fn tp(s: &str) -> Timeperiod {
        s.parse().unwrap()
    }

    #[test]
    fn parses_each_qualifier() {
        assert!(Timeperiod::parse_for("2026112807", TimeQualifier::Hourly).is_ok());
        assert!(Timeperiod::parse_for("2026112800", TimeQualifier::Daily).is_ok());
        assert!(Timeperiod::parse_for("2026110000", TimeQualifier::Monthly).is_ok());
        assert!(Timeperiod::parse_for("2026000000", TimeQualifier::Yearly).is_ok());
        assert!(Timeperiod::parse_for("2026112807", TimeQualifier::Daily).is_err());
        assert!(Timeperiod::parse_for("2026110000", TimeQualifier::Daily).is_err());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "202611280",
            "20261128077",
            "2026-11-28",
            "2026133000",
            "2026023000",
            "2026112824",
            "0000010100",
            "2026000100",
        ] {
            assert!(
                bad.parse::<Timeperiod>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn next_rolls_over() {
        assert_eq!(
            tp("2026112823").next(TimeQualifier::Hourly),
            tp("2026112900")
        );
        assert_eq!(
            tp("2026123123").next(TimeQualifier::Hourly),
            tp("2027010100")
        );
        assert_eq!(
            tp("2026022800").next(TimeQualifier::Daily),
            tp("2026030100")
        );
        assert_eq!(
            tp("2024022800").next(TimeQualifier::Daily),
            tp("2024022900")
        );
        assert_eq!(
            tp("2026120000").next(TimeQualifier::Monthly),
            tp("2027010000")
        );
        assert_eq!(
            tp("2026110000").next(TimeQualifier::Monthly),
            tp("2026120000")
        );
        assert_eq!(
            tp("2026000000").next(TimeQualifier::Yearly),
            tp("2027000000")
        );
    }

    #[test]
    fn the_last_periods_have_no_representable_end() {
        for (t, q) in [
            ("9999000000", TimeQualifier::Yearly),
            ("9999120000", TimeQualifier::Monthly),
            ("9999123100", TimeQualifier::Daily),
            ("9999123123", TimeQualifier::Hourly),
        ] {
            let e = tp(t).checked_next(q).unwrap_err();
            assert!(e.to_string().contains("year 10000"), "{e}");
            assert_eq!(tp(t).next(q), tp(t), "next saturates instead");
        }
        assert_eq!(
            tp("9999123022").checked_next(TimeQualifier::Hourly),
            Ok(tp("9999123023"))
        );
        assert_eq!(
            tp("9998000000").checked_next(TimeQualifier::Yearly),
            Ok(tp("9999000000"))
        );
    }

    #[test]
    fn window_must_not_be_empty() {
        assert!(Timeperiod::check_window(tp("2026112800"), tp("2026112800")).is_err());
        assert!(Timeperiod::check_window(tp("2026112800"), tp("2026112900")).is_ok());
    }
}
