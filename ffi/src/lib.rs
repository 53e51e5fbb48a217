//! libbtcore: the C ABI of btcore. The session and sans-IO APIs land here; for now it
//! exports the version, so the library builds and links from C.
#![deny(unsafe_op_in_unsafe_fn)]
