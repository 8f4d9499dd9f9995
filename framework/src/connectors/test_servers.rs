//! Throwaway servers for tests and examples: PostgreSQL, Redis and a Kafka-compatible broker
//! (tansu), each started on a free loopback port in a temporary directory and stopped when the
//! handle is dropped.
//!
//! The connectors are tested against these real servers, never against mocks. The binaries come
//! from the system (`initdb`/`pg_ctl` of PostgreSQL, `redis-server`, `tansu`); a missing binary
//! is an error that says what to install (`.ci/run` installs them all).
//!
//! ## Invariants
//!
//! - A server listens on `127.0.0.1` only, on a port that was free when it started, and keeps no
//!   data beyond its temporary directory, which is deleted with the handle.
//! - Dropping the handle stops the server (immediately: no data is kept anyway).

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A test server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{server}: {message}")]
pub struct TestServerError {
    /// Which server.
    pub server: &'static str,
    /// What went wrong, and what to do about it.
    pub message: String,
}

impl TestServerError {
    fn new(server: &'static str, message: impl Into<String>) -> Self {
        Self {
            server,
            message: message.into(),
        }
    }
}

/// A port on `127.0.0.1` that was free a moment ago (the OS picked it).
///
/// # Errors
///
/// No port could be bound.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Finds `binary` in `PATH` or in `extra` directories.
fn find_binary(binary: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// A fresh, empty directory under the system's temporary directory.
fn fresh_dir(kind: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "eichhorn-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Waits until `port` on loopback accepts connections, `child` (if any) still running.
fn wait_for_port(
    server: &'static str,
    port: u16,
    mut child: Option<&mut Child>,
    log: &Path,
) -> Result<(), TestServerError> {
    // 60 s in 50 ms steps: servers start in well under a second, but a loaded CI machine is slow.
    for _ in 0..1_200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(TestServerError::new(
                server,
                format!(
                    "exited with {status} before listening; log:\n{}",
                    read_log(log)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(TestServerError::new(
        server,
        format!(
            "not listening on 127.0.0.1:{port} after 60 s; log:\n{}",
            read_log(log)
        ),
    ))
}

fn read_log(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether this process runs as root (PostgreSQL refuses to run as root).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `command`, as the `postgres` user when `as_postgres`; its output goes to `log`.
fn run_logged(
    server: &'static str,
    program: &Path,
    args: &[String],
    as_postgres: bool,
    log: &Path,
) -> Result<(), TestServerError> {
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.args(args);
    let out = command.output().map_err(|e| {
        TestServerError::new(server, format!("cannot run {}: {e}", program.display()))
    })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::write(log, &text);
    if !out.status.success() {
        return Err(TestServerError::new(
            server,
            format!(
                "{} {} failed ({}):\n{text}",
                program.display(),
                args.join(" "),
                out.status
            ),
        ));
    }
    Ok(())
}

/// A PostgreSQL server in a temporary directory, with prepared transactions enabled (for the
/// exactly-once sink). Stopped when dropped.
///
/// The user is `postgres` with trust authentication on loopback; the database is `postgres`.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::PostgresServer;
///
/// let server = PostgresServer::start().expect("PostgreSQL is installed");
/// println!("connect with {}", server.connection_string());
/// ```
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

impl PostgresServer {
    /// Initialises a cluster (`initdb`) and starts it (`pg_ctl start`) on a free port, as the
    /// `postgres` user when running as root.
    ///
    /// # Errors
    ///
    /// `initdb` or `pg_ctl` is not installed (install PostgreSQL, e.g.
    /// `apt-get install postgresql`), or the server did not start (the error holds its log).
    pub fn start() -> Result<Self, TestServerError> {
        const NAME: &str = "PostgreSQL";
        let extra: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| {
                let mut versions: Vec<PathBuf> =
                    dirs.flatten().map(|d| d.path().join("bin")).collect();
                versions.sort();
                versions.reverse();
                versions
            })
            .unwrap_or_default();
        let missing = || {
            TestServerError::new(
                NAME,
                "initdb and pg_ctl not found in PATH or /usr/lib/postgresql/*/bin: install \
                 PostgreSQL (apt-get install -y postgresql)",
            )
        };
        let initdb = find_binary("initdb", &extra).ok_or_else(missing)?;
        let pg_ctl = find_binary("pg_ctl", &extra).ok_or_else(missing)?;
        let as_postgres = running_as_root();
        let io = |e: std::io::Error| TestServerError::new(NAME, e.to_string());
        let dir = fresh_dir("postgres").map_err(io)?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(io)?;
            if !status.success() {
                return Err(TestServerError::new(
                    NAME,
                    format!(
                        "running as root, and cannot give {} to the postgres user",
                        dir.display()
                    ),
                ));
            }
        }
        let data = dir.join("data");
        let log = dir.join("server.log");
        run_logged(
            NAME,
            &initdb,
            &[
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                "postgres".into(),
                "-A".into(),
                "trust".into(),
                "--no-sync".into(),
            ],
            as_postgres,
            &dir.join("initdb.log"),
        )?;
        let port = free_port().map_err(io)?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions=64 \
             -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
            dir.display()
        );
        let server = Self {
            port,
            dir: dir.clone(),
            pg_ctl: pg_ctl.clone(),
            as_postgres,
        };
        run_logged(
            NAME,
            &pg_ctl,
            &[
                "-D".into(),
                data.display().to_string(),
                "-o".into(),
                options,
                "-l".into(),
                log.display().to_string(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "start".into(),
            ],
            as_postgres,
            &dir.join("pg_ctl.log"),
        )
        .map_err(|e| TestServerError::new(NAME, format!("{e}\nserver log:\n{}", read_log(&log))))?;
        wait_for_port(NAME, port, None, &log)?;
        Ok(server)
    }

    /// The port it listens on (`127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL with `psql` (unaligned, tuples only, stopping at the first error) and returns
    /// what it printed: one line per row, columns separated by `|`.
    ///
    /// # Errors
    ///
    /// `psql` is missing or the SQL failed (the error holds psql's message).
    pub fn psql(&self, sql: &str) -> Result<String, TestServerError> {
        const NAME: &str = "psql";
        let extra = vec![
            self.pg_ctl
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ];
        let psql = find_binary("psql", &extra).ok_or_else(|| {
            TestServerError::new(NAME, "psql not found: install postgresql-client")
        })?;
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
            ])
            .args(["postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| TestServerError::new(NAME, e.to_string()))?;
        if !out.status.success() {
            return Err(TestServerError::new(
                NAME,
                format!("{sql}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A libpq-style connection string for the `postgres` database as the `postgres` user.
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = run_logged(
            "PostgreSQL",
            &self.pg_ctl,
            &[
                "-D".into(),
                self.dir.join("data").display().to_string(),
                "-m".into(),
                "immediate".into(),
                "-w".into(),
                "stop".into(),
            ],
            self.as_postgres,
            &self.dir.join("pg_ctl-stop.log"),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process that is killed when dropped, with its temporary directory.
#[derive(Debug)]
struct ChildServer {
    child: Child,
    dir: PathBuf,
}

impl ChildServer {
    fn spawn(
        name: &'static str,
        kind: &str,
        program: &Path,
        args: &[String],
        port: u16,
    ) -> Result<Self, TestServerError> {
        let io = |e: std::io::Error| TestServerError::new(name, e.to_string());
        let dir = fresh_dir(kind).map_err(io)?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(io)?;
        let err_file = log_file.try_clone().map_err(io)?;
        let child = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| {
                TestServerError::new(name, format!("cannot run {}: {e}", program.display()))
            })?;
        let mut server = Self { child, dir };
        wait_for_port(name, port, Some(&mut server.child), &log)?;
        Ok(server)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server without persistence (`--save ''`), stopped when dropped.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::RedisServer;
///
/// let server = RedisServer::start().expect("redis-server is installed");
/// println!("connect with {}", server.url());
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    _process: ChildServer,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port.
    ///
    /// # Errors
    ///
    /// `redis-server` is not installed (`apt-get install -y redis-server`), or did not start.
    pub fn start() -> Result<Self, TestServerError> {
        const NAME: &str = "Redis";
        let program = find_binary("redis-server", &[]).ok_or_else(|| {
            TestServerError::new(
                NAME,
                "redis-server not found in PATH: install Redis (apt-get install -y redis-server)",
            )
        })?;
        let port = free_port().map_err(|e| TestServerError::new(NAME, e.to_string()))?;
        let args = [
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        let process = ChildServer::spawn(NAME, "redis", &program, &args, port)?;
        Ok(Self {
            port,
            _process: process,
        })
    }

    /// The port it listens on (`127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one command with `redis-cli --raw` and returns what it printed.
    ///
    /// # Errors
    ///
    /// `redis-cli` is missing or failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, TestServerError> {
        const NAME: &str = "redis-cli";
        let cli = find_binary("redis-cli", &[]).ok_or_else(|| {
            TestServerError::new(NAME, "redis-cli not found: install redis-tools")
        })?;
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "--raw", "-p"])
            .arg(self.port.to_string())
            .args(args)
            .output()
            .map_err(|e| TestServerError::new(NAME, e.to_string()))?;
        if !out.status.success() {
            return Err(TestServerError::new(
                NAME,
                format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `redis://` URL of database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// A Kafka-compatible broker (tansu, with its in-memory storage engine), stopped when dropped.
///
/// tansu implements the Kafka protocol for producing, consuming, consumer groups and the
/// idempotent producer; it does not end transactions (`EndTxn`), so exactly-once Kafka tests
/// need a full broker (see the Kafka sink's docs).
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::KafkaBroker;
///
/// let broker = KafkaBroker::start().expect("tansu is installed");
/// println!("bootstrap servers: {}", broker.bootstrap_servers());
/// ```
#[derive(Debug)]
pub struct KafkaBroker {
    port: u16,
    _process: ChildServer,
}

impl KafkaBroker {
    /// Starts `tansu broker` on a free loopback port with in-memory storage.
    ///
    /// # Errors
    ///
    /// `tansu` is not installed (`cargo install tansu --locked --features dynostore`), or did
    /// not start.
    pub fn start() -> Result<Self, TestServerError> {
        const NAME: &str = "tansu (Kafka broker)";
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
            .map(|home| home.join("bin"));
        let program = find_binary("tansu", cargo_bin.as_slice()).ok_or_else(|| {
            TestServerError::new(
                NAME,
                "tansu not found in PATH or ~/.cargo/bin: install it with \
                 `cargo install tansu --locked --features dynostore`",
            )
        })?;
        let port = free_port().map_err(|e| TestServerError::new(NAME, e.to_string()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let args = [
            "broker".to_string(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        let process = ChildServer::spawn(NAME, "tansu", &program, &args, port)?;
        Ok(Self {
            port,
            _process: process,
        })
    }

    /// The port it listens on (`127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `bootstrap.servers` to give a client.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    ///
    /// # Errors
    ///
    /// The broker refused (the error says why), or did not answer within 30 s.
    #[cfg(feature = "kafka")]
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestServerError> {
        create_kafka_topic(&self.bootstrap_servers(), topic, partitions)
    }
}

/// Creates `topic` with `partitions` partitions (replication factor 1) on the Kafka brokers
/// `bootstrap_servers` (any broker, not only a [`KafkaBroker`]).
///
/// # Errors
///
/// The broker refused (the error says why), or did not answer within 30 s.
#[cfg(feature = "kafka")]
pub fn create_kafka_topic(
    bootstrap_servers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), TestServerError> {
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::config::ClientConfig;
        const NAME: &str = "create topic";
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .create()
            .map_err(|e| TestServerError::new(NAME, e.to_string()))?;
        let topic = topic.to_string();
        // The admin future needs a runtime of its own, which cannot be started inside the
        // caller's (a test's) runtime: run it on a thread.
        let created = std::thread::Builder::new()
            .name("eichhorn-create-topic".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let new_topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                let results = runtime
                    .block_on(admin.create_topics([&new_topic], &options))
                    .map_err(|e| e.to_string())?;
                for result in results {
                    result.map_err(|(name, code)| format!("{name}: {code}"))?;
                }
                Ok::<(), String>(())
            })
            .map_err(|e| TestServerError::new(NAME, e.to_string()))?
            .join()
            .map_err(|_| TestServerError::new(NAME, "the admin thread panicked"))?;
        created.map_err(|e| TestServerError::new(NAME, e))
    }
}
