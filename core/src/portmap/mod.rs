//! Port mapping: asking the home gateway to forward our ports, with NAT-PMP (RFC 6886)
//! and PCP (RFC 6887), so that peers outside can dial us.
//!
//! - [`wire`]: the requests and responses of both protocols (IPv4 mappings), strict,
//!   with typed errors, no allocator.
//! - [`client`]: [`PortMapper`], the sans-IO machine for one gateway's mappings (the
//!   TCP port and the UDP port): PCP first, NAT-PMP when the gateway does not speak
//!   PCP; retransmissions bounded, renewal at half the lifetime, deletion at
//!   shutdown, the external address learned.
//!
//! The host finds the gateway, owns the UDP socket (sending to the gateway's port
//! 5351 and reading only what comes back from there), feeds the machine `now` and
//! datagrams, and sends what it returns.

pub mod client;
pub mod wire;

pub use client::{MapError, MapState, MapperConfig, MappingStatus, PortMapEvent, PortMapper};
pub use wire::{Protocol, ResultCode, Version};
