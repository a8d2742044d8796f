//! A minimal HTTP/1.1 client over a raw TCP socket: enough for the webhook listener, `/metrics`
//! and the health probes, with no HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take before the test fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request over a fresh TCP connection; returns (status, body). A POST carries
/// `Content-Type: application/json` and its `Content-Length`. The body is written while the
/// response is read, so an early answer (413) is seen even if the server stops reading.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, headers, body).await;
    (status, body)
}

/// [`request`], with the response's headers (names lowercased).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        // The server may answer and close before it has read everything (413): not an error here.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
            let _ = wr.flush().await;
        }
        wr
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived (the server closed with our body unread).
            Err(e) if !raw.is_empty() => {
                eprintln!("read after response: {e}");
                break;
            }
            Err(e) => panic!("no HTTP response: {e}"),
        }
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").map_or((text.as_str(), ""), |(h, b)| (h, b));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// POST `body` to `path` with extra `headers`; (status, body).
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    tokio::time::timeout(TIMEOUT, request(addr, "POST", path, headers, body))
        .await
        .unwrap_or_else(|_| panic!("POST {path}: no answer within {TIMEOUT:?}"))
}

/// GET `path`; (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(TIMEOUT, request(addr, "GET", path, &[], b""))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within {TIMEOUT:?}"))
}
