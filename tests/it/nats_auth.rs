//! Logging in to NATS against a real `nats-server`: a user and password (or a
//! token) in the URL, a credentials file (a user JWT under an operator and
//! account made in the test). Wrong credentials leave the node unready and
//! say so; no password, token or seed ever reaches a log line, at any level.

use crate::helpers::{Gateway, NatsServer, Trust, nodes_talk, refused, start_fails, user_creds};

/// A node with `env` added, logging everything (`RUST_LOG=trace`, the NATS
/// client's own lines included), so that a leak at any level is seen.
async fn chatty_node(id: &str, env: &[(&str, &str)], args: &[&str]) -> Gateway {
    let mut all_env = vec![("OTEL_TRACES_EXPORTER", "none"), ("RUST_LOG", "trace")];
    all_env.extend_from_slice(env);
    let mut all_args = vec!["--node-id", id];
    all_args.extend_from_slice(args);
    Gateway::start(&all_env, &all_args).await
}

/// Fails if any of `secrets` is in any of `nodes`' log lines.
fn never_logged(nodes: &[&Gateway], secrets: &[&str]) {
    for gw in nodes {
        let logs = serde_json::to_string(&gw.logs()).expect("logs");
        assert!(logs.len() > 1_000, "trace logging is on");
        for secret in secrets {
            assert!(!logs.contains(secret), "a secret is in the logs");
        }
    }
}

/// Checks `line` says the server refused the login.
fn says_authorization_violation(line: &serde_json::Value) {
    assert!(
        line["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("authorization violation")),
        "{line}"
    );
}

#[tokio::test]
async fn a_user_and_password_in_the_url_log_in_and_a_wrong_password_is_refused() {
    let password = "nats-password-that-must-not-leak";
    let Some(nats) = NatsServer::start_with(&["--user", "wsgate", "--pass", password]).await else {
        return;
    };
    let url = nats.url_with_login(&format!("wsgate:{password}"));
    // Once from the environment (as the docs advise for a password), once on
    // the command line.
    let a = chatty_node("pw-a", &[("WSGATE_NATS_URL", &url)], &[]).await;
    let b = chatty_node("pw-b", &[], &["--nats-url", &url]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    nodes_talk(&a, &b).await;

    let wrong = "wrong-password-that-must-not-leak";
    let bad_url = nats.url_with_login(&format!("wsgate:{wrong}"));
    let bad = chatty_node("pw-bad", &[("WSGATE_NATS_URL", &bad_url)], &[]).await;
    says_authorization_violation(&refused(&bad).await);
    let none = chatty_node("pw-none", &[], &["--nats-url", &nats.url()]).await;
    says_authorization_violation(&refused(&none).await);
    never_logged(&[&a, &b, &bad, &none], &[password, wrong]);
}

#[tokio::test]
async fn a_list_of_urls_is_a_cluster_and_shares_one_login() {
    let password = "cluster-password-that-must-not-leak";
    let Some(nats) = NatsServer::start_with(&["--user", "wsgate", "--pass", password]).await else {
        return;
    };
    // The first server hangs up on every connection: the node goes on to the
    // second, with the login the first URL carries. The port is held for the
    // whole test (a port merely left free could be taken by another test's
    // nats-server meanwhile).
    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_port = refusing.local_addr().unwrap().port();
    let refuser = tokio::spawn(async move {
        while let Ok((socket, _)) = refusing.accept().await {
            drop(socket);
        }
    });
    let url = format!(
        "nats://wsgate:{password}@127.0.0.1:{down_port},{}",
        nats.url()
    );
    let a = chatty_node("list-a", &[("WSGATE_NATS_URL", &url)], &[]).await;
    let b = chatty_node("list-b", &[("WSGATE_NATS_URL", &url)], &[]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    nodes_talk(&a, &b).await;
    never_logged(&[&a, &b], &[password]);
    refuser.abort();
}

#[tokio::test]
async fn a_token_in_the_url_logs_in() {
    let token = "nats-token-that-must-not-leak";
    let Some(nats) = NatsServer::start_with(&["--auth", token]).await else {
        return;
    };
    let url = nats.url_with_login(token);
    let a = chatty_node("token-a", &[("WSGATE_NATS_URL", &url)], &[]).await;
    let b = chatty_node("token-b", &[("WSGATE_NATS_URL", &url)], &[]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    nodes_talk(&a, &b).await;
    let bad_url = nats.url_with_login("not-the-token");
    let bad = chatty_node("token-bad", &[("WSGATE_NATS_URL", &bad_url)], &[]).await;
    says_authorization_violation(&refused(&bad).await);
    never_logged(&[&a, &b, &bad], &[token]);
}

#[tokio::test]
async fn a_credentials_file_logs_in_where_the_operator_trusts_its_account() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trust = Trust::new();
    let config = trust.server_config(dir.path());
    let config = config.display().to_string();
    let Some(nats) = NatsServer::start_with(&["-c", &config]).await else {
        return;
    };
    let (creds, seed) = trust.user_creds(dir.path(), "node");
    let creds = creds.display().to_string();
    let a = chatty_node(
        "creds-a",
        &[],
        &["--nats-url", &nats.url(), "--nats-creds", &creds],
    )
    .await;
    let b = chatty_node(
        "creds-b",
        &[("WSGATE_NATS_CREDS", &creds)],
        &["--nats-url", &nats.url()],
    )
    .await;
    a.wait_ready().await;
    b.wait_ready().await;
    nodes_talk(&a, &b).await;

    // A user of an account this server's operator never signed.
    let stranger = nkeys::KeyPair::new_account();
    let (other, other_seed) = user_creds(&stranger, dir.path(), "stranger");
    let other = other.display().to_string();
    let bad = chatty_node(
        "creds-bad",
        &[],
        &["--nats-url", &nats.url(), "--nats-creds", &other],
    )
    .await;
    says_authorization_violation(&refused(&bad).await);
    never_logged(&[&a, &b, &bad], &[&seed, &other_seed]);
}

#[tokio::test]
async fn unusable_logins_stop_the_node_naming_the_flag_and_quoting_no_secret() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.creds").display().to_string();
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "no JWT in here\n").unwrap();
    let garbage = garbage.display().to_string();
    let secret = "url-password-that-must-not-leak";
    let with_password = format!("nats://wsgate:{secret}@127.0.0.1:4222");
    let bad_port = format!("nats://wsgate:{secret}@127.0.0.1:99999");
    let url = "nats://127.0.0.1:4222";
    for (args, expected) in [
        (
            vec!["--nats-url", url, "--nats-creds", &missing],
            format!("--nats-creds {missing}: No such file"),
        ),
        (
            vec!["--nats-url", url, "--nats-creds", &garbage],
            format!("--nats-creds {garbage}: cannot parse user JWT"),
        ),
        (
            vec!["--nats-url", &with_password, "--nats-creds", &garbage],
            "--nats-creds and credentials in --nats-url are two logins".to_owned(),
        ),
        (
            vec!["--nats-url", &bad_port],
            "--nats-url: URL 1 is not a URL: invalid port number".to_owned(),
        ),
        (
            vec!["--nats-creds", &missing],
            "--nats-creds is for NATS: it needs --nats-url".to_owned(),
        ),
    ] {
        let stderr = start_fails(&args).await;
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(secret), "{args:?} printed the password");
    }
    // `--help` shows no variable's value (clap would show WSGATE_NATS_URL's).
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--help")
        .env("WSGATE_NATS_URL", &with_password)
        .output()
        .expect("wsgate --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--nats-creds"), "{help}");
    assert!(!help.contains(secret), "--help printed the password");
}
