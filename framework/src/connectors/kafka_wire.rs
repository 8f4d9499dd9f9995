//! A small blocking client of the Kafka protocol for the two requests librdkafka has no API
//! for: `FindCoordinator` (the transaction coordinator of a transactional id) and `EndTxn`
//! with a given producer id and epoch. The exactly-once Kafka sink uses them at a restore to
//! commit a transaction that a crashed process pre-committed (see `kafka_txn`, whose
//! `ResumeCommit` decides what the answers mean; this module only carries requests).
//!
//! ## Design
//!
//! Messages are encoded and decoded by the `kafka-protocol` crate (generated from Apache
//! Kafka's message schemas), so nothing here hand-encodes a field. A [`Connection`] is one TCP
//! stream with read and write timeouts: it asks the broker's `ApiVersions` (v0, which every
//! broker answers) first and sends each request at the highest version both sides know,
//! capped where newer versions change the semantics ([`END_TXN_VERSION_MAX`]). Requests are
//! sent one at a time and answered in order (correlation ids are checked).
//!
//! ## Invariants
//!
//! - An answer larger than [`RESPONSE_BYTES_MAX`] is refused, never allocated.
//! - Every error names the broker and the request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, ProducerId, RequestHeader, ResponseHeader,
    TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};

/// The largest answer accepted (the answers read here are a few hundred bytes).
pub(crate) const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// `FindCoordinator` versions 0-3 take one key; 4 and later take a batch of keys.
const FIND_COORDINATOR_VERSION_MAX: i16 = 3;

/// `EndTxn` v5 belongs to the second version of the transaction protocol (KIP-890), where the
/// coordinator bumps the epoch at every end; librdkafka's producers use the first.
pub(crate) const END_TXN_VERSION_MAX: i16 = 4;

/// The `key_type` of a transactional id in `FindCoordinator`.
const COORDINATOR_KEY_TRANSACTION: i8 = 1;

/// One connection to a broker.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    address: String,
    next_correlation_id: i32,
    /// The broker's versions per API key: (min, max).
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `address` (`host:port`) and asks its API versions; `timeout` bounds the
    /// connection and every read and write.
    ///
    /// # Errors
    ///
    /// The address does not resolve, the broker does not answer, or answers garbage.
    pub(crate) fn open(address: &str, timeout: Duration) -> Result<Self, String> {
        let addresses = address
            .to_socket_addrs()
            .map_err(|e| format!("kafka://{address}: cannot resolve: {e}"))?;
        let mut last_error = format!("kafka://{address}: no address");
        let mut stream = None;
        for socket in addresses {
            match TcpStream::connect_timeout(&socket, timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => last_error = format!("kafka://{address}: cannot connect: {e}"),
            }
        }
        let stream = stream.ok_or(last_error)?;
        let configure = |e: std::io::Error| format!("kafka://{address}: {e}");
        stream.set_read_timeout(Some(timeout)).map_err(configure)?;
        stream.set_write_timeout(Some(timeout)).map_err(configure)?;
        stream.set_nodelay(true).map_err(configure)?;
        let mut connection = Self {
            stream,
            address: address.to_string(),
            next_correlation_id: 1,
            versions: BTreeMap::new(),
        };
        let answer: ApiVersionsResponse =
            connection.call(ApiKey::ApiVersions, &ApiVersionsRequest::default(), 0)?;
        if answer.error_code != 0 {
            return Err(format!(
                "kafka://{address}: ApiVersions answered error code {}",
                answer.error_code
            ));
        }
        connection.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    /// The version to send request `R` (API `key`) at: the highest the broker, the crate and
    /// `highest` allow.
    fn version<R: Message>(&self, key: ApiKey, lowest: i16, highest: i16) -> Result<i16, String> {
        let name = format!("{key:?}");
        let (broker_min, broker_max) =
            self.versions.get(&(key as i16)).copied().ok_or_else(|| {
                format!(
                    "kafka://{}: the broker does not support {name} (not in its ApiVersions)",
                    self.address
                )
            })?;
        let version = broker_max.min(highest).min(R::VERSIONS.max);
        if version < broker_min.max(lowest).max(R::VERSIONS.min) {
            return Err(format!(
                "kafka://{}: no version of {name} in common (the broker's: {broker_min}..={broker_max}, \
                 ours: {lowest}..={highest})",
                self.address
            ));
        }
        Ok(version)
    }

    /// Sends `request` (API `key`) at `version` and reads its answer.
    fn call<Req, Resp>(&mut self, key: ApiKey, request: &Req, version: i16) -> Result<Resp, String>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let name = format!("{key:?}");
        let address = self.address.clone();
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("kafka://{address}: {name} v{version}: {what}: {e}")
        };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("eichhorn")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .map_err(|e| fail("encoding the header", &e))?;
        request
            .encode(&mut body, version)
            .map_err(|e| fail("encoding", &e))?;
        let size = u32::try_from(body.len()).map_err(|e| fail("request size", &e))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&size.to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|e| fail("sending", &e))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| fail("reading the answer", &e))?;
        let size = usize::try_from(u32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > RESPONSE_BYTES_MAX {
            return Err(fail(
                "answer too large",
                &format!("{size} bytes > {RESPONSE_BYTES_MAX}"),
            ));
        }
        let mut answer = vec![0u8; size];
        self.stream
            .read_exact(&mut answer)
            .map_err(|e| fail("reading the answer", &e))?;
        let mut answer = Bytes::from(answer);
        let header = ResponseHeader::decode(&mut answer, Resp::header_version(version))
            .map_err(|e| fail("decoding the answer's header", &e))?;
        if header.correlation_id != correlation_id {
            return Err(fail(
                "answer out of order",
                &format!(
                    "correlation id {} for {correlation_id}",
                    header.correlation_id
                ),
            ));
        }
        Resp::decode(&mut answer, version).map_err(|e| fail("decoding the answer", &e))
    }
}

/// Asks the brokers `bootstrap_servers` (comma-separated, tried in order) for the coordinator
/// of `transactional_id`: `Ok((error code, "host:port"))` from the first broker that answers.
///
/// # Errors
///
/// No broker answered (the last failure).
pub(crate) fn find_transaction_coordinator(
    bootstrap_servers: &str,
    transactional_id: &str,
    timeout: Duration,
) -> Result<(i16, String), String> {
    let mut last_error = format!("no bootstrap server in {bootstrap_servers:?}");
    for address in bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let answer = Connection::open(address, timeout).and_then(|mut connection| {
            let version = connection.version::<FindCoordinatorRequest>(
                ApiKey::FindCoordinator,
                1, // key_type appeared in v1
                FIND_COORDINATOR_VERSION_MAX,
            )?;
            let request = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(transactional_id.to_string()))
                .with_key_type(COORDINATOR_KEY_TRANSACTION);
            let answer: FindCoordinatorResponse =
                connection.call(ApiKey::FindCoordinator, &request, version)?;
            Ok(answer)
        });
        match answer {
            Ok(answer) => {
                return Ok((
                    answer.error_code,
                    format!("{}:{}", answer.host.as_str(), answer.port),
                ));
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Sends `EndTxn(commit)` for `transactional_id` under `producer_id` and `producer_epoch` to
/// the coordinator at `coordinator` (`host:port`) and returns the answer's error code
/// (`UNSUPPORTED_VERSION` when the broker lists no version of `EndTxn` we can send).
///
/// # Errors
///
/// The coordinator did not answer, or answered garbage.
pub(crate) fn commit_transaction(
    coordinator: &str,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    timeout: Duration,
) -> Result<i16, String> {
    let mut connection = Connection::open(coordinator, timeout)?;
    let Ok(version) = connection.version::<EndTxnRequest>(ApiKey::EndTxn, 0, END_TXN_VERSION_MAX)
    else {
        // Permanent: no retry makes the broker support it.
        return Ok(super::kafka_txn::error_code::UNSUPPORTED_VERSION);
    };
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_committed(true);
    let answer: EndTxnResponse = connection.call(ApiKey::EndTxn, &request, version)?;
    Ok(answer.error_code)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A fake broker that answers one connection with `frames` (raw, size-prefixed by the
    /// test) after reading a request each.
    fn serve(frames: Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::Builder::new()
            .name("fake-broker".into())
            .spawn(move || {
                let (mut stream, _) = listener.accept().expect("accept");
                for frame in frames {
                    let mut size = [0u8; 4];
                    stream.read_exact(&mut size).expect("size");
                    let mut request = vec![0u8; u32::from_be_bytes(size) as usize];
                    stream.read_exact(&mut request).expect("request");
                    stream.write_all(&frame).expect("answer");
                }
            })
            .expect("thread");
        address
    }

    #[test]
    fn an_oversized_or_mismatched_answer_is_an_error_naming_the_broker() {
        let oversized = serve(vec![
            ((RESPONSE_BYTES_MAX as u32) + 1).to_be_bytes().to_vec(),
        ]);
        let error = Connection::open(&oversized, Duration::from_secs(5)).unwrap_err();
        assert!(error.contains(&format!("kafka://{oversized}")), "{error}");
        assert!(error.contains("answer too large"), "{error}");

        // Correlation id 99 where 1 was asked.
        let mut frame = 4u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&99i32.to_be_bytes());
        let mismatched = serve(vec![frame]);
        let error = Connection::open(&mismatched, Duration::from_secs(5)).unwrap_err();
        assert!(
            error.contains("ApiVersions v0: answer out of order"),
            "{error}"
        );

        let closed = serve(Vec::new());
        let error = Connection::open(&closed, Duration::from_secs(5)).unwrap_err();
        assert!(error.contains("reading the answer"), "{error}");
    }
}
