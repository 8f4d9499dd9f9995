//! The framework's QUIC transport on the simulated network: real TLS and quinn, faults from a
//! seed, and the same seed giving the same datagrams, byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use eichhorn::exchange::ChannelId;
use eichhorn::net::{ClusterCa, Hello, Role, TransportSettings};
use eichhorn_sim::network::{LinkFaults, NetworkStats, SimNetwork};
use eichhorn_sim::quic::sim_node;

const MESSAGES: u64 = 200;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// What one run observed: the network's trace, its statistics, what each side received, and
/// the virtual time it took.
#[derive(Debug, PartialEq)]
struct Observed {
    trace: u64,
    stats: NetworkStats,
    control: Vec<u64>,
    data: Vec<u64>,
    credits: u64,
    elapsed: Duration,
}

/// A JobManager and a TaskManager on a network with `faults`; the TaskManager sends numbered
/// messages on the control stream and on a data channel, and the JobManager answers each data
/// message with a credit. With `partition`, the link is cut for two virtual seconds midway.
fn run(seed: u64, faults: LinkFaults, partition: bool) -> Observed {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let start = tokio::time::Instant::now();
        let network = SimNetwork::new(seed, faults);
        let ca = ClusterCa::from_seed([seed as u8; 32]).unwrap();
        let (jm_addr, tm_addr) = (addr("10.0.0.1:6123"), addr("10.0.0.2:6124"));
        let jm = sim_node(
            &network,
            jm_addr,
            &ca.issue_from_seed("jm", [1; 32]).unwrap(),
            Hello::new("jm", Role::JobManager),
            TransportSettings::default(),
            seed ^ 0x1111,
        )
        .unwrap();
        let tm = sim_node(
            &network,
            tm_addr,
            &ca.issue_from_seed("tm-1", [2; 32]).unwrap(),
            Hello::new("tm-1", Role::TaskManager { slots: 2 }),
            TransportSettings::default(),
            seed ^ 0x2222,
        )
        .unwrap();

        let server = tokio::spawn(async move {
            let mut peer = jm
                .accept()
                .await
                .unwrap()
                .expect("the TaskManager is accepted");
            let mut control = Vec::new();
            for _ in 0..MESSAGES {
                control.push(
                    peer.control()
                        .1
                        .next_message::<u64>("n")
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            let (channel, mut credits, mut data_in) = peer.accept_channel().await.unwrap().unwrap();
            assert_eq!(
                channel,
                ChannelId {
                    attempt: 0,
                    channel: 1
                }
            );
            let mut data = Vec::new();
            while let Some(n) = data_in.next_message::<u64>("n").await.unwrap() {
                data.push(n);
                credits.send_message("credit", &1u32).await.unwrap();
            }
            credits.finish();
            // Wait for the TaskManager to read the last credits and close.
            let _ = peer.closed().await;
            (control, data, jm)
        });

        let mut peer = tm
            .connect(jm_addr)
            .await
            .expect("connects through the faults");
        for n in 0..MESSAGES {
            peer.control().0.send_message("n", &n).await.unwrap();
        }
        let (mut data_out, mut credits_in) = peer
            .open_channel(ChannelId {
                attempt: 0,
                channel: 1,
            })
            .await
            .unwrap();
        let mut credits = 0;
        for n in 0..MESSAGES {
            if partition && n == MESSAGES / 2 {
                network.partition(jm_addr, tm_addr);
                tokio::time::sleep(Duration::from_secs(2)).await;
                network.heal();
            }
            data_out.send_message("n", &n).await.unwrap();
            credits += u64::from(
                credits_in
                    .next_message::<u32>("credit")
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        data_out.finish();
        assert!(credits_in.next_frame().await.unwrap().is_none());
        peer.close("done");
        let (control, data, _jm) = server.await.unwrap();
        Observed {
            trace: network.trace_hash(),
            stats: network.stats(),
            control,
            data,
            credits,
            elapsed: start.elapsed(),
        }
    })
}

#[test]
fn frames_arrive_whole_and_in_order_through_loss_duplicates_corruption_and_reordering() {
    let all: Vec<u64> = (0..MESSAGES).collect();
    let mut traces = std::collections::BTreeSet::new();
    for seed in 0..8 {
        let observed = run(seed, LinkFaults::harsh(), false);
        assert_eq!(observed.control, all, "seed {seed}");
        assert_eq!(observed.data, all, "seed {seed}");
        assert_eq!(observed.credits, MESSAGES, "seed {seed}");
        let stats = observed.stats;
        assert!(
            stats.lost > 0 && stats.duplicated > 0 && stats.corrupted > 0,
            "seed {seed}: {stats:?}"
        );
        traces.insert(observed.trace);
    }
    assert_eq!(traces.len(), 8, "every seed is another run");
}

#[test]
fn one_seed_gives_the_same_datagrams_byte_for_byte() {
    for seed in [3, 17] {
        let first = run(seed, LinkFaults::harsh(), true);
        let second = run(seed, LinkFaults::harsh(), true);
        assert_eq!(first, second, "seed {seed}");
    }
}

#[test]
fn a_connection_survives_a_partition_shorter_than_the_idle_timeout() {
    let observed = run(5, LinkFaults::none(), true);
    assert_eq!(observed.data, (0..MESSAGES).collect::<Vec<_>>());
    assert!(
        observed.stats.dropped > 0,
        "the partition dropped datagrams: {:?}",
        observed.stats
    );
    assert!(observed.elapsed >= Duration::from_secs(2));
}
