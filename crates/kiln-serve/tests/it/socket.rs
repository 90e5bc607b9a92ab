//! Over a real socket on loopback: concurrent clients, a graceful shutdown that loses none of
//! the requests in flight, and a client that stalls half way through its body.

use std::net::SocketAddr;
use std::time::Duration;

use kiln_serve::ServeConfig;
use kiln_serve::config::LimitsConfig;
use serde_json::json;

use crate::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// POSTs JSON and returns the status and body.
fn post_blocking(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, String), ureq::Error> {
    let mut response = agent()
        .post(&format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body).unwrap())?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

async fn start(
    state: Arc<kiln_serve::AppState>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        kiln_serve::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_over_loopback() {
    let (_tmp, dir) = mlp_artifact(51);
    let (addr, stop, server) = start(state(&dir, ServeConfig::default())).await;
    let digits = mnist_digits(12);
    let mut clients = Vec::new();
    for (pixels, _) in digits.clone() {
        clients.push(tokio::task::spawn_blocking(move || {
            post_blocking(addr, "/predict", &json!({ "instances": [pixels] })).unwrap()
        }));
    }
    for (client, (pixels, _)) in clients.into_iter().zip(&digits) {
        let (status, body) = client.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let p: Vec<f32> = v["predictions"][0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_close(&p, &direct(&dir, pixels));
    }
    // The v2 route over the socket, and the request id echoed back.
    let (status, body) = tokio::task::spawn_blocking(move || {
        post_blocking(
            addr,
            "/v2/models/mnist-mlp/infer",
            &json!({ "id": "abc", "inputs": [{ "name": "input", "shape": [1, 784], "datatype": "UINT8", "data": vec![0; 784] }] }),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":\"abc\""));
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let (_tmp, dir) = mlp_artifact(52);
    // The batching window holds the requests in the server while shutdown begins.
    let state = state(&dir, holding_requests());
    let (addr, stop, server) = start(Arc::clone(&state)).await;
    let mut clients = Vec::new();
    for (pixels, _) in mnist_digits(8) {
        clients.push(tokio::task::spawn_blocking(move || {
            post_blocking(addr, "/predict", &json!({ "instances": [pixels] }))
        }));
    }
    stop_with_requests_in_flight(&state, clients, stop, server).await;
    assert!(state.is_draining());
    // The listener is gone: new connections are refused.
    let refused = tokio::task::spawn_blocking(move || {
        post_blocking(addr, "/predict", &json!({ "instances": [vec![0; 784]] }))
    })
    .await
    .unwrap();
    assert!(refused.is_err(), "a request after shutdown was answered");
}

/// Sends `head` and then `partial_body` on a fresh connection to `addr`, stops sending, and
/// returns whatever the server answers until it closes the connection (or `patience` passes).
fn stall_after(addr: SocketAddr, head: &str, partial_body: &[u8], patience: Duration) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(patience)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(partial_body).unwrap();
    stream.flush().unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    // Read until the answer's JSON body has arrived; the connection stays open otherwise.
    while !answer.ends_with(b"}") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_over_the_socket() {
    let (_tmp, dir) = mlp_artifact(53);
    let config = ServeConfig {
        limits: LimitsConfig {
            request_timeout_ms: 300,
            ..LimitsConfig::default()
        },
        ..ServeConfig::default()
    };
    let (addr, stop, server) = start(state(&dir, config)).await;
    let head = "POST /predict HTTP/1.1\r\nhost: localhost\r\n\
                content-type: application/json\r\ncontent-length: 4000\r\n\r\n";
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        stall_after(
            addr,
            head,
            b"{\"instances\": [[0, 0, 0",
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    // Answered at the body deadline (the middleware's backstop would have been a 503), not
    // before it and not when the client gave up.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    stop_server(stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_does_not_hold_shutdown() {
    let (_tmp, dir) = mlp_artifact(54);
    let config = ServeConfig {
        drain_ms: 100,
        limits: LimitsConfig {
            request_timeout_ms: 300,
            ..LimitsConfig::default()
        },
        ..ServeConfig::default()
    };
    let (addr, stop, server) = start(state(&dir, config)).await;
    // Half a request head, then silence: hyper never sees a whole request to answer.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut stream, b"POST /predict HTTP/1.1\r\nhost: loc").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returned although a connection stayed half-open")
        .unwrap();
    // The grace period: drain (0.1 s) + one request deadline (0.3 s) + 1 s.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(5),
        "stopped after {waited:?}"
    );
    drop(stream);
}
