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
//! - [`upnp`]: UPnP IGD's messages: the SSDP search and its answer, HTTP responses,
//!   a strict bounded XML scanner for the device description and SOAP replies, the
//!   SOAP requests; no allocator.
//! - [`igd`]: [`UpnpMapper`], the sans-IO machine for the same mappings over UPnP:
//!   discovery, the description, `AddPortMapping` with renewal at half the lease,
//!   error 718 and 725 handled, deletion at shutdown, the external address.
//!
//! The host finds the gateway, owns the UDP socket (sending to the gateway's port
//! 5351 and reading only what comes back from there), feeds the machine `now` and
//! datagrams, and sends what it returns. For UPnP it also multicasts the searches and
//! makes the HTTP requests [`UpnpMapper`] writes, off its loop, handing back the
//! responses.

pub mod client;
pub mod igd;
pub mod upnp;
pub mod wire;

pub use client::{MapError, MapState, MapperConfig, MappingStatus, PortMapEvent, PortMapper};
pub use igd::{UpnpConfig, UpnpEvent, UpnpMapper, UpnpTransmit};
pub use wire::{Protocol, ResultCode, Version};
