//! Real QUIC endpoints on loopback: TLS, the handshake, frames, and what is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::exchange::{
    ChannelBatch, ChannelId, ChannelMessage, Record, decode_batch, encode_batch,
};

const LOOPBACK: &str = "127.0.0.1:0";

fn node(ca: &ClusterCa, hello: Hello) -> NetNode {
    let identity = ca.issue(&hello.node).expect("identity");
    NetNode::bind(
        LOOPBACK.parse().unwrap(),
        &identity,
        hello,
        TransportSettings::default(),
    )
    .expect("bind")
}

fn job_manager(ca: &ClusterCa) -> NetNode {
    node(ca, Hello::new("jm", Role::JobManager))
}

fn task_manager(ca: &ClusterCa, name: &str) -> NetNode {
    node(ca, Hello::new(name, Role::TaskManager { slots: 2 }))
}

/// Accepts one peer on `node` in the background.
fn accept_one(node: &Arc<NetNode>) -> tokio::task::JoinHandle<Result<Peer, NetError>> {
    let node = Arc::clone(node);
    tokio::spawn(async move { node.accept().await.expect("endpoint open") })
}

fn addr(node: &NetNode) -> SocketAddr {
    node.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_cluster_handshake_and_carry_control_and_channel_frames() {
    let ca = ClusterCa::generate().unwrap();
    let jm = Arc::new(job_manager(&ca));
    let tm = task_manager(&ca, "tm-1");
    let accepted = accept_one(&jm);
    let mut to_jm = tm.connect(addr(&jm)).await.expect("connects");
    let mut to_tm = accepted.await.unwrap().expect("accepted");
    assert_eq!(to_jm.hello().node, "jm");
    assert_eq!(to_tm.hello().role, Role::TaskManager { slots: 2 });

    // The control stream, both ways.
    let (writer, _) = to_jm.control();
    writer
        .send_message("test", &"register".to_string())
        .await
        .unwrap();
    let (writer, reader) = to_tm.control();
    let got: String = reader.next_message("test").await.unwrap().unwrap();
    assert_eq!(got, "register");
    writer
        .send_message("test", &"deploy".to_string())
        .await
        .unwrap();
    let (_, reader) = to_jm.control();
    let got: String = reader.next_message("test").await.unwrap().unwrap();
    assert_eq!(got, "deploy");

    // A data channel: batches one way, credits back, on one stream.
    let channel = ChannelId {
        attempt: 0,
        channel: 3,
    };
    let (mut data_out, mut credits_in) = to_jm.open_channel(channel).await.unwrap();
    let receiver = tokio::spawn(async move {
        let (id, mut credits_out, mut data_in) =
            to_tm.accept_channel().await.unwrap().expect("a channel");
        let mut received = Vec::new();
        while let Some(message) = data_in
            .next_message::<ChannelMessage>("channel message")
            .await
            .unwrap()
        {
            let ChannelMessage::Data { channel, frame } = message else {
                panic!("data expected");
            };
            assert_eq!(channel, id);
            let batch: ChannelBatch<u64> = decode_batch(&frame).unwrap();
            received.extend(batch.records.iter().map(|r| r.value));
            credits_out
                .send_message(
                    "channel message",
                    &ChannelMessage::Credit {
                        channel: id,
                        credits: 1,
                    },
                )
                .await
                .unwrap();
        }
        credits_out.finish();
        (id, received, to_tm)
    });
    for start in [0u64, 10, 20] {
        let mut batch = ChannelBatch::with_capacity(10);
        for value in start..start + 10 {
            batch.records.push(Record::new(value));
        }
        let mut frame = Vec::new();
        encode_batch(&batch, &mut frame).unwrap();
        data_out
            .send_message("channel message", &ChannelMessage::Data { channel, frame })
            .await
            .unwrap();
        let credit: ChannelMessage = credits_in
            .next_message("channel message")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            credit,
            ChannelMessage::Credit {
                channel,
                credits: 1
            }
        );
    }
    data_out.finish();
    let (id, received, _to_tm) = receiver.await.unwrap();
    assert_eq!(id, channel);
    assert_eq!(received, (0..30).collect::<Vec<u64>>());
    assert!(
        credits_in.next_frame().await.unwrap().is_none(),
        "the stream ends in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_by_tls_and_the_job_manager_goes_on() {
    let ca = ClusterCa::generate().unwrap();
    let jm = Arc::new(job_manager(&ca));
    let intruder = task_manager(&ClusterCa::generate().unwrap(), "intruder");
    let accepted = accept_one(&jm);
    let error = intruder.connect(addr(&jm)).await.expect_err("refused");
    assert!(matches!(error, NetError::Connect { .. }), "{error}");
    let refused = accepted.await.unwrap().expect_err("refused");
    let text = refused.to_string();
    assert!(text.contains(&addr(&intruder).to_string()), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // The JobManager still accepts its own cluster's nodes.
    let accepted = accept_one(&jm);
    let tm = task_manager(&ca, "tm-1");
    tm.connect(addr(&jm))
        .await
        .expect("a cluster node connects");
    accepted.await.unwrap().expect("accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    let jm = Arc::new(job_manager(&ca));
    let accepted = accept_one(&jm);
    // A client that trusts the cluster's CA but presents no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let outcome = async {
        let connection = client
            .connect(addr(&jm), tls::CLUSTER_SERVER_NAME)
            .unwrap()
            .await?;
        // TLS 1.3 clients finish before the server checked them: the refusal shows on use.
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(b"anything").await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(lost) => lost,
            other => panic!("{other}"),
        })?;
        let mut buf = [0u8; 1];
        match recv.read_exact(&mut buf).await {
            Err(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(lost))) => {
                Err(lost)
            }
            other => panic!("the server must close the connection, got {other:?}"),
        }
    }
    .await;
    let Err::<(), quinn::ConnectionError>(error) = outcome else {
        unreachable!()
    };
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    let refused = accepted.await.unwrap().expect_err("refused");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_fingerprint_mismatches_are_refused_with_the_reason() {
    let ca = ClusterCa::generate().unwrap();
    let mut jm = job_manager(&ca);
    jm.set_job_fingerprint(0xAAAA);
    let jm = Arc::new(jm);

    let mut newer = Hello::new("tm-new", Role::TaskManager { slots: 1 });
    newer.protocol_version = PROTOCOL_VERSION + 1;
    let accepted = accept_one(&jm);
    let error = node(&ca, newer)
        .connect(addr(&jm))
        .await
        .expect_err("refused");
    let NetError::Refused { reason, .. } = &error else {
        panic!("a refusal expected, got {error}");
    };
    assert!(reason.contains("protocol version"), "{reason}");
    let refused = accepted.await.unwrap().expect_err("refused");
    assert!(refused.to_string().contains("tm-new"), "{refused}");

    let mut other_job = Hello::new("tm-other", Role::TaskManager { slots: 1 });
    other_job.job_fingerprint = Some(0xBBBB);
    let accepted = accept_one(&jm);
    let error = node(&ca, other_job)
        .connect(addr(&jm))
        .await
        .expect_err("refused");
    let NetError::Refused { reason, .. } = &error else {
        panic!("a refusal expected, got {error}");
    };
    assert!(reason.contains("000000000000bbbb"), "{reason}");
    accepted.await.unwrap().expect_err("refused");

    let accepted = accept_one(&jm);
    let error = node(&ca, Hello::new("jm-2", Role::JobManager))
        .connect(addr(&jm))
        .await
        .expect_err("refused");
    assert!(matches!(error, NetError::Refused { .. }), "{error}");
    accepted.await.unwrap().expect_err("refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_frames_do_not_disturb_the_cluster() {
    let ca = ClusterCa::generate().unwrap();
    let jm = Arc::new(job_manager(&ca));
    let accepted = accept_one(&jm);
    let tm = task_manager(&ca, "tm-1");
    let mut to_jm = tm.connect(addr(&jm)).await.unwrap();
    let mut to_tm = accepted.await.unwrap().unwrap();

    // Random datagrams at the JobManager's port (a seeded generator, so a failure replays).
    let socket = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let mut state = 0x5EED_u64;
    for size in [1usize, 7, 40, 1200, 1500] {
        for _ in 0..20 {
            let datagram: Vec<u8> = (0..size)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 56) as u8
                })
                .collect();
            socket.send_to(&datagram, addr(&jm)).unwrap();
        }
    }
    // The connection still works, both ways.
    to_jm.control().0.send_message("test", &1u32).await.unwrap();
    let got: u32 = to_tm
        .control()
        .1
        .next_message("test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, 1);

    // A cluster node that sends garbage frames gets a protocol error naming it; nothing panics.
    let accepted = accept_one(&jm);
    let identity = ca.issue("tm-garbage").unwrap();
    let mut client = quinn::Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
    client.set_default_client_config(identity.client_config().unwrap());
    let connection = client
        .connect(addr(&jm), tls::CLUSTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    // A header that declares a frame of another version.
    send.write_all(&[3, 0, 0, 0, 99, 1, 2]).await.unwrap();
    let refused = accepted.await.unwrap().expect_err("garbage is refused");
    assert!(matches!(refused, NetError::Protocol { .. }), "{refused}");
    assert!(refused.to_string().contains("version"), "{refused}");

    // And the JobManager still accepts the next node.
    let accepted = accept_one(&jm);
    task_manager(&ca, "tm-2").connect(addr(&jm)).await.unwrap();
    accepted.await.unwrap().unwrap();
}

#[test]
fn the_cluster_directory_holds_one_ca_that_later_nodes_chain_to() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let error = ClusterCa::load(&cluster).unwrap_err();
    assert!(
        error.to_string().contains("copy its cluster directory"),
        "{error}"
    );

    let created = ClusterCa::load_or_create(&cluster).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cluster.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    }
    let loaded = ClusterCa::load_or_create(&cluster).unwrap();
    assert_eq!(
        created.certificate(),
        loaded.certificate(),
        "the same CA is loaded"
    );
    let also = ClusterCa::load(&cluster).unwrap();
    assert_eq!(created.certificate(), also.certificate());

    // A certificate the reloaded CA issues chains to the original CA certificate.
    let identity = loaded.issue("tm-1").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(created.certificate().clone()).unwrap();
    use rustls::client::danger::ServerCertVerifier;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        tls::crypto_provider(),
    )
    .build()
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from(tls::CLUSTER_SERVER_NAME).unwrap();
    verifier
        .verify_server_cert(
            &identity.chain()[0],
            &[],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .expect("a certificate of the reloaded CA is valid for the original");

    // Damaged directories are errors that say what is wrong.
    let other = dir.path().join("other");
    ClusterCa::load_or_create(&other).unwrap();
    std::fs::copy(other.join("ca.crt"), cluster.join("ca.crt")).unwrap();
    let error = ClusterCa::load(&cluster).unwrap_err();
    assert!(
        error.to_string().contains("do not belong together"),
        "{error}"
    );
    std::fs::write(cluster.join("ca.crt"), "not a certificate").unwrap();
    let error = ClusterCa::load(&cluster).unwrap_err();
    assert!(
        error.to_string().contains("not a PEM certificate"),
        "{error}"
    );
    std::fs::remove_file(cluster.join("ca.crt")).unwrap();
    let error = ClusterCa::load_or_create(&cluster).unwrap_err();
    assert!(error.to_string().contains("only one of"), "{error}");
}

#[test]
fn seeded_identities_are_reproducible() {
    let a = ClusterCa::from_seed([7; 32]).unwrap();
    let b = ClusterCa::from_seed([7; 32]).unwrap();
    assert_eq!(a.certificate(), b.certificate());
    let c = ClusterCa::from_seed([8; 32]).unwrap();
    assert_ne!(a.certificate(), c.certificate());
    let one = a.issue_from_seed("tm-1", [1; 32]).unwrap();
    let two = b.issue_from_seed("tm-1", [1; 32]).unwrap();
    assert_eq!(one.chain(), two.chain());
}
