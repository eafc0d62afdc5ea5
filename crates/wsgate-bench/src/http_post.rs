//! `POST /api/publish` for `--mix`, written by hand rather than with an HTTP
//! client crate: one request per connection with `Connection: close`, and
//! only the status line read back (httparse, already in the tree through
//! tungstenite), which is all the mix needs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One HTTP/1.1 POST on its own connection (`Connection: close`); the
/// response's status code.
pub async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<u16> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&response) {
        Ok(_) => parsed
            .code
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidData)),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::InvalidData)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn http_post_sends_a_complete_request_and_reads_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let mut len = 0;
            // Read until the whole body (its length is known here) arrived.
            while !request[..len].ends_with(br#"{"room":"r","data":1}"#) {
                len += tcp.read(&mut request[len..]).await.unwrap();
            }
            tcp.write_all(b"HTTP/1.1 415 Unsupported Media Type\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(request[..len].to_vec()).unwrap()
        });
        let status = post(
            addr,
            "gw:1",
            "/api/publish",
            "text/plain",
            r#"{"room":"r","data":1}"#,
        )
        .await
        .unwrap();
        assert_eq!(status, 415);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /api/publish HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Host: gw:1\r\n"), "{request}");
        assert!(
            request.contains("Content-Type: text/plain\r\n"),
            "{request}"
        );
        assert!(request.contains("Content-Length: 21\r\n"), "{request}");
    }
}
