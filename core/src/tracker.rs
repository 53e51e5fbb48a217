//! Tracker codecs (in progress).
