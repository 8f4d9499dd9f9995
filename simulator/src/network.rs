//! A simulated UDP network on virtual time, with faults drawn from a seed.
//!
//! Every simulated node binds a [`SimSocket`] (quinn's `AsyncUdpSocket`) on a [`SimNetwork`];
//! a datagram sent from one is delivered to the other's inbox after a latency drawn from the
//! network's generator, or lost, duplicated, corrupted, delayed by a spike, or dropped by a
//! partition. Time is tokio's (paused in a simulation), so a run of many virtual seconds takes
//! milliseconds and the same seed gives the same run: every datagram delivered is fed into
//! [`SimNetwork::trace_hash`].
//!
//! Faults are per datagram and independent; reordering follows from the random latencies.
//! Corrupted datagrams are delivered (QUIC's packet protection must reject them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future as _;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use tokio::time::{Instant, Sleep};

/// What can go wrong on the simulated links, per datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFaults {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Probability that one byte of a datagram is flipped.
    pub corrupt: f64,
    /// The smallest and largest latency of a datagram (uniform between them).
    pub latency: (Duration, Duration),
    /// Probability of a delay spike, and its length (added to the latency).
    pub spike: (f64, Duration),
}

impl LinkFaults {
    /// A perfect network: 1 ms latency, nothing lost.
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            latency: (Duration::from_millis(1), Duration::from_millis(1)),
            spike: (0.0, Duration::ZERO),
        }
    }

    /// A bad network: 10% loss, 5% duplicates, 2% corruption, 2 to 40 ms latency (so datagrams
    /// overtake each other), 1% spikes of 300 ms.
    pub fn harsh() -> Self {
        Self {
            loss: 0.10,
            duplicate: 0.05,
            corrupt: 0.02,
            latency: (Duration::from_millis(2), Duration::from_millis(40)),
            spike: (0.01, Duration::from_millis(300)),
        }
    }
}

/// Counts of what happened to datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Dropped by a partition or because nobody listens at the address.
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Delivered with a flipped byte.
    pub corrupted: u64,
}

struct Inbox {
    /// Datagrams by delivery time and sequence number: (sender, bytes).
    queue: BTreeMap<(Instant, u64), (SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

struct State {
    rng: u64,
    faults: LinkFaults,
    inboxes: BTreeMap<SocketAddr, Inbox>,
    /// Pairs of addresses that cannot reach each other (both directions stored).
    partitions: BTreeSet<(SocketAddr, SocketAddr)>,
    sequence: u64,
    /// Running FNV-1a hash over every delivered datagram.
    trace: u64,
    stats: NetworkStats,
    /// When the network was made: trace times are relative to it.
    epoch: Instant,
    /// Datagrams held per inbox at most; more are dropped (a full receive buffer).
    inbox_limit: usize,
    /// From when on the links are perfect again ([`LinkFaults::none`]); `None`: never.
    faults_until: Option<Instant>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl State {
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        eichhorn::state::splitmix64(self.rng)
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }

    fn latency(&mut self) -> Duration {
        let (low, high) = self.faults.latency;
        let span = high.saturating_sub(low).as_nanos() as u64;
        let mut latency =
            low + Duration::from_nanos(if span == 0 { 0 } else { self.next_u64() % span });
        if self.chance(self.faults.spike.0) {
            latency += self.faults.spike.1;
        }
        latency
    }

    fn hash(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.trace = (self.trace ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds an address into the trace: its IP's octets and its port (no text formatting
    /// per datagram).
    fn hash_addr(&mut self, addr: SocketAddr) {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => self.hash(&ip.octets()),
            std::net::IpAddr::V6(ip) => self.hash(&ip.octets()),
        }
        self.hash(&addr.port().to_le_bytes());
    }

    fn enqueue(&mut self, to: SocketAddr, from: SocketAddr, at: Instant, bytes: Vec<u8>) {
        self.sequence += 1;
        let sequence = self.sequence;
        let limit = self.inbox_limit;
        let Some(inbox) = self.inboxes.get_mut(&to) else {
            self.stats.dropped += 1;
            return;
        };
        if inbox.queue.len() >= limit {
            self.stats.dropped += 1;
            return;
        }
        inbox.queue.insert((at, sequence), (from, bytes));
        if let Some(waker) = inbox.waker.take() {
            waker.wake();
        }
    }
}

/// The simulated network: shared by every socket bound on it.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimNetwork")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SimNetwork {
    /// A network whose faults are drawn from `seed`. Call inside the simulation's runtime (it
    /// reads tokio's clock).
    pub fn new(seed: u64, faults: LinkFaults) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: seed,
                faults,
                inboxes: BTreeMap::new(),
                partitions: BTreeSet::new(),
                sequence: 0,
                trace: FNV_OFFSET,
                stats: NetworkStats::default(),
                epoch: Instant::now(),
                inbox_limit: 4096,
                faults_until: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (every update is one step).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Binds a socket at `addr`.
    ///
    /// # Errors
    ///
    /// Another socket is bound there.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Arc<SimSocket>> {
        let mut state = self.lock();
        if state.inboxes.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on the simulated network"),
            ));
        }
        state.inboxes.insert(
            addr,
            Inbox {
                queue: BTreeMap::new(),
                waker: None,
            },
        );
        Ok(Arc::new(SimSocket {
            addr,
            network: self.clone(),
            timer: Mutex::new(None),
        }))
    }

    /// Unbinds `addr` (a node crashed): its queued datagrams are lost, and datagrams to it are
    /// dropped until it binds again.
    pub fn unbind(&self, addr: SocketAddr) {
        if let Some(inbox) = self.lock().inboxes.remove(&addr)
            && let Some(waker) = inbox.waker
        {
            waker.wake();
        }
    }

    /// Cuts the links between `a` and `b`, both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = self.lock();
        state.partitions.insert((a, b));
        state.partitions.insert((b, a));
    }

    /// Cuts `node` off from every other address bound now, both ways.
    pub fn isolate(&self, node: SocketAddr) {
        let mut state = self.lock();
        let others: Vec<SocketAddr> = state
            .inboxes
            .keys()
            .copied()
            .filter(|a| *a != node)
            .collect();
        for other in others {
            state.partitions.insert((node, other));
            state.partitions.insert((other, node));
        }
    }

    /// Makes the links perfect ([`LinkFaults::none`]) from `after` past the network's
    /// creation on: the faults stop, so a run can show it recovers once they have.
    pub fn stop_faults_after(&self, after: Duration) {
        let mut state = self.lock();
        state.faults_until = Some(state.epoch + after);
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.lock().partitions.clear();
    }

    /// The hash of every datagram delivered so far (time, sender, receiver, bytes): equal for
    /// equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace
    }

    /// What happened to datagrams so far.
    pub fn stats(&self) -> NetworkStats {
        self.lock().stats
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = Instant::now();
        if state.faults_until.is_some_and(|until| now >= until) {
            state.faults = LinkFaults::none();
            state.faults_until = None;
        }
        let faults = state.faults.clone();
        state.stats.sent += 1;
        // A crashed node's leftover tasks may still try to send: nothing leaves it.
        if !state.inboxes.contains_key(&from) || state.partitions.contains(&(from, to)) {
            state.stats.dropped += 1;
            return;
        }
        if state.chance(faults.loss) {
            state.stats.lost += 1;
            return;
        }
        let copies = if state.chance(faults.duplicate) {
            state.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut bytes = datagram.to_vec();
            if !bytes.is_empty() && state.chance(faults.corrupt) {
                let at = (state.next_u64() % bytes.len() as u64) as usize;
                let bit = 1u8 << (state.next_u64() % 8);
                bytes[at] ^= bit;
                state.stats.corrupted += 1;
            }
            let latency = state.latency();
            state.enqueue(to, from, now + latency, bytes);
        }
    }

    /// Takes the next datagram for `addr` that is due, or says when the next one will be.
    fn receive(&self, addr: SocketAddr, waker: &Waker) -> Received {
        let mut state = self.lock();
        let now = Instant::now();
        let epoch = state.epoch;
        let Some(inbox) = state.inboxes.get_mut(&addr) else {
            return Received::Unbound;
        };
        let Some((&(at, sequence), _)) = inbox.queue.first_key_value() else {
            inbox.waker = Some(waker.clone());
            return Received::Nothing;
        };
        if at > now {
            inbox.waker = Some(waker.clone());
            return Received::Later(at);
        }
        let (from, bytes) = inbox
            .queue
            .remove(&(at, sequence))
            .expect("the first entry exists");
        state.stats.delivered += 1;
        let elapsed = now.duration_since(epoch).as_nanos() as u64;
        state.hash(&elapsed.to_le_bytes());
        state.hash_addr(from);
        state.hash_addr(addr);
        state.hash(&(bytes.len() as u64).to_le_bytes());
        state.hash(&bytes);
        Received::Datagram(from, bytes)
    }
}

enum Received {
    Datagram(SocketAddr, Vec<u8>),
    Later(Instant),
    Nothing,
    Unbound,
}

/// A node's UDP socket on a [`SimNetwork`], for `quinn::Endpoint::new_with_abstract_socket`.
pub struct SimSocket {
    addr: SocketAddr,
    network: SimNetwork,
    /// Wakes the receiver when the next queued datagram is due.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Always writable: the simulated network never pushes back (its inboxes drop when full).
#[derive(Debug)]
struct Writable;

impl quinn::UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match transmit.segment_size {
            Some(size) if size > 0 => {
                for datagram in transmit.contents.chunks(size) {
                    self.network.send(self.addr, transmit.destination, datagram);
                }
            }
            _ => self
                .network
                .send(self.addr, transmit.destination, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            match self.network.receive(self.addr, cx.waker()) {
                Received::Datagram(from, bytes) => {
                    let len = bytes.len().min(buf.len());
                    buf[..len].copy_from_slice(&bytes[..len]);
                    *slot = RecvMeta {
                        addr: from,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: Some(self.addr.ip()),
                    };
                    return Poll::Ready(Ok(1));
                }
                Received::Later(at) => {
                    let mut timer = self
                        .timer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        // Due now: take it.
                        continue;
                    }
                    return Poll::Pending;
                }
                Received::Nothing => return Poll::Pending,
                Received::Unbound => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        format!("{} is no longer bound on the simulated network", self.addr),
                    )));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_stop_when_told_and_the_links_are_perfect_after() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let network = SimNetwork::new(3, LinkFaults::harsh());
            let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
            let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
            let _sockets = (network.bind(a).unwrap(), network.bind(b).unwrap());
            network.stop_faults_after(Duration::from_millis(100));
            for _ in 0..500 {
                network.send(a, b, &[7; 100]);
            }
            let during = network.stats();
            assert!(
                during.lost > 0 && during.duplicated > 0 && during.corrupted > 0,
                "{during:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            for _ in 0..500 {
                network.send(a, b, &[7; 100]);
            }
            let after = network.stats();
            assert_eq!(after.sent, during.sent + 500);
            assert_eq!(
                (after.lost, after.duplicated, after.corrupted),
                (during.lost, during.duplicated, during.corrupted),
                "faults after the end: {after:?}"
            );
        });
    }
}
