//! HTTPS over loopback with a self-signed certificate made by `openssl` (the tests print a
//! message and pass when it is missing): real clients (ureq, curl, a bare rustls client) get
//! answers, plain HTTP on the TLS port gets none, a stalled handshake blocks no one, peers
//! keep their addresses, and shutdown is graceful.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_serve::ServeConfig;
use kiln_serve::auth::{AuthConfig, AuthMode, hash_key};
use kiln_serve::config::{LimitsConfig, RateLimitConfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::*;

/// A certificate for `localhost` and 127.0.0.1 and its key, written into `dir` by `openssl`;
/// `None` (after saying so) where `openssl` is missing.
fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA (openssl's default), or rustls refuses it.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipping: openssl is not installed, so no test certificate can be made");
            None
        }
        Err(e) => panic!("running openssl: {e}"),
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some((cert, key))
        }
    }
}

async fn start_tls(
    state: Arc<kiln_serve::AppState>,
    cert: &Path,
    key: &Path,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let tls = kiln_serve::tls::server_config(cert, key).expect("certificate and key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        kiln_serve::tls::serve_tls(listener, tls, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, server)
}

/// A ureq agent that trusts `cert` (and nothing else).
fn https_agent(cert: &Path) -> ureq::Agent {
    let pem = std::fs::read(cert).unwrap();
    let root = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// POSTs `body` as JSON with `agent`; the status and body text.
fn post_with(
    agent: &ureq::Agent,
    url: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), ureq::Error> {
    let mut request = agent.post(url).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut response = request.send(body)?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// Sends `request` over TLS from a socket bound to `local` (to be a peer of our choosing),
/// trusting `cert`; the raw answer. A bare rustls client, so the socket can be bound first.
async fn raw_https_from(local: IpAddr, addr: SocketAddr, cert: &Path, request: String) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cert = cert.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, stream);
        tls.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        // The server closes after answering (`connection: close`); how it closes is not the
        // point here.
        let _ = tls.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

/// Sends plain-HTTP `bytes` to `addr` and returns whatever comes back before the server
/// closes the connection.
fn plain_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// curl, trusting `cert`, gets a prediction for the JSON in `body_file` from `url`; skipped
/// (saying so) where curl is not installed.
fn curl_predicts(cert: &Path, url: &str, body_file: &Path) {
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(cert)
        .args(["-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {KEY}")])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(url)
        .output();
    let out = match curl {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipping the curl client: curl is not installed");
            return;
        }
        Err(e) => panic!("running curl: {e}"),
        Ok(out) => out,
    };
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probabilities = answer["predictions"][0]["probabilities"].as_array();
    assert_eq!(probabilities.map(Vec::len), Some(10), "{answer}");
}

/// Plain HTTP on the TLS port at `addr`: the handshake fails; no HTTP answer, to a raw socket
/// or to a real HTTP client.
async fn assert_no_http_answer(addr: SocketAddr) {
    let raw = tokio::task::spawn_blocking(move || {
        plain_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {}",
        String::from_utf8_lossy(&raw)
    );
    // What comes back, if anything, is a TLS alert record (content type 21).
    assert!(raw.is_empty() || raw[0] == 21, "{raw:?}");
    let url = format!("http://{addr}/healthz");
    let plain = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        agent.get(&url).call().map(|r| r.status().as_u16())
    })
    .await
    .unwrap();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

const KEY: &str = "tls-test-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_real_clients_and_plain_http_gets_no_http_answer() {
    let (tmp, dir) = mlp_artifact(71);
    let Some((cert, key)) = self_signed(tmp.path()) else {
        return;
    };
    let keys = tmp.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nid = \"tls\"\nsha256 = \"{}\"\nroles = [\"predict\"]\n",
            hash_key(KEY.as_bytes())
        ),
    )
    .unwrap();
    let config = ServeConfig {
        auth: AuthConfig {
            mode: AuthMode::Keys,
            keys_file: keys,
        },
        limits: LimitsConfig {
            max_instances: 1,
            ..LimitsConfig::default()
        },
        ..ServeConfig::default()
    };
    // `serve_tls` reads the keys file itself.
    let (addr, stop, server) = start_tls(state(&dir, config), &cert, &key).await;
    let https = format!("https://{addr}");
    let (pixels, _) = mnist_digits(1).remove(0);
    let body = serde_json::to_vec(&json!({ "instances": [pixels.clone()] })).unwrap();
    let two =
        serde_json::to_vec(&json!({ "instances": [pixels.clone(), pixels.clone()] })).unwrap();

    // ureq, trusting the test certificate: a prediction, API keys and limits as over plain
    // HTTP.
    let agent = https_agent(&cert);
    let (url, sent) = (format!("{https}/predict"), body.clone());
    let answers = tokio::task::spawn_blocking(move || {
        let health = agent.get(&url.replace("/predict", "/healthz")).call();
        (
            health.map(|r| r.status().as_u16()),
            post_with(&agent, &url, Some(KEY), &sent).unwrap(),
            post_with(&agent, &url, None, &sent).unwrap(),
            post_with(&agent, &url, Some(KEY), &two).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(answers.0.unwrap(), 200);
    let (status, text) = answers.1;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let probabilities: Vec<f32> = answer["predictions"][0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect();
    assert_close(&probabilities, &direct(&dir, &pixels));
    assert_eq!(answers.2.0, 401, "{}", answers.2.1);
    assert_eq!(answers.3.0, 400, "{}", answers.3.1);
    assert!(
        answers.3.1.contains("too_many_instances"),
        "{}",
        answers.3.1
    );

    // A client that trusts nothing of ours refuses the server (the certificate is what makes
    // this HTTPS, not a plain socket that happens to answer).
    let url = format!("{https}/healthz");
    let untrusting = tokio::task::spawn_blocking(move || ureq::get(&url).call())
        .await
        .unwrap();
    assert!(untrusting.is_err(), "{untrusting:?}");

    // curl, where it is installed.
    let body_file = tmp.path().join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    curl_predicts(&cert, &format!("{https}/predict"), &body_file);

    assert_no_http_answer(addr).await;

    stop_server(stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_no_one_and_peers_keep_their_addresses() {
    let (tmp, dir) = mlp_artifact(72);
    let Some((cert, key)) = self_signed(tmp.path()) else {
        return;
    };
    // One request per peer address: the limiter tells peers apart only if the server knows
    // each connection's address (`ConnectInfo`) behind TLS.
    let config = ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.001,
            burst: 1,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    };
    let (addr, stop, server) = start_tls(state(&dir, config), &cert, &key).await;

    // Connections that never finish a handshake: silent ones, and one stopped half way
    // through its ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(std::net::TcpStream::connect(addr).unwrap());
    }
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(&[22, 3, 1, 0, 200, 1, 0, 0]).unwrap();
    stalled.push(half);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body = serde_json::to_string(&json!({ "instances": [vec![0; 784]] })).unwrap();
    let request = format!(
        "POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = std::time::Instant::now();
    let first = raw_https_from([127, 0, 0, 1].into(), addr, &cert, request.clone()).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}, behind the stalled handshakes",
        started.elapsed()
    );
    let again = raw_https_from([127, 0, 0, 1].into(), addr, &cert, request.clone()).await;
    assert!(again.starts_with("HTTP/1.1 429"), "{again}");
    // Another loopback address is another peer, with a bucket of its own.
    let probe = tokio::net::TcpSocket::new_v4().unwrap();
    if let Err(e) = probe.bind(SocketAddr::from(([127, 0, 0, 2], 0))) {
        println!("skipping the second peer: cannot bind 127.0.0.2: {e}");
    } else {
        let other = raw_https_from([127, 0, 0, 2].into(), addr, &cert, request).await;
        assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    }
    drop(stalled);

    stop_server(stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_shutdown_finishes_requests_in_flight_and_closes_the_port() {
    let (tmp, dir) = mlp_artifact(73);
    let Some((cert, key)) = self_signed(tmp.path()) else {
        return;
    };
    // The batching window holds the requests in the server while shutdown begins.
    let state = state(&dir, holding_requests());
    let (addr, stop, server) = start_tls(Arc::clone(&state), &cert, &key).await;
    let mut clients = Vec::new();
    for (pixels, _) in mnist_digits(4) {
        let agent = https_agent(&cert);
        let body = serde_json::to_vec(&json!({ "instances": [pixels] })).unwrap();
        let url = format!("https://{addr}/predict");
        clients.push(tokio::task::spawn_blocking(move || {
            post_with(&agent, &url, None, &body)
        }));
    }
    stop_with_requests_in_flight(&state, clients, stop, server).await;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the TLS port still accepts connections after shutdown"
    );
}
