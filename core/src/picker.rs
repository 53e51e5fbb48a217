//! The piece picker (in progress).
