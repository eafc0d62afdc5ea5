//! `POST /api/publish` as a backend calls it.

use super::within;

/// Publishes the JSON `body` to `/api/publish` of the gateway at `base`
/// (`http://host:port`), with `headers` added; returns the status. Fails the
/// test if no response comes within the deadline.
pub async fn post_publish(base: &str, body: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/publish"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    within(request.send())
        .await
        .expect("POST /api/publish")
        .status()
        .as_u16()
}
