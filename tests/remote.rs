//! The remote cache backends against real servers on 127.0.0.1: nginx (WebDAV PUT/GET),
//! s3rver (an S3 stand-in) and plain TCP sockets that misbehave, plus the `file://` backend.
//!
//! nginx and s3rver come from `scripts/install-test-servers.sh`; when one is missing the
//! test that needs it fails and says what to install.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orch::cache::remote::{self, RemoteStore};

const INSTALL: &str = "run `scripts/install-test-servers.sh` (as root) to install the test servers";
const S3_BUCKET: &str = "orch-test";

/// 1 MiB that is not all one byte.
fn mib() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A server process on loopback, stopped (SIGTERM, then SIGKILL) by its PID when dropped.
struct Server {
    name: &'static str,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// Waits (at most 15 s) until the port accepts connections; Err with the server's log
    /// when it exits first (e.g. its port was taken in the meantime).
    fn wait_ready(mut self) -> Result<Server, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(self);
            }
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before accepting connections:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not accept connections on port {} within 15 s:\n{}",
                    self.name,
                    self.port,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nginx");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    panic!("nginx is missing: {INSTALL} (or `apt-get install -y --no-install-recommends nginx`)");
}

/// Starts a server (up to 3 tries, each on a new port) and waits until it is ready.
fn start(spawn: fn() -> Server) -> Server {
    let mut last = String::new();
    for _ in 0..3 {
        match spawn().wait_ready() {
            Ok(server) => return server,
            Err(e) => last = e,
        }
    }
    panic!("{last}");
}

/// nginx serving `DIR/store` with WebDAV PUT on a free port.
fn start_nginx() -> Server {
    start(spawn_nginx)
}

fn spawn_nginx() -> Server {
    let binary = nginx_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("store")).unwrap();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let port = free_port();
    let log = d.join("error.log");
    let config = format!(
        "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
user root root;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {d}/store;
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
    }}
}}
",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), config).unwrap();
    let child = Command::new(&binary)
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    Server {
        name: "nginx",
        child: Some(child),
        port,
        dir,
        log,
    }
}

fn s3rver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ORCH_S3RVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ORCH_S3RVER={} is not a file: {INSTALL}",
            path.display()
        );
        return path;
    }
    let prefix = match std::env::var_os("ORCH_TEST_SERVERS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/orch-test-servers"),
    };
    let path = prefix.join("node_modules/.bin/s3rver");
    assert!(
        path.is_file(),
        "s3rver is missing at {}: {INSTALL} (or `npm install --prefix ~/.cache/orch-test-servers s3rver@3.7.1`; ORCH_S3RVER=PATH names another)",
        path.display()
    );
    path
}

/// s3rver on a free port, with the bucket `S3_BUCKET`.
fn start_s3rver() -> Server {
    start(spawn_s3rver)
}

fn spawn_s3rver() -> Server {
    let binary = s3rver_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("s3rver.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&binary)
        .arg("--directory")
        .arg(dir.path().join("data"))
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .args(["--configure-bucket", S3_BUCKET])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", binary.display()));
    Server {
        name: "s3rver",
        child: Some(child),
        port,
        dir,
        log,
    }
}

/// The environment of the S3 backend, passed explicitly (tests run in parallel).
fn s3_env(port: u16, key_id: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", key_id.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("ORCH_REMOTE_TIMEOUT", "10s".into()),
    ]
}

/// The checks every backend must pass.
fn exercise(store: &dyn RemoteStore) {
    let blob = mib();
    let digest = blake3::hash(&blob).to_hex().to_string();
    let cas = format!("cas/{digest}");
    assert_eq!(store.get(&cas, u64::MAX).unwrap(), None, "missing key");
    store.put(&cas, blob.clone()).unwrap();
    assert!(
        store.get(&cas, u64::MAX).unwrap().unwrap() == blob,
        "1 MiB round trip"
    );
    // Content-addressed: a second PUT of the same key is fine.
    store.put(&cas, blob.clone()).unwrap();
    let ac = "ac/0123456789abcdef";
    assert_eq!(store.get(ac, u64::MAX).unwrap(), None);
    store.put(ac, b"{\"manifest\":1}".to_vec()).unwrap();
    assert_eq!(
        store.get(ac, u64::MAX).unwrap().unwrap(),
        b"{\"manifest\":1}"
    );
    store.put("ac/empty", Vec::new()).unwrap();
    assert_eq!(store.get("ac/empty", u64::MAX).unwrap().unwrap(), b"");
    for bad in ["", "/abs", "cas/../x", "cas//x"] {
        let e = store.get(bad, u64::MAX).unwrap_err().to_string();
        assert!(e.contains("invalid key"), "{bad}: {e}");
        assert!(store.put(bad, vec![1]).is_err(), "{bad}");
    }
}

/// Several threads sharing one store (as the executor's workers do).
fn exercise_threads(store: &dyn RemoteStore) {
    std::thread::scope(|s| {
        for t in 0..6 {
            s.spawn(move || {
                for i in 0..8 {
                    let key = format!("cas/thread-{t}-{i}");
                    let bytes = format!("{t}:{i}").repeat(100 * (i + 1)).into_bytes();
                    store.put(&key, bytes.clone()).unwrap();
                    assert_eq!(store.get(&key, u64::MAX).unwrap().unwrap(), bytes);
                }
            });
        }
    });
}

#[test]
fn file_backend_round_trip_in_the_cas_ac_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared/cache");
    let url = format!("file://{}", root.display());
    let store = remote::open(&url).unwrap();
    assert_eq!(store.describe(), url);
    exercise(&*store);
    exercise_threads(&*store);
    let digest = blake3::hash(&mib()).to_hex().to_string();
    assert_eq!(
        std::fs::read(root.join("cas").join(&digest)).unwrap(),
        mib()
    );
    assert!(root.join("ac/0123456789abcdef").is_file());

    // Not a local absolute path.
    let e = remote::open("file://somehost/x").err().unwrap().to_string();
    assert!(e.contains("file:///DIR"), "{e}");
}

#[test]
fn nginx_webdav_round_trip() {
    let nginx = start_nginx();
    let url = format!("{}/orch/cache", nginx.url());
    let store = remote::open(&url).unwrap();
    assert_eq!(store.describe(), url);
    exercise(&*store);
    exercise_threads(&*store);

    // The layout under the URL's path, as nginx stored it.
    let root = nginx.dir.path().join("store/orch/cache");
    let digest = blake3::hash(&mib()).to_hex().to_string();
    assert_eq!(
        std::fs::read(root.join("cas").join(&digest)).unwrap(),
        mib()
    );
    assert_eq!(
        std::fs::read(root.join("ac/0123456789abcdef")).unwrap(),
        b"{\"manifest\":1}"
    );
    // What went over the wire: a miss is a 404, a new object a 201.
    let access = std::fs::read_to_string(nginx.dir.path().join("access.log")).unwrap();
    let first_get = format!("\"GET /orch/cache/cas/{digest} HTTP/1.1\" 404");
    let first_put = format!("\"PUT /orch/cache/cas/{digest} HTTP/1.1\" 201");
    assert!(access.contains(&first_get), "{access}");
    assert!(access.contains(&first_put), "{access}");

    // A trailing slash changes nothing.
    let slash = remote::open(&format!("{url}/")).unwrap();
    assert_eq!(
        slash
            .get(&format!("cas/{digest}"), u64::MAX)
            .unwrap()
            .unwrap(),
        mib()
    );
}

#[test]
fn nginx_stopped_midway_gives_prompt_errors() {
    let mut nginx = start_nginx();
    let env = [("ORCH_REMOTE_TIMEOUT", "5s")];
    let store = remote::open_with_env(&nginx.url(), env).unwrap();
    store.put("cas/before", b"x".to_vec()).unwrap();
    assert_eq!(store.get("cas/before", u64::MAX).unwrap().unwrap(), b"x");

    nginx.stop();
    let start = Instant::now();
    let e = store.get("cas/before", u64::MAX).unwrap_err().to_string();
    assert!(e.starts_with(&nginx.url()), "{e}");
    assert!(store.put("cas/after", b"y".to_vec()).is_err());
    assert!(store.get("ac/missing", u64::MAX).is_err());
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "three failed calls took {took:?}"
    );
}

#[test]
fn unresponsive_server_times_out() {
    // The kernel completes the handshake of a listening socket that never accepts: the
    // request is sent and no answer ever comes.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let store = remote::open_with_env(
        &format!("http://127.0.0.1:{port}"),
        [("ORCH_REMOTE_TIMEOUT", "700ms")],
    )
    .unwrap();
    let start = Instant::now();
    let e = store.get("cas/x", u64::MAX).unwrap_err().to_string();
    let took = start.elapsed();
    assert!(e.contains("timed out") || e.contains("timeout"), "{e}");
    assert!(took < Duration::from_secs(3), "get took {took:?}");
    let start = Instant::now();
    assert!(store.put("cas/x", vec![0; 4096]).is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(silent);
}

/// Accepts one connection, returns its request head, answers 404.
fn capture_one_request(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        String::from_utf8_lossy(&head).into_owned()
    })
}

#[test]
fn http_credentials_are_sent_but_never_shown() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = capture_one_request(listener);
    let url = format!("http://alice:pa%40ss@127.0.0.1:{port}/team?token=hush");
    let store = remote::open_with_env(&url, [("ORCH_REMOTE_TIMEOUT", "5s")]).unwrap();
    assert_eq!(store.describe(), format!("http://127.0.0.1:{port}/team"));
    assert_eq!(store.get("ac/k", u64::MAX).unwrap(), None);
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /team/ac/k HTTP/1.1\r\n"), "{head}");
    // base64("alice:pa@ss")
    let auth = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        })
        .map(|(_, v)| v.trim());
    assert_eq!(auth, Some("Basic YWxpY2U6cGFAc3M="), "{head}");

    // The server is gone now: the error names the store without credentials.
    let e = store.put("ac/k", vec![1]).unwrap_err().to_string();
    for secret in ["alice", "pa%40ss", "pa@ss", "hush"] {
        assert!(!e.contains(secret), "{e}");
    }
    // And so do errors about the URL itself.
    for bad in [
        "ftp://alice:pa%40ss@host/x",
        "s3://alice:pa%40ss@bucket/x",
        "http://alice:pa%40ss@[::1/x",
    ] {
        let e = remote::open(bad).err().unwrap().to_string();
        assert!(!e.contains("alice") && !e.contains("pa%40ss"), "{e}");
    }
}

#[test]
fn describe_and_configuration_errors() {
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalr"),
    ];
    let s3 = remote::open_with_env("s3://bucket/some/prefix", env).unwrap();
    assert_eq!(s3.describe(), "s3://bucket/some/prefix");
    assert!(!s3.describe().contains("AKIDEXAMPLE"));
    let https = remote::open("https://u:p@cache.example/orch").unwrap();
    assert_eq!(https.describe(), "https://cache.example/orch");

    let e = remote::open("gs://bucket/x").err().unwrap().to_string();
    assert!(e.contains("unsupported scheme"), "{e}");
    let e = remote::open("not a url").err().unwrap().to_string();
    assert!(e.contains("URL"), "{e}");
    let e = remote::open("s3:///prefix").err().unwrap().to_string();
    assert!(e.contains("no bucket"), "{e}");
    let e = remote::open_with_env("http://127.0.0.1:9/x", [("ORCH_REMOTE_TIMEOUT", "soon")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("ORCH_REMOTE_TIMEOUT"), "{e}");
}

#[test]
fn s3rver_round_trip() {
    let s3 = start_s3rver();
    let env = s3_env(s3.port, "S3RVER", "S3RVER");
    let store = remote::open_with_env(&format!("s3://{S3_BUCKET}/ci/cache"), env.clone()).unwrap();
    assert_eq!(store.describe(), format!("s3://{S3_BUCKET}/ci/cache"));
    exercise(&*store);
    exercise_threads(&*store);

    // Keys live under the URL's prefix.
    let bucket = remote::open_with_env(&format!("s3://{S3_BUCKET}"), env.clone()).unwrap();
    let digest = blake3::hash(&mib()).to_hex().to_string();
    assert_eq!(
        bucket
            .get(&format!("ci/cache/cas/{digest}"), u64::MAX)
            .unwrap()
            .unwrap(),
        mib()
    );
    assert_eq!(
        bucket.get(&format!("cas/{digest}"), u64::MAX).unwrap(),
        None
    );

    // Unknown credentials: an error, not a miss (s3rver checks the key id, not SigV4
    // signatures).
    let wrong_env = s3_env(s3.port, "NOPE", "nope-secret");
    let wrong = remote::open_with_env(&format!("s3://{S3_BUCKET}/ci/cache"), wrong_env).unwrap();
    let got = wrong.get(&format!("cas/{digest}"), u64::MAX);
    assert!(got.is_err(), "{:?}", got.map(|o| o.map(|b| b.len())));
    let e = wrong.put("cas/x", vec![1]).unwrap_err().to_string();
    assert!(e.contains("InvalidAccessKeyId") && !e.contains('\n'), "{e}");
    assert!(!e.contains("nope-secret"), "{e}");
    // A bucket that does not exist cannot be written to.
    let missing = remote::open_with_env("s3://no-such-bucket/x", env).unwrap();
    assert!(missing.put("cas/x", vec![1]).is_err());
}

#[test]
fn s3rver_stopped_midway_gives_prompt_errors() {
    let mut s3 = start_s3rver();
    let mut env = s3_env(s3.port, "S3RVER", "S3RVER");
    env.retain(|(k, _)| *k != "ORCH_REMOTE_TIMEOUT");
    env.push(("ORCH_REMOTE_TIMEOUT", "5s".into()));
    let store = remote::open_with_env(&format!("s3://{S3_BUCKET}"), env).unwrap();
    store.put("ac/a", b"a".to_vec()).unwrap();
    s3.stop();
    let start = Instant::now();
    assert!(store.get("ac/a", u64::MAX).is_err());
    assert!(store.put("ac/b", b"b".to_vec()).is_err());
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "two failed calls took {took:?}"
    );
}

#[test]
fn calls_from_inside_a_tokio_runtime_neither_panic_nor_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = remote::open(&format!("file://{}", dir.path().display())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        store.put("cas/a", b"a".to_vec()).unwrap();
        assert_eq!(store.get("cas/a", u64::MAX).unwrap().unwrap(), b"a");
        // Dropping the store (and its runtime) here must not panic either.
        drop(store);
    });
}

/// Runs the real `orch` in `dir` with extra environment variables.
fn orch(dir: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .output()
        .expect("run orch")
}

fn checkout(remote: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let orchfile = format!(
        "[cache]\nremote = \"{remote}\"\n\n[phase.gen]\nrun = \"tr a-z A-Z < {{inputs}} > {{output}}\"\ninputs = [\"in.txt\"]\noutputs = [\"out/up.txt\"]\n\n[phase.use]\nneeds = [\"gen\"]\nrun = \"cat {{needs.gen.outputs}} {{needs.gen.outputs}} > {{output}}\"\noutputs = [\"out/use.txt\"]\n"
    );
    std::fs::write(dir.path().join("Orchfile.toml"), orchfile).unwrap();
    std::fs::write(dir.path().join("in.txt"), "shared\n").unwrap();
    dir
}

fn events(dir: &std::path::Path, run: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!(".orch/runs/{run}/events.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_type<'a>(events: &'a [serde_json::Value], ty: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Two checkouts of one project share a remote: the second builds nothing.
fn shared_remote_builds_once(remote: &str, env: &[(&str, String)]) {
    let a = checkout(remote);
    let first = orch(a.path(), &["build", "--run-id", "a"], env);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        first.stderr.is_empty(),
        "no warning: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let b = checkout(remote);
    let second = orch(b.path(), &["build", "--run-id", "b"], env);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let ev = events(b.path(), "b");
    assert!(
        of_type(&ev, "instance_started").is_empty(),
        "the second checkout ran something: {ev:#?}"
    );
    let cached = of_type(&ev, "instance_cached");
    assert_eq!(cached.len(), 2);
    assert!(cached.iter().all(|e| e["source"] == "remote"));
    for f in ["out/up.txt", "out/use.txt"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap()
        );
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(b.path().join(".orch/runs/b/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["cache"]["remote_hits"], 2);
    assert!(summary["cache"]["bytes_down"].as_u64().unwrap() > 0);
    // The remote hit is kept locally: a third build with outputs deleted needs no remote.
    std::fs::remove_dir_all(b.path().join("out")).unwrap();
    let third = orch(b.path(), &["build", "--run-id", "c"], env);
    assert!(third.status.success());
    assert!(
        of_type(&events(b.path(), "c"), "instance_cached")
            .iter()
            .all(|e| e["source"] == "local")
    );
}

#[test]
fn two_checkouts_sharing_an_nginx_cache_build_once() {
    let nginx = start_nginx();
    shared_remote_builds_once(&format!("{}/orch/cache", nginx.url()), &[]);
}

#[test]
fn two_checkouts_sharing_an_s3_cache_build_once() {
    let s3 = start_s3rver();
    let env = s3_env(s3.port, "S3RVER", "S3RVER");
    shared_remote_builds_once(&format!("s3://{S3_BUCKET}/shared"), &env);
}

#[test]
fn the_remote_stopping_mid_build_does_not_fail_it() {
    let mut nginx = start_nginx();
    let dir = checkout(&format!("{}/orch/cache", nginx.url()));
    // `gen` waits until the test has stopped the server, so the uploads after it and the
    // lookup of `use` meet a dead remote.
    let orchfile = std::fs::read_to_string(dir.path().join("Orchfile.toml")).unwrap().replace(
        "run = \"tr a-z A-Z",
        "run = \"touch started; i=0; while [ ! -f go ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; tr a-z A-Z",
    );
    std::fs::write(dir.path().join("Orchfile.toml"), orchfile).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir.path())
        .args(["build", "--run-id", "m"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("started").exists() {
        assert!(Instant::now() < deadline, "gen did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    nginx.stop();
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("warning: the remote cache").count(),
        1,
        "one warning per run: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/use.txt")).unwrap(),
        "SHARED\nSHARED\n"
    );
}
