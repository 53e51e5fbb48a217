//! Alternative ("turtle") speed limits and their weekly schedule, as Transmission has
//! them (`alt-speed-*` settings): the decision only; the host reads its local clock,
//! calls [`AltSpeed::update`] once a minute, and applies the limits
//! [`AltSpeed::limits`] gives to its own rate limiting.
//!
//! A schedule is a span of minutes of the day (`begin` to `end`; an `end` at or
//! before `begin` runs past midnight into the next day, and `end == begin` is a whole
//! day) on the days of a mask with Transmission's bits: Sunday 1, Monday 2, ...,
//! Saturday 64. The span belongs to the day it begins on: Friday 22:00 to 06:00
//! covers Saturday 00:00 to 06:00 too, even when Saturday is not in the mask.
//!
//! The switch is the user's; the schedule turns it on when a span begins and off when
//! it ends (on its edges, as Transmission does), so a manual change lasts until the
//! next edge.

/// Sunday's bit in [`Schedule::days`].
pub const SUNDAY: u8 = 1;
/// Monday's bit.
pub const MONDAY: u8 = 2;
/// Tuesday's bit.
pub const TUESDAY: u8 = 4;
/// Wednesday's bit.
pub const WEDNESDAY: u8 = 8;
/// Thursday's bit.
pub const THURSDAY: u8 = 16;
/// Friday's bit.
pub const FRIDAY: u8 = 32;
/// Saturday's bit.
pub const SATURDAY: u8 = 64;
/// Monday to Friday.
pub const WEEKDAYS: u8 = MONDAY | TUESDAY | WEDNESDAY | THURSDAY | FRIDAY;
/// Saturday and Sunday.
pub const WEEKEND: u8 = SATURDAY | SUNDAY;
/// Every day.
pub const ALL_DAYS: u8 = WEEKDAYS | WEEKEND;

const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;

/// When the alternative limits apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The first minute of the span (0 = 00:00; values past 1439 count as 1439).
    pub begin_minute: u16,
    /// The minute the span ends (not included); at or before `begin_minute`: the
    /// next day.
    pub end_minute: u16,
    /// The days the span begins on ([`SUNDAY`] ... [`SATURDAY`]).
    pub days: u8,
}

impl Schedule {
    /// Whether the schedule is on at `minute` of the day (0 = 00:00) of `weekday`
    /// (0 = Sunday ... 6 = Saturday, as C's `tm_wday`; larger values and minutes
    /// past 1439 are clamped).
    pub fn is_active(&self, weekday: u8, minute: u16) -> bool {
        let day_min = |m: u16| u32::from(m).min(DAY - 1);
        let now = u32::from(weekday.min(6)) * DAY + day_min(minute);
        let begin = day_min(self.begin_minute);
        let mut end = day_min(self.end_minute);
        if end <= begin {
            end += DAY;
        }
        (0..7u32)
            .filter(|d| self.days & (1 << d) != 0)
            .any(|d| (now + WEEK - (d * DAY + begin)) % WEEK < end - begin)
    }
}

/// The alternative speed switch with its optional schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltSpeed {
    enabled: bool,
    schedule: Option<Schedule>,
    /// The schedule's state at the last update (`None`: not looked at since it was
    /// set).
    last: Option<bool>,
}

impl AltSpeed {
    /// Off, without a schedule.
    pub const fn new() -> Self {
        Self {
            enabled: false,
            schedule: None,
            last: None,
        }
    }

    /// Whether the alternative limits apply now.
    pub const fn enabled(&self) -> bool {
        self.enabled
    }

    /// The schedule, if any.
    pub const fn schedule(&self) -> Option<Schedule> {
        self.schedule
    }

    /// Turns the alternative limits on or off by hand (until the schedule's next
    /// edge, when there is a schedule).
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Sets or removes the schedule. A new schedule decides at the next
    /// [`AltSpeed::update`] (the limits then follow it, as at start in Transmission);
    /// an unchanged one keeps the state it is in.
    pub fn set_schedule(&mut self, schedule: Option<Schedule>) {
        if schedule != self.schedule {
            self.schedule = schedule;
            self.last = None;
        }
    }

    /// The local time is `minute` of `weekday` (0 = Sunday): with a schedule, the
    /// switch follows it when it is first looked at and on each of its edges.
    /// Returns whether [`AltSpeed::enabled`] changed.
    pub fn update(&mut self, weekday: u8, minute: u16) -> bool {
        let Some(s) = self.schedule else {
            return false;
        };
        let active = s.is_active(weekday, minute);
        let before = self.enabled;
        if self.last != Some(active) {
            self.enabled = active;
        }
        self.last = Some(active);
        before != self.enabled
    }

    /// The limits (download, upload in bytes/s, 0: none) that apply: `alt` while
    /// enabled, `normal` otherwise.
    pub const fn limits(&self, normal: (u64, u64), alt: (u64, u64)) -> (u64, u64) {
        if self.enabled {
            alt
        } else {
            normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn a_span_within_a_day() {
        // Weekdays 09:00 to 17:00.
        let s = Schedule {
            begin_minute: at(9, 0),
            end_minute: at(17, 0),
            days: WEEKDAYS,
        };
        assert!(!s.is_active(1, at(8, 59)));
        assert!(s.is_active(1, at(9, 0)));
        assert!(s.is_active(3, at(16, 59)));
        assert!(!s.is_active(3, at(17, 0)));
        // Not on Saturday or Sunday.
        assert!(!s.is_active(6, at(12, 0)));
        assert!(!s.is_active(0, at(12, 0)));
    }

    #[test]
    fn a_span_past_midnight_belongs_to_the_day_it_begins() {
        // Friday only, 22:00 to 06:00.
        let s = Schedule {
            begin_minute: at(22, 0),
            end_minute: at(6, 0),
            days: FRIDAY,
        };
        assert!(!s.is_active(5, at(21, 59)));
        assert!(s.is_active(5, at(22, 0)));
        assert!(s.is_active(5, at(23, 59)));
        // Saturday morning is Friday's night, though Saturday is not in the mask.
        assert!(s.is_active(6, at(0, 0)));
        assert!(s.is_active(6, at(5, 59)));
        assert!(!s.is_active(6, at(6, 0)));
        assert!(!s.is_active(6, at(22, 30)));
        // Friday morning would be Thursday's night: Thursday is not in the mask.
        assert!(!s.is_active(5, at(1, 0)));
    }

    #[test]
    fn saturday_night_wraps_into_sunday() {
        let s = Schedule {
            begin_minute: at(23, 0),
            end_minute: at(1, 0),
            days: SATURDAY,
        };
        assert!(s.is_active(6, at(23, 30)));
        assert!(s.is_active(0, at(0, 30)));
        assert!(!s.is_active(0, at(1, 0)));
        assert!(!s.is_active(0, at(23, 30)));
    }

    #[test]
    fn equal_ends_are_a_whole_day_and_no_day_is_never() {
        let s = Schedule {
            begin_minute: at(8, 0),
            end_minute: at(8, 0),
            days: MONDAY,
        };
        assert!(s.is_active(1, at(8, 0)));
        assert!(s.is_active(1, at(23, 59)));
        assert!(s.is_active(2, at(7, 59)));
        assert!(!s.is_active(2, at(8, 0)));
        let never = Schedule { days: 0, ..s };
        assert!((0..7).all(|d| (0..DAY as u16).all(|m| !never.is_active(d, m))));
        // Out-of-range input is clamped, never a panic.
        assert!(!never.is_active(200, u16::MAX));
    }

    #[test]
    fn the_switch_follows_the_schedule_on_its_edges() {
        let mut a = AltSpeed::new();
        assert_eq!(a.limits((100, 50), (10, 5)), (100, 50));
        // Manual on, no schedule: updates change nothing.
        a.set_enabled(true);
        assert!(!a.update(1, at(12, 0)));
        assert_eq!(a.limits((100, 50), (10, 5)), (10, 5));
        a.set_schedule(Some(Schedule {
            begin_minute: at(9, 0),
            end_minute: at(17, 0),
            days: ALL_DAYS,
        }));
        // First look: the schedule decides (off at 08:00).
        assert!(a.update(1, at(8, 0)));
        assert!(!a.enabled());
        // The span begins: on.
        assert!(a.update(1, at(9, 0)));
        assert!(a.enabled());
        // Turned off by hand inside the span: stays off until the next edge.
        a.set_enabled(false);
        assert!(!a.update(1, at(10, 0)));
        assert!(!a.enabled());
        // The span ends (already off), then begins again the next day: on.
        assert!(!a.update(1, at(17, 0)));
        assert!(a.update(2, at(9, 0)));
        assert!(a.enabled());
        // The schedule removed: the switch stays where it is.
        a.set_schedule(None);
        assert!(!a.update(2, at(18, 0)));
        assert!(a.enabled());
    }
}
