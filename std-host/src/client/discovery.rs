//! Peer discovery besides trackers: the DHT socket (reading datagrams, at most
//! [`super::DHT_READS_PER_TURN`] a turn, and its timers) and local service discovery
//! (LSD) announces and replies, for the torrents that are not private.

use super::{Client, DHT_READS_PER_TURN};
use btcore_core::ids::InfoHash;
use btcore_core::session::{PeerSource, TorrentId};

impl Client {
    /// DHT timers and datagrams: hands the peers found to the session and reports
    /// the lookups done (the session decides when each torrent is looked up:
    /// [`Action::DhtLookup`]).
    pub(super) fn service_dht(&mut self) {
        let now = self.now();
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        let report = d.service(now);
        for f in report.found {
            if let Some(id) = f.torrent {
                self.session
                    .handle_peers(now, id, &f.peers, PeerSource::Dht);
            }
        }
        for (id, seq, outcome) in report.done {
            self.session.handle_dht_done(now, id, seq, outcome);
        }
    }

    /// Public, running torrents past their check: what LSD may speak of.
    pub(super) fn public_torrents(&self) -> Vec<(TorrentId, InfoHash)> {
        self.session.public_running_torrents().collect()
    }

    /// Peers heard on the local network, for public torrents only.
    pub(super) fn read_lsd(&mut self) {
        let now = self.now();
        let Some(l) = self.lsd.as_mut() else { return };
        let heard = l.read(now);
        if heard.is_empty() {
            return;
        }
        let public = self.public_torrents();
        for (ih, addr) in heard {
            if let Some((id, _)) = public.iter().find(|(_, h)| *h == ih) {
                self.session
                    .handle_peers(now, *id, &[addr], PeerSource::Lsd);
            }
        }
    }

    /// Announces public torrents on the local network when due.
    pub(super) fn service_lsd(&mut self) {
        if self.lsd.is_none() {
            return;
        }
        let now = self.now();
        let hashes: Vec<InfoHash> = self.public_torrents().into_iter().map(|(_, h)| h).collect();
        if let Some(l) = self.lsd.as_mut() {
            l.service(now, &hashes);
        }
    }

    /// DHT counters (None when the DHT is off).
    pub fn dht_stats(&self) -> Option<btcore_core::dht::DhtStats> {
        self.dht.as_ref().map(|d| d.stats(self.now()))
    }

    /// The DHT node (None when off).
    pub fn dht(&self) -> Option<&crate::dht::DhtHost> {
        self.dht.as_ref()
    }

    /// Handles waiting DHT datagrams, [`DHT_READS_PER_TURN`] at most.
    pub(super) fn read_dht(&mut self) {
        let now = self.now();
        if let Some(d) = self.dht.as_mut() {
            // uTP's datagrams when it shares the port.
            let mut utp = self.utp.as_mut();
            self.dht_more = d.read_with(now, DHT_READS_PER_TURN, |from, datagram| {
                if let Some(u) = utp.as_mut() {
                    u.on_datagram(now, from, datagram);
                }
            });
            // The IPv6 socket, if any (BEP 32), with a budget of its own.
            let more6 = d.read6_with(now, DHT_READS_PER_TURN, |from, datagram| {
                if let Some(u) = utp.as_mut() {
                    u.on_datagram(now, from, datagram);
                }
            });
            self.dht_more |= more6;
        }
    }
}
