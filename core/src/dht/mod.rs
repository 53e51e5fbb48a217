//! The Mainline DHT (BEP 5, with BEP 32 IPv6 and BEP 42 ids), sans-IO.
//!
//! - [`krpc`]: the KRPC codec (no allocator).
//! - [`table`]: the k-bucket routing table; a node keeps two, one of IPv4 and one
//!   of IPv6 nodes (BEP 32: two DHTs, each bootstrapped from its own addresses, a
//!   lookup running in each the node takes part in).
//! - [`bep42`]: node ids bound to IP addresses (BEP 42): the check that keeps
//!   others' made-up ids out of the tables, and our own id derived from our
//!   external address once voted.
//! - [`lookup`]: iterative `find_node` / `get_peers` lookups.
//! - [`store`]: announced peers and write tokens.
//! - [`addr`]: who counts as one party (host, subnet) for the per-address limits.
//! - [`Dht`]: the state machine tying them together.
//!
//! # Driving a [`Dht`]
//!
//! The host owns one UDP socket per address family and a clock:
//!
//! 1. every datagram received: [`Dht::handle_datagram`]`(now, from, bytes)`;
//! 2. then, and after every command or timeout: drain [`Dht::poll_transmit`] into the
//!    socket until it returns `None` (the buffer must hold [`krpc::MAX_DATAGRAM`]);
//! 3. drain [`Dht::poll_event`] (peers found, lookups finished);
//! 4. sleep until [`Dht::poll_timeout`] or the next datagram; when the deadline is
//!    reached call [`Dht::handle_timeout`]`(now)` and go back to 2.
//!
//! Every method that changes state takes `now`; nothing reads a clock or draws
//! randomness other than the host's seed.
//!
//! Work per datagram is bounded: the parse uses a fixed token table, an answer
//! needs a few scans of the routing table (at most 160 buckets of k nodes and k
//! replacements), an announce into a full store one scan of its torrents (at most
//! [`StoreLimits::hashes`]) and one sort of a torrent's peers (at most
//! [`StoreLimits::per_hash`]), queries beyond a per-source rate are dropped
//! unanswered, and responses are only accepted for transactions in flight, from the
//! address they were sent to.
//!
//! # What a query can make the node send
//!
//! A query's source address may be forged, so the node must not be a reflector that
//! turns small queries into large datagrams at a victim. In order:
//!
//! - each source (an IPv4 /24, an IPv6 /64) gets
//!   [`DhtConfig::max_queries_per_source_per_sec`] answers, counted in a fixed table
//!   keyed by a secret hash that rotating sources cannot flush;
//! - an answer, with any ping of the querier, is at most
//!   [`DhtConfig::max_reply_ratio`] times the query's size: a `get_peers` answer
//!   holds `values` when the node stores peers, else `nodes` (BEP 5), nodes of the
//!   querier's family unless `want` asks for others (BEP 32), and fewer of them when
//!   they would not fit;
//! - answers to sources that never answered a query of ours share
//!   [`DhtConfig::unconfirmed_reply_bytes_per_sec`]; past it they go unanswered;
//! - pings of queriers take at most half of [`DhtConfig::max_outstanding`], so
//!   spoofed queriers cannot hold back our own lookups.
//!
//! # One party, many nodes
//!
//! A single host can pose as any number of nodes (one per UDP port, each with its
//! own id) and forge the source of a query. So, as in libtorrent:
//!
//! - one *host* is an IPv4 address or an IPv6 /64, one *subnet* an IPv4 /24 or an
//!   IPv6 /48 (see [`addr`]);
//! - the routing table holds one entry per host, one per subnet in a bucket, and
//!   only nodes that answered a query of ours from their address; a querier is
//!   pinged first (see [`table`]); only those confirmed nodes are handed out in
//!   `nodes` and seed lookups;
//! - a lookup keeps one candidate per subnet (see [`lookup`]);
//! - the peer store keeps one entry per host per torrent, caps what one host and
//!   one subnet can store over all torrents, and evicts the least useful entry when
//!   full, from the subnet with the most peers in the torrent (see [`store`]); a
//!   write token is bound to the IP it was issued to;
//! - nodes and peers at loopback addresses are believed only from a loopback
//!   sender.
//! - BEP 42: a node's id must match its address (8 prefixes of 21 bits per IPv4
//!   address), or it stays out of the tables (local-network addresses exempt).
//!
//! Loopback addresses are exempt from the per-address limits: only this machine
//! can send from them.

#[cfg(feature = "alloc")]
pub mod addr;
#[cfg(feature = "alloc")]
pub mod bep42;
pub mod krpc;
#[cfg(feature = "alloc")]
mod limit;
#[cfg(feature = "alloc")]
pub mod lookup;
#[cfg(feature = "alloc")]
mod node;
#[cfg(feature = "alloc")]
pub mod store;
#[cfg(feature = "alloc")]
pub mod table;

pub use krpc::{NodeId, NodeInfo};
#[cfg(feature = "alloc")]
pub use lookup::{LookupId, LookupKind};
#[cfg(feature = "alloc")]
pub use node::{Dht, DhtConfig, DhtEvent, DhtStats, MAX_BOOTSTRAP};
#[cfg(feature = "alloc")]
pub use store::{PeerStore, StoreLimits};
#[cfg(feature = "alloc")]
pub use table::TableConfig;
