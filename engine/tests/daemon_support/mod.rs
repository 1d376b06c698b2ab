//! Test support for the daemon tests: a real mosquitto on an ephemeral port (never mocked),
//! MQTT test clients, the daemon started in-process, and a tiny HTTP GET.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use forewarn_engine::daemon::{Daemon, ServeConfig};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A mosquitto broker of our own: anonymous, loopback only, persistent (a restart keeps the
/// QoS 1 sessions and their queued messages). Killed on drop.
pub struct Mosquitto {
    pub port: u16,
    /// With [`Mosquitto::start_tls`]: the TLS listener (the plain one wants a password too).
    pub tls_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(true)
    }

    /// A broker that forgets everything (sessions, retained messages) when it restarts.
    pub fn start_volatile() -> Mosquitto {
        Mosquitto::start_with(false)
    }

    fn start_with(persistence: bool) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence {persistence}\npersistence_location {}/\nmax_queued_messages 1000000\nmax_inflight_messages 100\nuser root\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            tls_port: 0,
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    /// A broker with a TLS listener (certificate of a throw-away CA, made with openssl, for
    /// `127.0.0.1` and `localhost`) and password authentication on both listeners
    /// (`forewarn` / `secret`). The CA is at [`Mosquitto::ca`].
    pub fn start_tls() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .current_dir(d)
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=forewarn test CA",
        ]);
        run(&[
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        run(&[
            "mosquitto_passwd",
            "-b",
            "-c",
            "passwd",
            "forewarn",
            "secret",
        ]);
        let (port, tls_port) = (free_port(), free_port());
        let conf = format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\nlistener {port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nuser root\nlog_dest file {d}/mosquitto.log\n",
            d = d.display()
        );
        std::fs::write(d.join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            tls_port,
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn spawn(&mut self) {
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists() || *b == "mosquitto")
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "mosquitto must be installed (scripts/test.sh installs it: apt-get install -y mosquitto)",
            );
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop gracefully (SIGTERM: the broker saves its sessions), then start again on the
    /// same port and data directory.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message seen by a test subscriber.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An MQTT client for tests: subscribes on every connect, reconnects on errors, counts acks.
pub struct TestClient {
    pub client: Client,
    pub rx: Receiver<Msg>,
    pub acked: Arc<AtomicU64>,
    pub connects: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl TestClient {
    pub fn connect(port: u16, id: &str, filters: &[&str], clean: bool) -> TestClient {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(clean);
        o.set_max_packet_size(1 << 24, 1 << 24);
        o.set_inflight(100);
        let (client, mut conn) = Client::new(o, 100_000);
        let (tx, rx): (Sender<Msg>, Receiver<Msg>) = crossbeam_channel::unbounded();
        let acked = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let handle = {
            let client = client.clone();
            let acked = Arc::clone(&acked);
            let connects = Arc::clone(&connects);
            std::thread::spawn(move || loop {
                match conn.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        connects.fetch_add(1, Ordering::SeqCst);
                        for f in &filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    Err(_) => return,
                }
            })
        };
        let c = TestClient {
            client,
            rx,
            acked,
            connects,
            handle: Some(handle),
        };
        let end = Instant::now() + Duration::from_secs(10);
        while c.connects.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < end, "test client {id} did not connect");
            std::thread::sleep(Duration::from_millis(10));
        }
        // let the SUBSCRIBE go through before anything is published
        std::thread::sleep(Duration::from_millis(150));
        c
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .expect("queue publish");
    }

    /// Wait until `n` of our QoS 1 publishes are acknowledged by the broker.
    pub fn wait_acked(&self, n: u64, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.acked.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < end,
                "only {} of {n} publishes acknowledged",
                self.acked.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Collect messages until `done` says so or `timeout` passes.
    pub fn collect_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let end = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(m) = self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                got.push(m);
            }
        }
        got
    }

    /// Wait for the first message matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Ok(m) = self.rx.recv_timeout(left) {
                if pred(&m) {
                    return Some(m);
                }
            }
        }
    }

    pub fn disconnect(mut self) {
        let _ = self.client.disconnect();
        if let Some(h) = self.handle.take() {
            let end = Instant::now() + Duration::from_secs(3);
            while !h.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Write the rules (and any extra files) next to a config and start the daemon in-process.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub daemon: Option<Daemon>,
}

impl TestDaemon {
    pub fn start(files: &[(&str, &str)], config: &str) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write file");
        }
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, config).expect("write config");
        let cfg = ServeConfig::parse(config, &path).unwrap_or_else(|e| panic!("{e}"));
        let daemon = Daemon::start(cfg).unwrap_or_else(|e| panic!("daemon starts: {e:#}"));
        TestDaemon {
            dir,
            daemon: Some(daemon),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn http(&self) -> SocketAddr {
        self.daemon
            .as_ref()
            .and_then(|d| d.http_addr())
            .expect("http configured")
    }

    pub fn metrics(&self) -> String {
        http_get(self.http(), "/metrics")
    }

    /// A metric's value (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics(), series)
    }

    /// Wait until a metric reaches at least `v`.
    pub fn wait_metric(&self, series: &str, v: f64, timeout: Duration) -> f64 {
        let end = Instant::now() + timeout;
        loop {
            let x = self.metric(series);
            if x >= v || Instant::now() >= end {
                return x;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn shutdown(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().expect("graceful shutdown");
        }
    }

    /// Shut down gracefully (if running) and start again on the same directory and
    /// configuration: with `[history]`, from the checkpoint the shutdown wrote.
    pub fn restart(&mut self) {
        self.shutdown();
        let path = self.path("serve.toml");
        let text = std::fs::read_to_string(&path).expect("read config");
        let cfg = ServeConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        self.daemon = Some(Daemon::start(cfg).unwrap_or_else(|e| panic!("daemon restarts: {e:#}")));
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.shutdown();
        }
    }
}

pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// GET over HTTP/1.0; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the daemon's http");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
        "{resp}"
    );
    resp.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

/// Now as RFC 3339 UTC, offset by `ms`.
pub fn stamp(offset_ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
