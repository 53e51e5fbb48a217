//! btcore std host
