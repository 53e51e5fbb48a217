//! Settings changed while the client runs ([`Client::apply_settings`], libtorrent's
//! `apply_settings`): the whole [`ClientOptions`] is given, and what can change is
//! applied; the rest keeps the value the client was made with.
//!
//! | changes at run time | kept from [`Client::new`] |
//! | --- | --- |
//! | `listen` (a new socket is bound first: on failure the old one stays) | `save_dir`, `state_dir` |
//! | `download_limit`, `upload_limit`, the `alt_*` limits, switch and schedule (from the next read or write) | `low_memory` |
//! | `download_queue`, `seed_queue`, `queue_stalled_minutes`, `seed_idle_minutes` | |
//! | `max_peers`, `max_connections` (what is over the new cap is closed at once) | `disk_threads` |
//! | `max_disk_queue` | `seed` |
//! | `dht` (on, off, or another port or bootstrap list), `lsd`, `pex` | `use_trackers` |
//! | `encryption` (for connections made from now on) | |
//! | `port_mapping` (mapped again when it or the listen port changes) | |
//! | `transport` (uTP on or off, the dial policy; the uTP socket follows the listen port and the DHT's) | |
//!
//! Everything that can fail (binding the new listen socket, the new DHT socket, the
//! LSD socket) is done before anything changes: an error leaves the client as it was.

use super::{dht_bind, session_config, start_dht, start_lsd, Client, ClientError};
use super::{ClientOptions, DHT, DHT6, LISTENER};
use btcore_core::session::DhtOutcome;
use mio::net::TcpListener;
use mio::Interest;
use std::net::SocketAddr;

impl Client {
    /// Applies `new` while running: the rate limits, the connection caps, the disk
    /// queue, the DHT, LSD and PEX switches, the encryption policy and the listen
    /// address (see the module's table). `new.listen` equal to the options the client
    /// has, or to the address it listens on, keeps the listener; any other is bound
    /// first, and an error (e.g. the port is in use) changes nothing. The DHT node is
    /// started, stopped, or started again when the address it would bind changes (its
    /// routing table goes through the state directory when there is one).
    pub fn apply_settings(&mut self, new: &ClientOptions) -> Result<(), ClientError> {
        let now = self.now();
        let old_port = self.local_addr.port();
        // 1. What can fail, before anything changes.
        let listener = if new.listen != self.opts.listen && new.listen != self.local_addr {
            let mut l = TcpListener::bind(new.listen)?;
            self.poll
                .registry()
                .register(&mut l, LISTENER, Interest::READABLE)?;
            Some(l)
        } else {
            None
        };
        let port = match &listener {
            Some(l) => l.local_addr()?.port(),
            None => self.local_addr.port(),
        };
        let dht_wanted = new.dht.as_ref().map(|d| (d, dht_bind(new, d, port)));
        let dht_now = self.dht.as_ref().and_then(|d| d.local_addr().ok());
        let old_dht_port = dht_now.map(|a| a.port());
        let bootstrap_changed = match (&self.opts.dht, &new.dht) {
            (Some(a), Some(b)) => a.bootstrap != b.bootstrap,
            _ => false,
        };
        let restart_dht = match (&dht_wanted, dht_now) {
            (Some((_, want)), Some(have)) => *want != have || bootstrap_changed,
            (None, None) => false,
            _ => true,
        };
        // Off first when the new node takes the old one's port (uTP's own socket too:
        // the new node shares it with uTP).
        let mut old_dht = None;
        if restart_dht {
            old_dht = self.stop_dht(now);
            if let Some((_, want)) = &dht_wanted {
                self.release_utp_port(want.port());
            }
        }
        let dht = match dht_wanted.filter(|_| restart_dht) {
            Some((d, _)) => {
                let seed = if new.seed != 0 {
                    new.seed
                } else {
                    crate::os::random_u64()
                };
                match start_dht(&self.poll, new, d, port, now, seed) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        self.restore_dht(old_dht);
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        let lsd = if new.lsd && self.lsd.is_none() {
            match start_lsd(&self.poll, port) {
                Ok(l) => Some(l),
                Err(e) => {
                    if let Some(mut h) = dht {
                        let _ = self.poll.registry().deregister(&mut h.socket);
                    }
                    self.restore_dht(old_dht);
                    return Err(e.into());
                }
            }
        } else {
            None
        };

        // 2. Nothing fails from here on.
        if let Some(l) = listener {
            let _ = self.poll.registry().deregister(&mut self.listener);
            if let Some(mut old6) = self.listener6.take() {
                let _ = self.poll.registry().deregister(&mut old6);
            }
            self.local_addr = SocketAddr::new(new.listen.ip(), port);
            self.listener = l;
            self.listener6 = super::bind_v6_twin(&self.poll, self.local_addr);
            self.accept_more = false;
        }
        drop(old_dht);
        if restart_dht {
            self.dht = dht;
            self.dht_more = false;
        }
        self.restart_utp(new, port);
        if !new.lsd {
            if let Some(mut l) = self.lsd.take() {
                let _ = self.poll.registry().deregister(l.socket_mut());
            }
        } else if let Some(l) = lsd {
            self.lsd = Some(l);
        }
        if let Some(l) = self.lsd.as_mut() {
            l.set_port_to_announce(port);
        }
        let old_mapping = self.opts.port_mapping.clone();
        // What cannot change keeps its value.
        let kept = ClientOptions {
            save_dir: self.opts.save_dir.clone(),
            state_dir: self.opts.state_dir.clone(),
            low_memory: self.opts.low_memory,
            disk_threads: self.opts.disk_threads,
            seed: self.opts.seed,
            use_trackers: self.opts.use_trackers,
            ..new.clone()
        };
        let mut config = session_config(&kept, self.session.config().peer_id, port);
        config.dht = self.dht.is_some();
        self.session.set_config(now, config);
        // The switch as the schedule left it counts as unchanged.
        let alt_enabled = if new.alt_speed_enabled != self.opts.alt_speed_enabled {
            new.alt_speed_enabled
        } else {
            self.alt.enabled()
        };
        self.opts = kept;
        self.restart_port_mapping(&old_mapping, old_port, old_dht_port);
        // The rate limits in force (the alternative ones while they apply).
        self.apply_alt_settings(alt_enabled);
        // Connections closed for the new caps.
        self.pump();
        Ok(())
    }

    /// Connections open over all torrents (dialing, in their handshake, established).
    pub fn num_connections(&self) -> usize {
        self.session.num_connections()
    }

    /// Stops the DHT node, if any: its table is saved and the session hears that its
    /// lookups failed. The node is returned (its socket still bound, no longer polled)
    /// so that a failed restart can put it back.
    fn stop_dht(&mut self, now: btcore_core::time::Instant) -> Option<crate::dht::DhtHost> {
        let mut d = self.dht.take()?;
        d.maybe_save(now, true);
        for (torrent, seq) in d.abandon_lookups() {
            self.session
                .handle_dht_done(now, torrent, seq, DhtOutcome::Failed);
        }
        d.deregister(self.poll.registry());
        Some(d)
    }

    /// Puts back a node [`Client::stop_dht`] took out.
    fn restore_dht(&mut self, old: Option<crate::dht::DhtHost>) {
        if let Some(mut d) = old {
            if d.register(self.poll.registry(), DHT, DHT6).is_ok() {
                self.dht = Some(d);
            }
        }
    }
}
